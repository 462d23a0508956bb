"""Score candidate sensors of a synthetic target city with the demo's source model (JSON lines).

    # after `make demo` (the source model: results/segmenter/source_image.pt)
    .venv/bin/python benchmarks/synthetic_sensor.py --city synthdesert_az-2010 \
        --sensor "0.5,0.55,0.6,1.05/0,0,0,25" --sensor "0.95,0.95,0.97,0.9/12,10,12,6"

How the synthetic target cities' sensors were calibrated (README, "What this says"): each
target city's sensor (per-band gain and offset, ``CityStyle.gain`` / ``offset`` in
``landprior/landcover/synthetic.py``) is chosen so that the source-city segmenter scores
about what the paper's Pittsburgh model scores in the city it plays (Durham 74.2 %, Austin
71.9 %, Phoenix 6.7 %). For every ``--sensor GAIN/OFFSET`` this script re-renders the city's
test tiles exactly as ``landprior data synth`` does (same seed, same scene; only the sensor
changes), predicts them with the source model at the demo's protocol (windows of 32 model
pixels at x1/4, overlap 8, bilinear upsampling) and prints one JSON object per sensor:
pooled accuracy (``prior`` mapping), the share of pixels saturated at 255 per band, and the
predicted class mix. With the city's own sensor it reproduces the demo's
``source supervised`` accuracy exactly (desert 9.31 %, its first sensor 41.89 %, green
75.84 %). A few seconds per sensor on one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _sensor(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        gain, offset = (tuple(float(v) for v in part.split(",")) for part in text.split("/"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--sensor {text!r}: expected 'g1,g2,g3,g4/o1,o2,o3,o4' (four gains, four offsets)"
        ) from exc
    if len(gain) != 4 or len(offset) != 4:
        raise argparse.ArgumentTypeError(f"--sensor {text!r}: four gains and four offsets")
    return gain, offset


def main() -> None:
    from landprior.landcover import synthetic

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--city", required=True, help="a synthetic target city")
    p.add_argument("--sensor", type=_sensor, action="append", default=None,
                   help="GAIN/OFFSET, four comma-separated values each; repeatable "
                   "(default: the city's own sensor)")  # fmt: skip
    p.add_argument("--model", type=Path, default=REPO / "results/segmenter/source_image.pt")
    p.add_argument("--size", default="small", choices=synthetic.SIZE_NAMES,
                   help="synthetic dataset size (the demo's: small)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (the demo's: 0)")
    p.add_argument("--split", default="test")
    args = p.parse_args()

    from landprior.landcover.classes import CLASS_NAMES, NUM_CLASSES, remap
    from landprior.landcover.segmenter import load_segmenter, predict_array

    names = [c.name for c in synthetic.CITIES]
    if args.city not in names:
        sys.exit(f"--city {args.city!r}: expected one of {names}")
    if not args.model.is_file():
        sys.exit(f"{args.model} not found: run `make demo` first (or pass --model)")
    torch.set_num_threads(1)
    try:
        model, _ = load_segmenter(args.model)
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(str(exc))
    if model.config.in_channels != 4:
        sys.exit(f"{args.model} takes {model.config.in_channels} input bands; this scores an "
                 "image-only (4-band) source model such as results/segmenter/source_image.pt")
    style = synthetic.CITIES[names.index(args.city)]
    tiles = [t for t in synthetic.plan_tiles(args.size)
             if t.city.name == args.city and t.split == args.split]  # fmt: skip
    if not tiles:
        sys.exit(f"--split {args.split!r}: {args.city} has no such tiles at --size {args.size}")
    for gain, offset in args.sensor or [(style.gain, style.offset)]:
        candidate = dataclasses.replace(style, gain=gain, offset=offset)
        hits = total = 0
        predicted = np.zeros(NUM_CLASSES, np.int64)
        saturated = []
        for tile in tiles:
            # the generator of write_synthetic_dataset: (seed, city index, tile index)
            rng = np.random.default_rng([args.seed, names.index(args.city), tile.index])
            arrays = synthetic.generate_tile(candidate, tile.size, rng)
            truth = remap(arrays.labels, "prior")
            probs = predict_array(model, arrays.naip.astype(np.float32) / 255, window=32,
                                  overlap=8, downsample=4, upsample="bilinear")  # fmt: skip
            pred = probs.argmax(0)
            keep = truth != 255
            hits += int((pred[keep] == truth[keep]).sum())
            total += int(keep.sum())
            predicted += np.bincount(pred[keep], minlength=NUM_CLASSES)
            saturated.append((arrays.naip == 255).mean(axis=(1, 2)))
        mix = np.round(100 * predicted / total, 1).tolist()
        print(json.dumps({
            "city": args.city, "gain": list(gain), "offset": list(offset),
            "source_model_accuracy": round(100 * hits / total, 2),
            "saturated_percent_per_band": np.round(100 * np.mean(saturated, 0), 2).tolist(),
            "predicted_percent": dict(zip(CLASS_NAMES, mix, strict=True)),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
