# Stage 2: the label DDPM prior, trained on the source city's one-hot label patches,
# or (config prior.checkpoint) a prior trained before, checked and reused.


if PRIOR_CHECKPOINT:

    rule install_prior:
        """Reuse an already trained prior (config prior.checkpoint) instead of training."""
        input:
            marker=dataset_ready,
            checkpoint=PRIOR_CHECKPOINT,
        output:
            checkpoint=f"{RESULTS}/prior/checkpoint.pt",
            samples=report(
                f"{RESULTS}/prior/samples.png",
                caption="../report/prior_samples.rst",
                category="Label prior",
            ),
        params:
            device=DEVICE,
            data=lambda w, input: str(Path(input.marker).parent),
            out=lambda w, output: str(Path(output.checkpoint).parent),
            source=SOURCE,
            size=config["chip_size"],
            factor=config["factor"],
            mapping=config["mapping"],
            seed=config["prior"]["seed"],
        conda:
            "../envs/landprior.yaml"
        log:
            f"{RESULTS}/logs/install_prior.log",
        benchmark:
            f"{RESULTS}/benchmarks/install_prior.tsv"
        threads: THREADS
        resources:
            mem_mb=2000,
        shell:
            "landprior landcover install-prior --checkpoint {input.checkpoint}"
            " --data {params.data} --city {params.source} --out {params.out}"
            " --patch-size {params.size} --factor {params.factor} --mapping {params.mapping}"
            " --seed {params.seed} --samples-png {output.samples} --threads {threads}"
            " --device {params.device} > {log} 2>&1"

else:

    rule train_prior:
        """Train the prior in RESULTS/prior/run (not an output: Snakemake deletes a job's
        outputs before rerunning it, so a killed or extended training run would otherwise
        start over) and install its EMA weights as the prior."""
        input:
            marker=dataset_ready,
        output:
            checkpoint=f"{RESULTS}/prior/checkpoint.pt",
            samples=report(
                f"{RESULTS}/prior/samples.png",
                caption="../report/prior_samples.rst",
                category="Label prior",
            ),
        params:
            device=DEVICE,
            data=lambda w, input: str(Path(input.marker).parent),
            out=lambda w, output: str(Path(output.checkpoint).parent),
            run=lambda w, output: str(Path(output.checkpoint).parent / "run"),
            source=SOURCE,
            p=config["prior"],
            size=config["chip_size"],
            factor=config["factor"],
            mapping=config["mapping"],
        conda:
            "../envs/landprior.yaml"
        log:
            f"{RESULTS}/logs/train_prior.log",
        benchmark:
            f"{RESULTS}/benchmarks/train_prior.tsv"
        threads: THREADS
        resources:
            mem_mb=4000,
        shell:
            # A killed run resumes from its last checkpoint (checkpoints are atomic); more
            # prior.steps extend it; other label patches (city, patches, size, factor,
            # mapping, seed) start a new run over it.
            "(landprior landcover train-prior --data {params.data} --city {params.source}"
            " --out {params.run} --on-data-change restart"
            " --patches {params.p[patches]} --patch-size {params.size} --factor {params.factor}"
            " --preset {params.p[preset]} --steps {params.p[steps]}"
            " --batch-size {params.p[batch_size]} --lr {params.p[lr]}"
            " --ema-rate {params.p[ema_rate]} --mapping {params.mapping} --seed {params.p[seed]}"
            " --threads {threads} --device {params.device} --no-progress"
            " && landprior landcover install-prior --checkpoint {params.run}"
            " --data {params.data} --city {params.source} --out {params.out}"
            " --patch-size {params.size} --factor {params.factor} --mapping {params.mapping}"
            " --seed {params.p[seed]} --samples-png {output.samples} --threads {threads}"
            " --device {params.device}) > {log} 2>&1"
