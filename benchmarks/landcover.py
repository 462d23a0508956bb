"""Land-cover speed at the CPU-scale configuration (JSON on stdout, CPU only).

    .venv/bin/python benchmarks/landcover.py                  # batches 32 and 64, 20 steps
    .venv/bin/python benchmarks/landcover.py --checkpoint results/prior/checkpoint.pt
    .venv/bin/python benchmarks/landcover.py --quick          # smaller, for a smoke run

Sections:
  pseudolabel  pseudo-labelled chips per second with landcover.pseudolabel.pseudolabel_chips
               (Algorithm 1 under the MI - KL constraint): the `landcover-cpu` U-Net with
               randomised weights (every zero-initialised layer re-drawn, so gradients flow
               through the whole net as in a trained one) or --checkpoint, 32 x 32 chips of
               5 classes, window radius 15 (31 x 31), per batch size. The run is --steps
               engine steps (default 20); chips/s at the paper's 200 steps is the same
               per-step cost times 200 (the cost of a step does not depend on t).
               Each engine step's time is split into
                 denoiser   = x_t, eps_theta(x_t, t), the squared error, gradient w.r.t. x;
                 constraint = LandCoverConstraint(x, progress), gradient w.r.t. x;
               measured separately on the SAME tensors: the run's callback keeps every step's
               x, t and progress, and each is replayed through the two parts right after the
               run (interleaved per step). other = step - denoiser - constraint (noise draws,
               optimiser, bookkeeping), floored at 0: the replayed parts can take longer than
               inside the run (medians of separate timings, colder caches), and
               replay_overcount_ms says by how much. constraint_share_pct = constraint /
               max(step, denoiser + constraint) (target < 20).
  segmenter    megapixels per second of landcover.segmenter.predict_array on a 1024 x 1024
               4-band image with the default SegmenterConfig (random weights): window 32 at
               downsample 4 (probabilities upsampled guided by the image, and bilinearly)
               and window 64 at downsample 1, overlap window / 4.

Times are process CPU seconds (robust to other processes on a shared machine; with one
torch thread they equal the compute time) with wall-clock seconds next to them.
torch.set_num_threads is explicit (--threads, default 1).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landprior.diffusion.denoiser import Denoiser, EpsDenoiser, as_batch_t, freeze
from landprior.diffusion.nn import redraw_zero_init
from landprior.diffusion.schedule import NoiseSchedule
from landprior.diffusion.unet import UNetConfig
from landprior.engine.pnp import PnPStep
from landprior.landcover.classes import NUM_CLASSES
from landprior.landcover.constraint import LandCoverConstraint
from landprior.landcover.pseudolabel import PseudoLabelConfig, pseudolabel_chips
from landprior.landcover.segmenter import SegmenterConfig, predict_array


class Clock:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self) -> Clock:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


# --------------------------------------------------------------------------- inputs


def randomised_unet(preset: str = "landcover-cpu", seed: int = 0) -> tuple[nn.Module, int]:
    """The preset U-Net with every zero-initialised conv / linear re-drawn (torch defaults)."""
    cfg = UNetConfig.preset(preset)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = redraw_zero_init(cfg.build())
    return net, sum(p.numel() for p in net.parameters())


def load_prior(checkpoint: Path | None) -> tuple[Denoiser, NoiseSchedule, dict[str, Any]]:
    if checkpoint is not None:
        from landprior.diffusion.train import load_denoiser

        den, schedule, meta = load_denoiser(checkpoint)
        cfg = meta["unet_config"]
        info = {"checkpoint": str(checkpoint), "preset": cfg.name, "step": meta["step"],
                "parameters": sum(p.numel() for p in den.parameters())}
        return den, schedule, info
    net, n_params = randomised_unet()
    info = {"checkpoint": None, "preset": "landcover-cpu", "weights": "randomised (no zeros)",
            "parameters": n_params}
    return freeze(EpsDenoiser(net)), NoiseSchedule.linear(1000), info


def chip_inputs(n: int, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Smooth random weak labels (n, 5, s, s) and colour-cluster responsibilities (n, 5, s, s)."""
    g = torch.Generator().manual_seed(seed)

    def smooth_softmax(scale: float) -> Tensor:
        logits = torch.randn(n, NUM_CLASSES, size, size, generator=g)
        logits = F.avg_pool2d(logits, 5, stride=1, padding=2, count_include_pad=False)
        return torch.softmax(scale * logits, dim=1)

    return smooth_softmax(4.0), smooth_softmax(8.0)


