"""AdaBN on the demo's BatchNorm segmenters: a label-free baseline (JSON on stdout).

    # a demo run with BatchNorm segmenters first (pipelines/config/demo.yaml: norm: batch)
    .venv/bin/python benchmarks/adabn.py --results results

AdaBN (Li et al., "Revisiting batch normalization for practical domain adaptation", 2016):
keep every weight of a BatchNorm network and re-estimate only its normalisation statistics
on the TARGET city's unlabelled images (here: the images of the city's pseudo-label chips,
the same images the method itself sees). No labels, no pseudo-labels, no training. Every
segmenter row of the demo table is scored before and after, at the demo's protocol
(windows of the training chip size, bilinear upsampling, the test tiles' labels used only
for scoring).

Needs a finished ``make demo`` with ``segmenter.norm: batch`` (``--results``; GroupNorm
checkpoints are refused: they have no statistics to re-estimate).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from landprior.landcover.chips import ChipSet
from landprior.landcover.enviroatlas import EnviroAtlas
from landprior.landcover.segmenter import SegmentationUNet, load_segmenter, predict_array
from landprior.landcover.weak_source import weak_reader

log = logging.getLogger("benchmarks.adabn")
REPO = Path(__file__).resolve().parents[1]


def adapt_statistics(model: SegmentationUNet, images: torch.Tensor, batch: int = 16) -> Any:
    """A copy of ``model`` whose BatchNorm statistics are the mean over ``images`` batches."""
    adapted = copy.deepcopy(model)
    layers = [m for m in adapted.modules() if isinstance(m, nn.BatchNorm2d)]
    if not layers:
        raise SystemExit("the segmenter has no BatchNorm layers: run the demo with norm: batch")
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the passes below
    adapted.train()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            adapted(images[i : i + batch])
    return adapted.eval()


def accuracy(model: Any, ds: EnviroAtlas, city: str, split: str, inputs: str,
             weak_layer: str, window: int, overlap: int, factor: int) -> float:
    read_weak = weak_reader(ds, weak_layer) if inputs == "image+weak" else None
    hits = total = 0
    for tile in ds.tiles(city, split):
        x = ds.read(tile, "naip").astype(np.float32) / 255.0
        if read_weak is not None:
            x = np.concatenate([x, read_weak(tile, None).astype(np.float32)])
        labels = ds.read_labels(tile)
        ok = labels != 255
        probs = predict_array(model, x, window=window, overlap=overlap, downsample=factor,
                              upsample="bilinear")
        hits += int((probs.argmax(0) == labels)[ok].sum())
        total += int(ok.sum())
    return round(100.0 * hits / total, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=REPO / "results",
                   help="results folder of a `norm: batch` demo run")
    p.add_argument("--config", type=Path, default=REPO / "pipelines" / "config" / "demo.yaml")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    if not (args.results / "segmenter").is_dir() or not (args.results / "pseudolabels").is_dir():
        raise SystemExit(f"{args.results}: no segmenter/ or pseudolabels/ (run `make demo` "
                         "with segmenter.norm: batch first)")
    cfg = yaml.safe_load(args.config.read_text())
    root = Path(cfg["dataset"]["root"])
    ds = EnviroAtlas(root if root.is_absolute() else args.results.parent / root)
    s, seg = cfg["segmenter"], args.results / "segmenter"
    out: dict[str, Any] = {"benchmark": "adabn", "results": str(args.results), "cities": {}}
    for city in cfg["target_cities"]:
        chips = ChipSet.load(args.results / "pseudolabels" / f"{city}.npz")
        image = torch.from_numpy(chips.image.astype(np.float32))
        weak = torch.from_numpy(chips.weak.astype(np.float32))
        rows = {
            "source supervised": ("source_image.pt", "image"),
            "source supervised + weak labels": ("source_image+weak.pt", "image+weak"),
            "ours fine-tuned": (f"finetuned_{city}.pt", "image"),
            "ours from scratch": (f"scratch_{city}.pt", "image"),
        }
        scores = {}
        for row, (name, inputs) in rows.items():
            model, _ = load_segmenter(seg / name)
            x = torch.cat([image, weak], 1) if inputs == "image+weak" else image
            kw = dict(ds=ds, city=city, split=cfg["test_split"], inputs=inputs,
                      weak_layer=cfg["weak_labels"].get("layer", "prior"), window=s["window"],
                      overlap=s["overlap"], factor=cfg["factor"])
            scores[row] = {"accuracy": accuracy(model, **kw),
                           "accuracy_adabn": accuracy(adapt_statistics(model, x), **kw)}
            log.info("%s %s: %s", city, row, scores[row])
        out["cities"][city] = scores
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
