# Stage 3: pseudo-labels for each target city: Algorithm 1 under MI - KL (paper eq. 15).


rule pseudolabel:
    input:
        prior=f"{RESULTS}/prior/checkpoint.pt",
        chips=f"{RESULTS}/clusters/{{city}}.npz",
    output:
        chips=f"{RESULTS}/pseudolabels/{{city}}.npz",
        summary=f"{RESULTS}/pseudolabels/{{city}}.json",
    params:
        device=DEVICE,
        p=config["pseudolabel"],
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/pseudolabel/{{city}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pseudolabel/{{city}}.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
    shell:
        "landprior landcover pseudolabel --prior {input.prior} --chips {input.chips}"
        " --out {output.chips} --summary {output.summary} --steps {params.p[steps]}"
        " --lr {params.p[lr]} --window-radius {params.p[window_radius]}"
        " --batch-size {params.p[batch_size]} --seed {params.p[seed]}"
        " --mi-weight {params.p[mi_weight]} --kl-weight {params.p[kl_weight]}"
        " --kl-direction {params.p[kl_direction]} --threads {threads}"
        " --device {params.device} --no-progress > {log} 2>&1"


rule pseudolabel_geotiffs:
    """Each pseudo-labelled chip as a GeoTIFF (pseudo-label, weak-label argmax, truth if
    any) plus chips.gpkg, the chips' footprints with their accuracy: open in QGIS."""
    input:
        f"{RESULTS}/pseudolabels/{{city}}.npz",
    output:
        directory(f"{RESULTS}/pseudolabels/{{city}}_chips"),
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/pseudolabel_geotiffs/{{city}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pseudolabel_geotiffs/{{city}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "landprior landcover export-chips --chips {input} --out-dir {output} --overwrite"
        " > {log} 2>&1"