# --------------------------------------------------------------------------- parts


def denoiser_part(den: Denoiser, schedule: NoiseSchedule, x: Tensor, t: int,
                  noise: Tensor) -> Tensor:
    """The diffusion half of an engine step: forward and gradient w.r.t. x."""
    x = x.detach().requires_grad_(True)
    a = float(schedule.alphas_cumprod[t - 1])
    x_t = a**0.5 * x + (1.0 - a) ** 0.5 * noise
    eps = den(x_t, as_batch_t(t, x.shape[0]))
    loss = (noise - eps).square().flatten(1).mean(dim=1).sum()
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def constraint_part(constraint: LandCoverConstraint, x: Tensor, progress: float) -> Tensor:
    """The constraint half of an engine step: log c(x) and its gradient w.r.t. x."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(constraint(x, progress).sum(), x)
    return grad


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def pseudolabel_speed(den: Denoiser, schedule: NoiseSchedule, batch: int, size: int,
                      steps: int, radius: int) -> dict[str, Any]:
    """One pseudolabel_chips run of ``batch`` chips, then the per-step split on its tensors."""
    weak, clusters = chip_inputs(batch, size)
    config = PseudoLabelConfig(steps=steps, batch_size=batch, mi_radius=radius,
                               kl_radius=radius)
    # warm-up (allocator, oneDNN kernels) on a 2-step run
    pseudolabel_chips(den, schedule, weak, clusters, PseudoLabelConfig(
        steps=2, batch_size=batch, mi_radius=radius, kl_radius=radius))
    records: list[tuple[Tensor, int, float]] = []
    stamps: list[tuple[float, float]] = []

    def keep(_: int, step: PnPStep) -> None:
        stamps.append((time.perf_counter(), time.process_time()))
        records.append((step.x.clone(), step.t, step.progress))

    with Clock() as run:
        t0 = (time.perf_counter(), time.process_time())
        labels, _ = pseudolabel_chips(den, schedule, weak, clusters, config, callback=keep)
    assert labels.shape == (batch, size, size) and len(records) == steps
    edges = [t0, *stamps]
    step_wall = [b[0] - a[0] for a, b in itertools.pairwise(edges)]
    step_cpu = [b[1] - a[1] for a, b in itertools.pairwise(edges)]

    constraint = LandCoverConstraint(clusters=clusters, weak_labels=weak, mi_radius=radius,
                                     kl_radius=radius, sigma_start=config.sigma_start,
                                     sigma_end=config.sigma_end)
    g = torch.Generator().manual_seed(1)
    parts: dict[str, dict[str, list[float]]] = {
        "denoiser": {"wall": [], "cpu": []}, "constraint": {"wall": [], "cpu": []}}
    for x, t, progress in records:
        noise = torch.randn(x.shape, generator=g)
        with Clock() as c_den:
            denoiser_part(den, schedule, x, t, noise)
        with Clock() as c_con:
            constraint_part(constraint, x, progress)
        for name, clock in (("denoiser", c_den), ("constraint", c_con)):
            parts[name]["wall"].append(clock.wall)
            parts[name]["cpu"].append(clock.cpu)

    def split(clock: str, steps_times: list[float]) -> dict[str, float]:
        step = _median(steps_times)
        d, c = _median(parts["denoiser"][clock]), _median(parts["constraint"][clock])
        return {
            "step_ms": round(1e3 * step, 2),
            "denoiser_ms": round(1e3 * d, 2),
            "constraint_ms": round(1e3 * c, 2),
            "other_ms": round(1e3 * max(step - d - c, 0.0), 2),
            "replay_overcount_ms": round(1e3 * max(d + c - step, 0.0), 2),
            "constraint_share_pct": round(100 * c / max(step, d + c), 2),
            "constraint_share_of_denoiser_plus_constraint_pct": round(100 * c / (d + c), 2),
        }

    per_step_cpu = run.cpu / steps
    per_step_wall = run.wall / steps
    return {
        "batch": batch,
        "chip": [NUM_CLASSES, size, size],
        "window_radius": radius,
        "engine_steps": steps,
        "seconds_cpu": round(run.cpu, 3),
        "seconds_wall": round(run.wall, 3),
        "chips_per_s": round(batch / run.cpu, 3),
        "chips_per_s_at_200_steps": round(batch / (200 * per_step_cpu), 4),
        "chips_per_s_wall": round(batch / run.wall, 3),
        "chips_per_s_at_200_steps_wall": round(batch / (200 * per_step_wall), 4),
        "step_split_cpu": split("cpu", step_cpu),
        "step_split_wall": split("wall", step_wall),
    }


def segmenter_speed(
    size: int, window: int, downsample: int, batch: int, upsample: str = "guided"
) -> dict[str, Any]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SegmenterConfig().build().eval()
    rng = np.random.default_rng(0)
    image = rng.random((4, size, size), dtype=np.float32)
    overlap = window // 4
    warm = image[:, : window * downsample, : window * downsample]
    predict_array(model, warm, window=window, overlap=overlap, downsample=downsample,
                  upsample=upsample)  # type: ignore[arg-type]
    with Clock() as clock:
        probs = predict_array(model, image, window=window, overlap=overlap,
                              downsample=downsample, batch_size=batch,
                              upsample=upsample)  # type: ignore[arg-type]
    assert probs.shape == (5, size, size)
    mp = size * size / 1e6
    return {
        "image": [4, size, size],
        "window": window,
        "downsample": downsample,
        "upsample": upsample if downsample > 1 else None,
        "overlap": overlap,
        "batch_size": batch,
        "seconds_cpu": round(clock.cpu, 3),
        "seconds_wall": round(clock.wall, 3),
        "megapixels_per_s": round(mp / clock.cpu, 4),
        "megapixels_per_s_wall": round(mp / clock.wall, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a trained prior (checkpoint.pt); default: randomised landcover-cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64],
                        help="pseudo-label batch sizes")
    parser.add_argument("--steps", type=int, default=20, help="engine steps per timed run")
    parser.add_argument("--size", type=int, default=32, help="chip side at the label resolution")
    parser.add_argument("--radius", type=int, default=15, help="MI / KL window radius")
    parser.add_argument("--seg-size", type=int, default=1024, help="segmenter image side")
    parser.add_argument("--seg-batch", type=int, default=16, help="segmenter windows per batch")
    parser.add_argument("--quick", action="store_true",
                        help="batch 8, 5 steps, 256 px segmenter image (a smoke run)")
    parser.add_argument("--skip-segmenter", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.steps, args.seg_size = [8], 5, 256
    if args.checkpoint is not None and not args.checkpoint.exists():
        parser.error(f"--checkpoint {args.checkpoint} not found (run `make demo` for "
                     "results/prior/checkpoint.pt, or use models/landcover/demo-prior.pt)")

    torch.set_num_threads(args.threads)
    den, schedule, prior_info = load_prior(args.checkpoint)
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
        },
        "prior": prior_info,
        "pseudolabel": [
            pseudolabel_speed(den, schedule, b, args.size, args.steps, args.radius)
            for b in args.batches
        ],
    }
    if not args.skip_segmenter:
        report["segmenter"] = [
            segmenter_speed(args.seg_size, w, d, args.seg_batch, up)
            for w, d, up in ((32, 4, "guided"), (32, 4, "bilinear"), (64, 1, "guided"))
        ]
    report["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
