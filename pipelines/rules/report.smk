# Stage 6: report.md with the Table-1-shaped table, pseudo-label quality and figures.



rule report:
    input:
        unpack(report_inputs),
    output:
        md=f"{RESULTS}/report.md",
        figures=report(
            directory(f"{RESULTS}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    params:
        methods=list(METHODS.values()),
        targets=TARGETS,
        split=TEST_SPLIT,
        mapping=config["mapping"],
        chip_size=config["chip_size"],
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/report.py"
