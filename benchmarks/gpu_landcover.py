"""Land cover on a CUDA GPU: pseudo-labelling, the paper-scale prior and the segmenter (JSON).

Two steps, so that the GPU machine needs only torch and numpy (no GDAL / rasterio):

    # 1. on a machine with the full install, after `make demo` (~1 min): the inputs folder
    .venv/bin/python benchmarks/gpu_landcover.py prepare --out .gpu/landcover
    # 2. on the GPU machine (python with torch; the repository on PYTHONPATH)
    python benchmarks/gpu_landcover.py run --inputs .gpu/landcover --out-dir OUT \
        [--train-seconds 240] [--sections prior_paper_scale,pseudolabel_paper] \
        [--work DIR [--resume]] [--ema-rate 0.9999]

A device command may run 10 minutes, so a longer paper-scale training is several calls on the
same (warm) machine: each ``--work DIR --resume`` call trains --train-seconds more from DIR's
checkpoint and measures the prior again (the JSON's ``steps`` is the running total).

``run`` sections, each written to OUT/gpu_landcover.json as soon as it is done:
  pseudolabel_demo   the demo's prior and settings (200 steps, lr 5e-3, 31 x 31 windows,
                     KL reverse) on the demo's 128 desert chips (32 x 32 labels at 4 m), all
                     at once and in batches of 32: chips/s and pseudo-label / weak-label
                     accuracy against the truth (the CPU run of `make demo` is in
                     results/pseudolabels/synthdesert_az-2010.json).
  prior_paper_scale  the paper's prior (`landcover64`, 85M parameters, 64 x 64 one-hot labels
                     from 256 m patches, batch 32, Adam 1e-4, EMA 0.9999) trained from scratch
                     for --train-seconds on the source city's label patches: seconds per
                     step, the hours the paper's 100k steps would take, held-out denoising
                     accuracy from t = 400 / 700, class frequencies of 64 DDPM samples and a
                     PNG grid (real patches on top, samples below). A truncated run: its
                     figures say how the configuration trains, not how good 100k steps are.
  pseudolabel_paper  that prior on 64 desert chips of 256 m (64 x 64 labels), batch 64, the
                     demo's settings: chips/s, accuracy; and the demo prior on the same chips.
  segmenter          training steps/s of the enviroatlas configuration's U-Net (64 base
                     channels, depth 4, batch 16, 64 x 64 inputs) and prediction Mpx/s on a
                     4096 x 4096 image (window 64 at full resolution; window 32 at x4).

GPU timings use torch.cuda.synchronize around each timed block, after an untimed warm-up of
the same shapes (cuDNN autotuning; `torch.backends.cudnn.benchmark` is on).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DESERT = "synthdesert_az-2010"
SOURCE = "synthsource_pa-2010"
# prepare writes, run reads
INPUTS = ("demo_prior.pt", "desert_chips32.npz", "source_patches64.npz", "desert_chips64.npz")


# ---------------------------------------------------------------------------------- prepare
def _chip_arrays(weak: np.ndarray, clusters: np.ndarray, image: np.ndarray,
                 truth: np.ndarray) -> dict[str, np.ndarray]:
    """What pseudo-labelling and the segmenter need, float16 inputs (compressed on save)."""
    return {"weak": weak.astype(np.float16), "clusters": clusters.astype(np.float16),
            "image": image.astype(np.float16), "truth": truth}  # fmt: skip


def prepare(args: argparse.Namespace) -> None:
    from landprior.landcover.chips import ChipSet, sample_city_chips
    from landprior.landcover.clustering import local_colour_clustering
    from landprior.landcover.enviroatlas import EnviroAtlas
    from landprior.landcover.prior import source_label_patches

    out: Path = args.out
    results: Path = args.results
    prior = results / "prior" / "checkpoint.pt"
    clusters = results / "clusters" / f"{DESERT}.npz"
    for path in (prior, clusters):
        if not path.is_file():
            raise SystemExit(f"{path} not found: run `make demo` first")
    if out.exists():
        raise SystemExit(f"{out} exists: remove it or pick another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copyfile(prior, tmp / INPUTS[0])
        demo = ChipSet.load(clusters)
        np.savez_compressed(tmp / INPUTS[1], **_chip_arrays(
            demo.weak, demo.clusters, demo.image, demo.truth))  # fmt: skip
        ds = EnviroAtlas(args.data)
        train = source_label_patches(ds, SOURCE, args.train_patches, size=256, factor=4, seed=0)
        held = source_label_patches(ds, SOURCE, 256, splits=("test",), size=256, factor=4,
                                    seed=1)  # fmt: skip
        np.savez_compressed(tmp / INPUTS[2], train=train, heldout=held)
        # the demo's chip and clustering settings, at the paper's 256 m chips
        cs = sample_city_chips(ds, DESERT, "test", args.paper_chips, size=256, factor=4, seed=0)
        z = local_colour_clustering(
            torch.from_numpy(cs.image), n_components=5, radius=7, iterations=30,
            warmup_iterations=5, warmup_radius=15, generator=torch.Generator().manual_seed(0),
        )
        np.savez_compressed(tmp / INPUTS[3], **_chip_arrays(
            cs.weak, z.numpy(), cs.image, cs.truth))  # fmt: skip
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    print(json.dumps({"prepared": str(out), "bytes": sizes}, indent=2))


# -------------------------------------------------------------------------------------- run
def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Timer:
    def __enter__(self) -> Timer:
        _sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        _sync()
        self.seconds = time.perf_counter() - self.t0


def _chips(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def _accuracy(labels: np.ndarray, truth: np.ndarray) -> float:
    keep = truth != 255
    return round(100.0 * float((labels[keep] == truth[keep]).mean()), 2)


def _pseudolabel(
    prior: Path, chips: dict[str, np.ndarray], batch: int, device, steps: int = 200,
    keep: dict[str, np.ndarray] | None = None, name: str = "",
) -> dict:
    from landprior.diffusion.train import load_denoiser
    from landprior.landcover.pseudolabel import PseudoLabelConfig, pseudolabel_chips

    denoiser, schedule, _ = load_denoiser(prior, device=device)
    config = PseudoLabelConfig(steps=steps, lr=5e-3, mi_radius=15, kl_radius=15,
                               batch_size=batch, kl_direction="reverse", seed=0)  # fmt: skip
    weak = torch.from_numpy(chips["weak"].astype(np.float32))
    clusters = torch.from_numpy(chips["clusters"].astype(np.float32))
    warm = dataclasses.replace(config, steps=3)  # cuDNN autotuning of these shapes, untimed
    pseudolabel_chips(denoiser, schedule, weak[:batch], clusters[:batch], warm, device=device)
    with Timer() as t:
        labels, _ = pseudolabel_chips(denoiser, schedule, weak, clusters, config, device=device)
    n = len(weak)
    if keep is not None:
        keep[name] = labels.numpy().astype(np.uint8)
    return {
        "chips": n, "batch": batch, "label_size": int(weak.shape[-1]), "steps": steps,
        "seconds": round(t.seconds, 2), "chips_per_second": round(n / t.seconds, 2),
        "pseudo_label_accuracy": _accuracy(labels.numpy(), chips["truth"]),
        "weak_label_accuracy": _accuracy(chips["weak"].argmax(1), chips["truth"]),
    }


def _train_paper_prior(
    patches: np.ndarray, out_dir: Path, seconds: float, device, quick: bool = False,
    ema_rate: float = 0.9999, resume: bool = False,
) -> dict:
    from landprior.diffusion.train import TrainConfig, train
    from landprior.diffusion.unet import UNetConfig
    from landprior.landcover.prior import labels_to_x

    x = torch.from_numpy(labels_to_x(patches))
    unet = UNetConfig.preset("landcover64")
    if quick:  # a smoke run of the code path, not of the paper's network
        unet = UNetConfig.preset("landcover-cpu").replace(in_channels=5, out_channels=5)
    params = sum(p.numel() for p in unet.build().parameters())

    def config(steps: int) -> TrainConfig:
        return TrainConfig(steps=steps, batch_size=32, lr=1e-4, ema_rate=ema_rate, seed=0,
                           hflip=True, vflip=True, checkpoint_every=steps,
                           device=str(device))  # fmt: skip

    start = 0
    if resume:
        from landprior.diffusion.train import load_checkpoint

        ckpt_path = out_dir / "checkpoint.pt"
        if not ckpt_path.is_file():
            raise SystemExit(f"--resume: {ckpt_path} not found (the machine went cold?)")
        start = int(load_checkpoint(ckpt_path)["step"])
    warm = start + (2 if quick else 50)
    with Timer() as t_warm:  # CUDA context, cuDNN autotuning, first checkpoint
        train(x, unet, config(warm), out_dir, resume=resume, progress=False)
    probe = 2 if quick else 200
    with Timer() as t_probe:
        train(x, unet, config(warm + probe), out_dir, resume=True, progress=False)
    per_step = t_probe.seconds / probe
    steps = warm + probe + max(int((seconds - t_warm.seconds - t_probe.seconds) / per_step), 0)
    with Timer() as t_rest:
        result = train(x, unet, config(steps), out_dir, resume=True, progress=False)
    done = steps - warm - probe
    per_step_steady = t_rest.seconds / max(done, 1) if done else per_step
    log = [json.loads(line) for line in (out_dir / "loss.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log]
    return {
        "preset": unet.name, "parameters": params, "batch": 32, "label_size": 64,
        "lr": 1e-4, "ema_rate": ema_rate, "steps_before": start, "steps": result.step,
        "train_seconds_this_call": round(t_warm.seconds + t_probe.seconds + t_rest.seconds, 1),
        "seconds_per_step": round(per_step_steady, 4),
        "paper_100k_steps_hours": round(100_000 * per_step_steady / 3600, 2),
        "loss_first_100": round(float(np.mean(losses[:100])), 4),
        "loss_this_call_first_100": round(float(np.mean(losses[start:start + 100])), 4),
        "loss_last_100": round(float(np.mean(losses[-100:])), 4),
        "checkpoint": str(result.checkpoint),
    }


def _segmenter(device, quick: bool = False) -> dict:
    from landprior.landcover.segmenter import (
        SegmenterConfig,
        SegmenterTrainConfig,
        predict_array,
        train_segmenter,
    )

    g = torch.Generator().manual_seed(0)
    images = torch.rand(256, 4, 64, 64, generator=g)
    labels = torch.randint(0, 5, (256, 64, 64), generator=g)
    model = SegmenterConfig(base_channels=64, depth=4).build().to(device)
    warm = 1 if quick else 20  # untimed: cuDNN autotuning
    train_segmenter(model, images, labels, SegmenterTrainConfig(steps=warm, batch_size=16))
    steps = 3 if quick else 300
    with Timer() as t:
        train_segmenter(model, images, labels, SegmenterTrainConfig(steps=steps, batch_size=16))
    side = 512 if quick else 4096
    image = np.random.default_rng(0).random((4, side, side), dtype=np.float32)
    out: dict[str, Any] = {"train_steps_per_second": round(steps / t.seconds, 1),
                           "config": {"base_channels": 64, "depth": 4, "batch": 16}}
    for window, down, batch in ((64, 1, 64), (32, 4, 64)):
        # bilinear: the upsampling of the committed H100 reference (guided came later)
        predict_array(model, image[:, :512, :512], window=window, overlap=window // 4,
                      downsample=down, batch_size=batch, upsample="bilinear")  # fmt: skip
        with Timer() as t:
            predict_array(model, image, window=window, overlap=window // 4, downsample=down,
                          batch_size=batch, upsample="bilinear")  # fmt: skip
        mpx = side**2 / 1e6
        out[f"predict_window{window}_x{down}_mpx_per_second"] = round(mpx / t.seconds, 2)
    return out


SECTIONS = ("pseudolabel_demo", "prior_paper_scale", "pseudolabel_paper", "segmenter")


def run(args: argparse.Namespace) -> None:
    from landprior.devices import resolve_device
    from landprior.landcover.prior import prior_quality

    device = resolve_device(args.device)
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--sections: unknown {unknown}; expected some of {list(SECTIONS)}")
    if "pseudolabel_paper" in sections and "prior_paper_scale" not in sections:
        raise SystemExit("--sections: pseudolabel_paper needs prior_paper_scale (its prior)")
    if args.resume and args.work is None:
        raise SystemExit("--resume needs --work (the folder of the run to continue)")
    inputs: Path = args.inputs
    missing = [name for name in INPUTS if not (inputs / name).is_file()]
    if missing:
        raise SystemExit(f"{inputs} lacks {missing}: write it with `gpu_landcover.py prepare`")
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
    }
    torch.backends.cudnn.benchmark = True

    def save() -> None:  # after every section: a run cut short keeps what it measured
        (out_dir / "gpu_landcover.json").write_text(json.dumps(report, indent=2) + "\n")

    demo_prior = inputs / INPUTS[0]
    quick = args.quick
    steps = 4 if quick else 200
    if "pseudolabel_demo" in sections:
        chips32 = _chips(inputs / INPUTS[1])
        if quick:
            chips32 = {k: v[:8] for k, v in chips32.items()}
        report["pseudolabel_demo"] = [_pseudolabel(demo_prior, chips32, b, device, steps)
                                      for b in (len(chips32["weak"]), 32)]  # fmt: skip
        save()

    # without --work the prior's run folder (a 1.4 GB checkpoint at the paper's scale) is
    # temporary and removed at the end
    scratch = tempfile.TemporaryDirectory(prefix="paper-prior-") if args.work is None else None
    if "prior_paper_scale" in sections:
        patches = np.load(inputs / INPUTS[2])
        work = Path(args.work) if scratch is None else Path(scratch.name)
        work.mkdir(parents=True, exist_ok=True)
        seconds = min(args.train_seconds, 5.0) if quick else args.train_seconds
        section = _train_paper_prior(patches["train"], work, seconds, device, quick,
                                     ema_rate=args.ema_rate, resume=args.resume)  # fmt: skip
        ckpt = Path(section.pop("checkpoint"))
        heldout = patches["heldout"][:8] if quick else patches["heldout"]
        # quick: no samples (1000 DDPM steps each), the denoising accuracy only
        quality = prior_quality(ckpt, heldout, n_samples=0 if quick else 64, seed=0,
                                device=device, samples_png=None if quick else
                                out_dir / "paper_prior_samples.png")  # fmt: skip
        section["quality"] = {k: v for k, v in quality.items() if k not in ("checkpoint",)}
        report["prior_paper_scale"] = section
        save()

    if "pseudolabel_paper" in sections:
        chips64 = _chips(inputs / INPUTS[3])
        if quick:
            chips64 = {k: v[:4] for k, v in chips64.items()}
        labels: dict[str, np.ndarray] = {}
        report["pseudolabel_paper"] = {
            name: _pseudolabel(prior, chips64, 64, device, steps, labels, name)
            for name, prior in (("paper_prior", ckpt), ("demo_prior", demo_prior))
        }
        # the labels themselves, for a CPU-side look (same chip order as the inputs)
        np.savez_compressed(out_dir / "pseudolabels_paper.npz", **labels)
        save()
    if "segmenter" in sections:
        report["segmenter"] = _segmenter(device, quick)
        save()
    if scratch is not None:
        scratch.cleanup()
    print(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="Write the GPU run's inputs (needs the full install).")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=REPO / "resources" / "synthetic")
    p.add_argument("--results", type=Path, default=REPO / "results")
    p.add_argument("--train-patches", type=int, default=8000)
    p.add_argument("--paper-chips", type=int, default=64)
    r = sub.add_parser("run", help="Run the GPU sections (torch and numpy only).")
    r.add_argument("--inputs", type=Path, required=True)
    r.add_argument("--out-dir", type=Path, required=True)
    r.add_argument("--train-seconds", type=float, default=240.0)
    r.add_argument("--work", type=Path, default=None, help="Prior run folder (default: temp).")
    r.add_argument("--resume", action="store_true",
                   help="Continue the prior run in --work for --train-seconds more.")
    r.add_argument("--ema-rate", type=float, default=0.9999,
                   help="EMA rate of the paper-scale prior (the paper's code keeps no EMA).")
    r.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"Comma-separated sections to run (default: all of {', '.join(SECTIONS)}).")
    r.add_argument("--device", default="auto")
    r.add_argument("--quick", action="store_true",
                   help="Tiny smoke run of every section (5 s of training, no prior samples).")
    args = parser.parse_args()
    prepare(args) if args.command == "prepare" else run(args)


if __name__ == "__main__":
    main()
