# Stage 4: segmenters p(labels | image): source-supervised baselines, and ours (pseudo-labels).
# Each run keeps its resumable state in OUTPUT.resume (not an output: Snakemake would delete
# it before a rerun), so a killed job continues where it stopped; a state from another run
# (other chips, settings or starting weights) is replaced (--on-change restart).


rule segmenter_source:
    """Pretrain on the source city's labels (imagery, or imagery + weak labels)."""
    input:
        f"{RESULTS}/chips/{SOURCE}_{config['train_split']}.npz",
    output:
        f"{RESULTS}/segmenter/source_{{inputs}}.pt",
    wildcard_constraints:
        inputs="image|image\\+weak",
    params:
        device=DEVICE,
        s=config["segmenter"],
        seed=config["seed"],
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/segmenter/source_{{inputs}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/segmenter/source_{{inputs}}.tsv"
    threads: THREADS
    resources:
        mem_mb=3000,
    shell:
        "landprior -v landcover train-segmenter --chips {input} --target truth"
        " --inputs {wildcards.inputs} --out {output} --steps {params.s[pretrain_steps]}"
        " --batch-size {params.s[batch_size]} --lr {params.s[lr]}"
        " --base-channels {params.s[base_channels]} --depth {params.s[depth]}"
        " --norm {params.s[norm]} --seed {params.seed} --threads {threads} --device {params.device}"
        " --resume --on-change restart --no-progress > {log} 2>&1"


rule segmenter_finetune:
    """Ours fine-tuned: the source model fine-tuned on the target's pseudo-labels
    (optionally with the source city's labelled chips replayed in every batch)."""
    input:
        init=f"{RESULTS}/segmenter/source_image.pt",
        chips=f"{RESULTS}/pseudolabels/{{city}}.npz",
        source=f"{RESULTS}/chips/{SOURCE}_{config['train_split']}.npz",
    output:
        f"{RESULTS}/segmenter/finetuned_{{city}}.pt",
    params:
        device=DEVICE,
        s=config["segmenter"],
        seed=config["seed"],
        replay=lambda w, input: (
            f"--replay-chips {input.source} --replay-fraction {REPLAY_FRACTION}"
            if REPLAY_FRACTION > 0
            else ""
        ),
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/segmenter/finetuned_{{city}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/segmenter/finetuned_{{city}}.tsv"
    threads: THREADS
    resources:
        mem_mb=3000,
    shell:
        "landprior -v landcover train-segmenter --chips {input.chips} --target pseudo --inputs image"
        " --init {input.init} --out {output} --steps {params.s[finetune_steps]} {params.replay}"
        " --batch-size {params.s[batch_size]} --lr {params.s[finetune_lr]}"
        " --seed {params.seed} --threads {threads} --device {params.device}"
        " --resume --on-change restart --no-progress > {log} 2>&1"


rule segmenter_scratch:
    """Ours from scratch: trained on the target's pseudo-labels only."""
    input:
        f"{RESULTS}/pseudolabels/{{city}}.npz",
    output:
        f"{RESULTS}/segmenter/scratch_{{city}}.pt",
    params:
        device=DEVICE,
        s=config["segmenter"],
        seed=config["seed"],
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/segmenter/scratch_{{city}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/segmenter/scratch_{{city}}.tsv"
    threads: THREADS
    resources:
        mem_mb=3000,
    shell:
        "landprior -v landcover train-segmenter --chips {input} --target pseudo --inputs image"
        " --out {output} --steps {params.s[scratch_steps]} --batch-size {params.s[batch_size]}"
        " --lr {params.s[lr]} --base-channels {params.s[base_channels]}"
        " --depth {params.s[depth]} --norm {params.s[norm]} --seed {params.seed}"
        " --threads {threads} --device {params.device}"
        " --resume --on-change restart --no-progress > {log} 2>&1"
