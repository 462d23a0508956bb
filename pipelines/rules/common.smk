# Shared settings and helpers for every stage.
import json
from pathlib import Path

RESULTS = config["results"]
DATA = config["dataset"]["root"]
SOURCE = config["source_city"]
TARGETS = list(config["target_cities"])
TEST_SPLIT = config["test_split"]
THREADS = config["threads_per_job"]
DEVICE = config.get("device", "auto")  # auto: CUDA when present, else CPU
REPLAY_FRACTION = float(config["segmenter"].get("replay_fraction", 0.0))
# A trained label prior to reuse instead of training one (None: train it). A relative
# path is looked up in the working directory, then next to the Snakefile (the shipped
# models/ folder), so the demo finds its prior whatever directory it runs from.
PRIOR_CHECKPOINT = config["prior"].get("checkpoint")
if PRIOR_CHECKPOINT:
    _beside_snakefile = Path(workflow.main_snakefile).parent / PRIOR_CHECKPOINT
    if not Path(PRIOR_CHECKPOINT).exists() and _beside_snakefile.exists():
        PRIOR_CHECKPOINT = str(_beside_snakefile)
    if not Path(PRIOR_CHECKPOINT).exists():
        raise ValueError(
            f"prior.checkpoint is {config['prior']['checkpoint']!r} but no such file exists "
            "(set it to a trained label prior, or to null to train one)"
        )

# Method -> (display name in the tables)
METHODS = {
    "source_supervised": "source supervised",
    "source_supervised_weak": "source supervised + weak labels",
    "weak_labels": "weak-label argmax",
    "ours_scratch": "ours from scratch",
    "ours_finetuned": "ours fine-tuned",
}
# Methods that predict maps with a segmenter checkpoint.
SEGMENTER_OF = {
    "source_supervised": f"{RESULTS}/segmenter/source_image.pt",
    "source_supervised_weak": f"{RESULTS}/segmenter/source_image+weak.pt",
    "ours_scratch": f"{RESULTS}/segmenter/scratch_{{city}}.pt",
    "ours_finetuned": f"{RESULTS}/segmenter/finetuned_{{city}}.pt",
}

if config["dataset"]["kind"] == "enviroatlas":
    _expected_root = str(Path(config["dataset"]["download_root"]) / "enviroatlas_lotp")
    if str(Path(DATA)) != _expected_root:
        raise ValueError(
            f"dataset.root is {DATA!r} but the archive extracts to {_expected_root!r} "
            "(download_root/enviroatlas_lotp); make them agree in the configuration"
        )

wildcard_constraints:
    city="[A-Za-z0-9_.-]+",
    tile="[A-Za-z0-9_.-]+",
    method="|".join(METHODS),


def weak_spec():
    """The --weak-layer argument: a dataset layer or the recomputed weak-label folder."""
    if config["weak_labels"]["mode"] == "compute":
        return f"{RESULTS}/weak_labels"
    return config["weak_labels"]["layer"]


def weak_inputs(wildcards=None):
    """Recomputed weak labels are a rule output; dataset layers come with the data."""
    if config["weak_labels"]["mode"] == "compute":
        return [f"{RESULTS}/weak_labels/done.json"]
    return []


def dataset_ready(wildcards=None):
    return checkpoints.dataset.get().output.marker


def tiles_of(city, split=TEST_SPLIT):
    """Tile ids of a city, read from the dataset once it exists (checkpoint)."""
    from landprior.landcover.enviroatlas import EnviroAtlas

    checkpoints.dataset.get()
    return [t.tile_id for t in EnviroAtlas(DATA).tiles(city, split)]


def final_maps(wildcards):
    return [
        f"{RESULTS}/{city}/{tile}_landcover.tif" for city in TARGETS for tile in tiles_of(city)
    ]

def segmenter_for(wildcards):
    return SEGMENTER_OF[wildcards.method].format(city=wildcards.city)

def city_predictions(wildcards):
    return [
        f"{RESULTS}/predictions/{wildcards.method}/{wildcards.city}/{t}_landcover.tif"
        for t in tiles_of(wildcards.city)
    ]

def report_inputs(wildcards):
    maps = {
        m: [f"{RESULTS}/predictions/{m}/{c}/{t}_landcover.tif" for c in TARGETS for t in tiles_of(c)]
        for m in ("source_supervised", "ours_finetuned")
    }
    return {
        "metrics": f"{RESULTS}/metrics.csv",
        "pseudo": expand(f"{RESULTS}/pseudolabels/{{city}}.npz", city=TARGETS),
        "summaries": expand(f"{RESULTS}/pseudolabels/{{city}}.json", city=TARGETS),
        "samples": f"{RESULTS}/prior/samples.png",
        "maps": maps["source_supervised"] + maps["ours_finetuned"],
        "marker": dataset_ready(wildcards),
    }
