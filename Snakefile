# landprior: land-cover pseudo-labelling with a diffusion prior (Graikos et al. 2022, sec. 4).
#   snakemake --cores all                                   # demo on the synthetic cities
#   snakemake --cores all --configfile pipelines/config/enviroatlas.yaml
# Stages: data -> chips -> colour clustering -> train label prior -> pseudo-label targets
#   -> segmenters -> predict whole tiles -> evaluate -> report. Logic lives in `landprior`.
from snakemake.utils import min_version, validate

min_version("8.0")


# The demo config only when no --configfile is given: a user's config is NOT layered on the
# demo's (a key it leaves out takes the schema's documented default, not a demo value).
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/pipelines/config/demo.yaml"


validate(config, "pipelines/schemas/config.schema.yaml")


include: "pipelines/rules/common.smk"


# Downloads need the internet and copies are trivial: never send them to compute nodes.
localrules:
    all,
    dataset,
    final_map,
    metrics_table,


include: "pipelines/rules/data.smk"
include: "pipelines/rules/prior.smk"
include: "pipelines/rules/pseudolabel.smk"
include: "pipelines/rules/segmenter.smk"
include: "pipelines/rules/evaluate.smk"
include: "pipelines/rules/report.smk"


rule all:
    input:
        final_maps,
        expand(f"{RESULTS}/pseudolabels/{{city}}_chips", city=TARGETS),
        f"{RESULTS}/metrics.csv",
        f"{RESULTS}/report.md",
    default_target: True
