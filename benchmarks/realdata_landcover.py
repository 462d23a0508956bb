"""Pseudo-labels on REAL Chesapeake data next to the weak-label argmax (JSON on stdout).

    .venv/bin/python benchmarks/realdata_landcover.py            # ~13 min on 1 thread
    .venv/bin/python benchmarks/realdata_landcover.py --quick    # a smoke run (~1 min)

The issue's real-data check (paper section 4 on data nobody here made), from
../shared/data/chesapeake (skipped with a message when it is absent):

* labels: the 8 train patches (256 x 256 at 1 m, one NAIP tile in West Virginia),
  channel 8 mapped with ``classes.CHESAPEAKE_MAPPING`` (15 = no data -> ignored);
* prior: the ``landcover-cpu`` DDPM on 32 x 32 one-hot label patches (random 128 m crops
  mode-downsampled x1/4, flips), 1,000 steps at lr 1e-3. Two-fold cross-fitting: the
  patches are split into two folds and each fold is pseudo-labelled by a prior trained on
  the OTHER fold only, so no prior has seen the labels it is scored on;
* weak labels: real NLCD (channel 9, raw codes -> ``classes.nlcd_codes_to_index``) through
  ``weak_labels.weak_label_prior`` (blur 101 / 31 px, buildings = channel 28) with a
  co-occurrence P(class | NLCD) estimated leave-one-out from the other 7 patches (as
  benchmarks/geodata.py), then average-pooled x1/4 to 64 x 64;
* clusters: real NAIP (channels 0-3) through ``clustering.prepare_naip`` (x1/4) and
  ``local_colour_clustering`` (K 5, r 7, 30 iterations, the first 5 with r 15);
* pseudo-labels: ``pseudolabel.pseudolabel_chips`` on the whole 64 x 64 patches (the
  paper's chip size; the prior is convolutional), the paper's 200 steps, 31 x 31 windows,
  with KL(p || weak) (reverse, the demo's) and KL(weak || p) (forward, the paper's).

Scores (``landcover.metrics``: accuracy over non-ignored pixels, class-mean IoU over the
classes present, pooled over patches) of the pseudo-labels and of the weak-label argmax
against the real labels at 1/4 resolution (4 m), plus the "always trees" baseline: the
patches are mostly forest.

The real test tile (m_3907833_nw, another NAIP tile, ~24 m pixels after the shared
extract's downsampling) is used at its own resolution: weak labels with the blur and
building window scaled to metres (as benchmarks/geodata.py) and a co-occurrence from all
8 patches (source -> target); clustering and MI / KL windows scaled from their 4 m sizes
to the tile's pixels; the central 256 x 256 pixels cut into 64 chips of 32 x 32 and
pseudo-labelled with the first fold's prior. Note the prior learnt 4 m layouts, so at
24 m it is used off its training scale.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("benchmarks.realdata_landcover")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CHESAPEAKE = SHARED / "chesapeake"
LABEL_M = 4.0  # the prior's label pixel size in metres (1 m imagery x1/4)


def _scores(pred: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, Any]:
    from landprior.landcover.metrics import ConfusionAccumulator

    acc = ConfusionAccumulator()
    for p, t in zip(pred, truth, strict=True):
        acc.update(np.asarray(p), np.asarray(t))
    s = acc.scores()
    return {
        "accuracy_pct": round(100 * s["accuracy"], 2),
        "miou_pct": round(100 * s["miou"], 2),
        "iou_pct": {k: (None if v != v else round(100 * v, 2)) for k, v in s["iou"].items()},
        "pixels": s["pixels"],
    }


def _class_fractions(truth: list[np.ndarray]) -> dict[str, float]:
    from landprior.landcover.classes import CLASS_NAMES

    flat = np.concatenate([t.ravel() for t in truth])
    flat = flat[flat != 255]
    counts = np.bincount(flat, minlength=len(CLASS_NAMES))
    return {n: round(float(c) / max(flat.size, 1), 4) for n, c in zip(CLASS_NAMES, counts,
                                                                    strict=True)}


def _scaled(radius_at_4m: int, pixel_m: float) -> int:
    """A window radius given at the 4 m label resolution, in pixels of ``pixel_m`` metres."""
    return max(1, round(radius_at_4m * LABEL_M / pixel_m))


def train_prior(labels_1m: list[np.ndarray], out: Path, *, steps: int, per_patch: int,
                batch: int, lr: float, seed: int) -> tuple[Path, dict[str, Any]]:
    """The label DDPM on 32 x 32 patches (128 m crops x1/4, flips) of the given 1 m labels."""
    from landprior.diffusion.train import TrainConfig
    from landprior.landcover.prior import train_label_prior
    from landprior.landcover.tiling import sample_label_patches

    rng = np.random.default_rng(seed)
    patches = np.concatenate([
        sample_label_patches(lab, per_patch, generator=rng, size=128, factor=4, flips=True,
                             max_ignore_fraction=0.05, name=f"patch{i}")
        for i, lab in enumerate(labels_1m)
    ])
    config = TrainConfig(steps=steps, batch_size=batch, lr=lr, ema_rate=0.995, seed=seed,
                         hflip=True, vflip=True, checkpoint_every=steps)
    started = time.process_time()
    result = train_label_prior(patches, out, preset="landcover-cpu", config=config,
                               resume=False, progress=False)
    losses = result.losses
    info = {
        "patches": len(patches),
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "loss_first_20": round(float(np.mean(losses[:20])), 4),
        "loss_last_20": round(float(np.mean(losses[-20:])), 4),
        "seconds_cpu": round(time.process_time() - started, 1),
    }
    return result.checkpoint, info


def pseudolabel(checkpoint: Path, weak: np.ndarray, clusters: np.ndarray, *, steps: int,
                radius: int, batch: int, seed: int, kl_direction: str) -> tuple[np.ndarray, float]:
    from landprior.diffusion.train import load_denoiser
    from landprior.landcover.pseudolabel import PseudoLabelConfig, pseudolabel_chips

    den, schedule, meta = load_denoiser(checkpoint)
    config = PseudoLabelConfig(steps=steps, mi_radius=radius, kl_radius=radius,
                               batch_size=batch, seed=seed, kl_direction=kl_direction)
    started = time.process_time()
    labels, _ = pseudolabel_chips(den, schedule, torch.from_numpy(weak),
                                  torch.from_numpy(clusters), config,
                                  num_classes=meta["unet_config"].in_channels)
    return labels.numpy(), time.process_time() - started


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import rasterio

    from landprior.landcover.classes import (
        CHESAPEAKE_MAPPING,
        CLASS_NAMES,
        nlcd_codes_to_index,
        remap,
    )
    from landprior.landcover.clustering import local_colour_clustering, prepare_naip
    from landprior.landcover.tiling import average_pool, mode_downsample
    from landprior.landcover.weak_labels import estimate_cooccurrence, weak_label_prior

    files = sorted((CHESAPEAKE / "train_patches").glob("*.npz"))
    arrs = [np.load(f)["arr_0"][0] for f in files]
    labs = [remap(a[8].astype(np.int64), CHESAPEAKE_MAPPING) for a in arrs]
    nls = [nlcd_codes_to_index(a[9]) for a in arrs]
    blds = [a[28] for a in arrs]
    truth = [mode_downsample(lab, 4) for lab in labs]  # (64, 64) at 4 m
    n = len(arrs)
    trees = CLASS_NAMES.index("trees")

    log.info("weak labels (leave-one-out co-occurrence) and colour clusters")
    weak = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        cooc = estimate_cooccurrence([nls[j] for j in others], [labs[j] for j in others])
        w = average_pool(weak_label_prior(nls[i], cooc, buildings=blds[i]), 4)
        weak.append(w / w.sum(axis=0, keepdims=True))
    weak_arr = np.stack(weak).astype(np.float32)
    naip = prepare_naip(np.stack([a[:4] for a in arrs]), factor=4)
    clusters = local_colour_clustering(
        naip, n_components=5, radius=7, iterations=args.cluster_iterations,
        warmup_iterations=5, warmup_radius=15, generator=torch.Generator().manual_seed(0),
    ).numpy().astype(np.float32)

    folds = [list(range(0, n, 2)), list(range(1, n, 2))]
    directions = list(args.kl_directions)
    pseudo: dict[str, list[np.ndarray | None]] = {d: [None] * n for d in directions}
    priors = []
    pl_seconds = 0.0
    for k, fold in enumerate(folds):
        train_idx = [i for i in range(n) if i not in fold]
        log.info("fold %d: prior on patches %s (%d steps)", k, train_idx, args.prior_steps)
        ckpt, info = train_prior([labs[i] for i in train_idx], tmp / f"prior{k}",
                                 steps=args.prior_steps, per_patch=args.crops_per_patch,
                                 batch=args.prior_batch, lr=args.prior_lr, seed=k)
        info.update(trained_on_patches=train_idx, pseudo_labels_patches=fold)
        priors.append((ckpt, info))
        for direction in directions:
            log.info("fold %d: pseudo-labels for patches %s (%d steps, KL %s)", k, fold,
                     args.steps, direction)
            labels, seconds = pseudolabel(ckpt, weak_arr[fold], clusters[fold],
                                          steps=args.steps, radius=15, batch=len(fold), seed=0,
                                          kl_direction=direction)
            pl_seconds += seconds
            for i, lab in zip(fold, labels, strict=True):
                pseudo[direction][i] = lab
    patches_report = {
        "what": f"{n} real Chesapeake patches, 256 x 256 at 1 m, scored at 1/4 (64 x 64, 4 m)",
        "class_fractions": _class_fractions(truth),
        **{f"pseudo_labels_kl_{d}": _scores(pseudo[d], truth)  # type: ignore[arg-type]
           for d in directions},
        "weak_label_argmax": _scores([w.argmax(0) for w in weak_arr], truth),
        "always_trees": _scores([np.full_like(t, trees) for t in truth], truth),
        "priors": [info for _, info in priors],
        "pseudolabel_seconds_cpu": round(pl_seconds, 1),
        "pseudolabel_chips_per_s": round(n * len(directions) / pl_seconds, 4),
    }

    log.info("test tile at its own resolution")
    base = CHESAPEAKE / "test_tile" / "m_3907833_nw_17_1_"

    def read(name: str) -> tuple[np.ndarray, float]:
        with rasterio.open(f"{base}{name}.tif") as src:
            return src.read(), float(src.res[0])

    lc_raw, res = read("lc")
    lc = remap(lc_raw[0].astype(np.int64), CHESAPEAKE_MAPPING)
    nl = nlcd_codes_to_index(read("nlcd")[0][0])
    bld = read("buildings")[0][0]
    naip_tile = read("naip-new")[0]
    cooc_all = estimate_cooccurrence(nls, labs)
    scaled = {"blur_kernel": 2 * round(50 / res) + 1, "blur_sigma": 31.0 / res,
              "building_radius": round(4 / res)}
    weak_tile = weak_label_prior(nl, cooc_all, buildings=bld, **scaled)
    radii = {"cluster_radius": _scaled(7, res), "cluster_warmup_radius": _scaled(15, res),
             "mi_kl_radius": _scaled(15, res)}
    z_tile = local_colour_clustering(
        prepare_naip(naip_tile[:4], factor=1), n_components=5, radius=radii["cluster_radius"],
        iterations=args.cluster_iterations, warmup_iterations=5,
        warmup_radius=radii["cluster_warmup_radius"], generator=torch.Generator().manual_seed(0),
    )[0].numpy()
    h, w = lc.shape
    side, chip = 256, 32
    r0, c0 = (h - side) // 2, (w - side) // 2
    crop = (slice(r0, r0 + side), slice(c0, c0 + side))
    g = side // chip

    def to_chips(a: np.ndarray) -> np.ndarray:  # (C, 256, 256) -> (64, C, 32, 32)
        a = a[:, crop[0], crop[1]]
        a = a.reshape(a.shape[0], g, chip, g, chip).transpose(1, 3, 0, 2, 4)
        return np.ascontiguousarray(a.reshape(g * g, -1, chip, chip)).astype(np.float32)

    tile_maps = {}
    seconds = 0.0
    for direction in directions:
        tile_pseudo, sec = pseudolabel(priors[0][0], to_chips(weak_tile), to_chips(z_tile),
                                       steps=args.steps, radius=radii["mi_kl_radius"],
                                       batch=args.tile_batch, seed=0, kl_direction=direction)
        seconds += sec
        tile_maps[direction] = (
            tile_pseudo.reshape(g, g, chip, chip).transpose(0, 2, 1, 3).reshape(side, side)
        )
    lc_crop = lc[crop]
    tile_report = {
        "what": f"real tile m_3907833_nw at {res:.1f} m px, central {side} x {side} px as "
                f"{g * g} chips of {chip} x {chip}; co-occurrence from the 8 patches; "
                "prior of fold 0",
        "pixel_size_m": round(res, 3),
        "weak_label_params": {k: round(v, 3) for k, v in scaled.items()},
        "window_radii_px": radii,
        "class_fractions": _class_fractions([lc_crop]),
        **{f"pseudo_labels_kl_{d}": _scores([m], [lc_crop]) for d, m in tile_maps.items()},
        "weak_label_argmax": _scores([weak_tile[:, crop[0], crop[1]].argmax(0)], [lc_crop]),
        "always_trees": _scores([np.full_like(lc_crop, trees)], [lc_crop]),
        "pseudolabel_seconds_cpu": round(seconds, 1),
    }
    return {"patches": patches_report, "test_tile": tile_report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--prior-steps", type=int, default=1000,
                        help="training steps per prior")
    parser.add_argument("--prior-batch", type=int, default=16)
    parser.add_argument("--prior-lr", type=float, default=1e-3,
                        help="prior learning rate (the CPU recipe's 1e-3)")
    parser.add_argument("--kl-directions", nargs="+", default=["reverse", "forward"],
                        choices=["forward", "reverse", "symmetric"],
                        help="KL directions to pseudo-label with (the demo uses reverse)")
    parser.add_argument("--crops-per-patch", type=int, default=64,
                        help="random 32 x 32 label crops per training patch")
    parser.add_argument("--steps", type=int, default=200, help="pseudo-label engine steps")
    parser.add_argument("--cluster-iterations", type=int, default=30)
    parser.add_argument("--tile-batch", type=int, default=32)
    parser.add_argument("--quick", action="store_true",
                        help="30 prior steps, 20 pseudo-label steps (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.prior_steps, args.steps = 30, 20
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if not (CHESAPEAKE / "train_patches").is_dir() or not (CHESAPEAKE / "test_tile").is_dir():
        print(json.dumps({"skipped": f"real data not available under {CHESAPEAKE} "
                                     "(see ../shared/data/README.md)"}, indent=1))
        return
    torch.set_num_threads(args.threads)
    started = time.perf_counter(), time.process_time()
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                    "load_avg_1min_at_start": round(os.getloadavg()[0], 2)},
        "settings": {k: v for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="landprior-realdata-") as tmp:
        report.update(run(args, Path(tmp)))
    report["seconds_wall"] = round(time.perf_counter() - started[0], 1)
    report["seconds_cpu"] = round(time.process_time() - started[1], 1)
    report["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
