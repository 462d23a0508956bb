# Stage 5: whole-tile prediction (per tile, so the scheduler parallelises it), evaluation.



rule predict:
    input:
        weak_inputs,
        marker=dataset_ready,
        model=segmenter_for,
    output:
        f"{RESULTS}/predictions/{{method}}/{{city}}/{{tile}}_landcover.tif",
    wildcard_constraints:
        method="|".join(SEGMENTER_OF),
    params:
        device=DEVICE,
        data=lambda w, input: str(Path(input.marker).parent),
        out_dir=lambda w, output: str(Path(output[0]).parent),
        s=config["segmenter"],
        split=TEST_SPLIT,
        weak=weak_spec(),
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/predict/{{method}}/{{city}}/{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{method}}/{{city}}/{{tile}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "landprior landcover predict --data {params.data} --city {wildcards.city} --split {params.split}"
        " --tile {wildcards.tile} --model {input.model} --out-dir {params.out_dir}"
        " --window {params.s[window]} --overlap {params.s[overlap]} --weak-layer {params.weak}"
        " --upsample {params.s[upsample]}"
        " --threads {threads} --device {params.device} > {log} 2>&1"


rule final_map:
    """The product: ours fine-tuned, as results/<city>/<tile>_landcover.tif (COG)."""
    input:
        f"{RESULTS}/predictions/ours_finetuned/{{city}}/{{tile}}_landcover.tif",
    output:
        tif=f"{RESULTS}/{{city}}/{{tile}}_landcover.tif",
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/final_map/{{city}}/{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/final_map/{{city}}/{{tile}}.tsv"
    threads: 1
    resources:
        mem_mb=500,
    shell:
        # Copy the class names sidecar first, the map last (cp -p keeps it a valid COG).
        "(cp -p {input}.aux.xml {output.tif}.aux.xml && cp -p {input} {output.tif}) > {log} 2>&1"



rule evaluate_maps:
    input:
        maps=city_predictions,
        marker=dataset_ready,
    output:
        f"{RESULTS}/metrics/{{method}}/{{city}}.json",
    wildcard_constraints:
        method="|".join(SEGMENTER_OF),
    params:
        name=lambda w: METHODS[w.method],
        data=lambda w, input: str(Path(input.marker).parent),
        pred_dir=lambda w, input: str(Path(input.maps[0]).parent),
        split=TEST_SPLIT,
        mapping=config["mapping"],
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/evaluate/{{method}}/{{city}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{method}}/{{city}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "landprior landcover evaluate --data {params.data} --city {wildcards.city}"
        " --split {params.split}"
        " --method '{params.name}' --predictions {params.pred_dir} --mapping {params.mapping}"
        " --out {output} > {log} 2>&1"


rule evaluate_weak_labels:
    input:
        weak_inputs,
        marker=dataset_ready,
    output:
        f"{RESULTS}/metrics/weak_labels/{{city}}.json",
    params:
        data=lambda w, input: str(Path(input.marker).parent),
        split=TEST_SPLIT,
        name=METHODS["weak_labels"],
        weak=weak_spec(),
        mapping=config["mapping"],
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/evaluate/weak_labels/{{city}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/weak_labels/{{city}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "landprior landcover evaluate --data {params.data} --city {wildcards.city}"
        " --split {params.split}"
        " --method '{params.name}' --weak-labels --weak-layer {params.weak}"
        " --mapping {params.mapping} --out {output} > {log} 2>&1"


rule metrics_table:
    """All methods x target cities in one CSV (the Table-1-shaped results)."""
    input:
        expand(f"{RESULTS}/metrics/{{method}}/{{city}}.json", method=METHODS, city=TARGETS),
    output:
        f"{RESULTS}/metrics.csv",
    conda:
        "../envs/landprior.yaml"
    log:
        f"{RESULTS}/logs/metrics_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/metrics_table.tsv"
    threads: 1
    resources:
        mem_mb=500,
    script:
        "../scripts/metrics_table.py"
