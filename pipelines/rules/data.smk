# Stage 1: the dataset (synthetic cities, or the real EnviroAtlas archive) and weak labels.
import shlex

DASK_SCHEDULER = (config.get("dask") or {}).get("scheduler_address")


if config["dataset"]["kind"] == "synthetic":

    checkpoint dataset:
        output:
            marker=f"{DATA}/spatial_index.geojson",
        params:
            root=lambda w, output: str(Path(output.marker).parent),
            size=config["dataset"]["synthetic_size"],
            seed=config["dataset"]["seed"],
        conda:
            "../envs/landprior.yaml"
        log:
            f"{RESULTS}/logs/dataset.log",
        benchmark:
            f"{RESULTS}/benchmarks/dataset.tsv"
        threads: 1
        resources:
            mem_mb=2000,
        shell:
            "landprior data synth --out {params.root} --size {params.size} --seed {params.seed}"
            " --overwrite > {log} 2>&1"

else:

    checkpoint dataset:
        output:
            marker=f"{DATA}/spatial_index.geojson",
        params:
            root=config["dataset"]["download_root"],
        conda:
            "../envs/landprior.yaml"
        log:
            f"{RESULTS}/logs/dataset.log",
        benchmark:
            f"{RESULTS}/benchmarks/dataset.tsv"
        threads: 1
        resources:
            mem_mb=4000,
        shell:
            # Verifies the md5 against the known versions; offline it says what to fetch.
            "landprior data download --root {params.root} > {log} 2>&1"


rule weak_labels:
    """Weak labels recomputed with the SOURCE city's co-occurrence (no target-label leak)."""
    input:
        marker=dataset_ready,
    output:
        done=f"{RESULTS}/weak_labels/done.json",
        cooccurrence=f"{RESULTS}/weak_labels/cooccurrence.json",
    params:
        data=lambda w, input: str(Path(input.marker).parent),
        out=lambda w, output: str(Path(output.done).parent),
        source=SOURCE,
        train_split=config["train_split"],
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/weak_labels.log",
    benchmark:
        f"{RESULTS}/benchmarks/weak_labels.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "(landprior data weak-labels --root {params.data} --source-city {params.source}"
        " --source-split {params.train_split} --save-cooccurrence {output.cooccurrence}"
        " --out {params.out}"
        # config dask.scheduler_address set: the tiles' chunks are computed on that dask
        # cluster. Unset, the command is unchanged; toggling it on an existing results
        # folder is a code change (use --rerun-triggers mtime params input to keep results).
        + (f" --scheduler {shlex.quote(DASK_SCHEDULER)}" if DASK_SCHEDULER else "")
        + " && echo '{{\"done\": true}}' > {output.done}) > {log} 2>&1"


rule chips:
    """Random georeferenced chips of a city: imagery, weak labels, truth if present."""
    input:
        weak_inputs,
        marker=dataset_ready,
    output:
        f"{RESULTS}/chips/{{city}}_{{split}}.npz",
    params:
        data=lambda w, input: str(Path(input.marker).parent),
        n=lambda w: config["segmenter"]["source_chips"]
        if w.city == SOURCE
        else config["pseudolabel"]["chips"],
        size=config["chip_size"],
        factor=config["factor"],
        weak=weak_spec(),
        mapping=config["mapping"],
        seed=config["seed"],
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/chips/{{city}}_{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/chips/{{city}}_{{split}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "landprior landcover chips --data {params.data} --city {wildcards.city} --split {wildcards.split}"
        " --n {params.n} --size {params.size} --factor {params.factor}"
        " --weak-layer {params.weak} --mapping {params.mapping} --seed {params.seed}"
        " --out {output} > {log} 2>&1"


rule cluster:
    """Local colour clustering (local Gaussian-mixture EM) of every chip."""
    input:
        f"{RESULTS}/chips/{{city}}_{TEST_SPLIT}.npz",
    output:
        f"{RESULTS}/clusters/{{city}}.npz",
    params:
        c=config["clustering"],
        seed=config["seed"],
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/cluster/{{city}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cluster/{{city}}.tsv"
    threads: THREADS
    resources:
        mem_mb=2000,
    shell:
        "landprior landcover cluster --chips {input} --out {output} --k {params.c[k]}"
        " --radius {params.c[radius]} --iterations {params.c[iterations]}"
        " --warmup-iterations {params.c[warmup_iterations]}"
        " --warmup-radius {params.c[warmup_radius]} --seed {params.seed}"
        " --threads {threads} > {log} 2>&1"
