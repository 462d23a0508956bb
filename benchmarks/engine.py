"""Engine overhead: Algorithm 1 steps/s vs the bare denoiser's forward+backward/s (JSON).

Both are measured in one process at the same batch and size, interleaved over several
repeats after a warm-up, with ``torch.set_num_threads`` explicit. The bare loop is what a
step cannot avoid: eps_theta(x_t, t) on a frozen network and the gradient of the squared
error w.r.t. the input only. The engine adds the t schedule, noise draws, the constraint,
its checks and the optimiser step. overhead_pct = (bare rate / engine rate - 1) * 100,
from process CPU time so that other processes on a shared machine do not distort it
(wall-clock figures are printed too). One thread by default: on a loaded 2-core machine
two intra-op threads ran ~7x slower per step (PAPER_NOTES: prefer single-thread processes).

    .venv/bin/python benchmarks/engine.py [--preset landcover-cpu] [--batch 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from landprior.diffusion.denoiser import EpsDenoiser, as_batch_t, freeze
from landprior.diffusion.schedule import NoiseSchedule
from landprior.diffusion.unet import UNetConfig
from landprior.engine.constraints import constraint
from landprior.engine.pnp import infer_point
from landprior.engine.schedules import paper_schedule


def build_denoiser(preset: str) -> tuple[nn.Module, tuple[int, int, int], int, str]:
    """A frozen eps-denoiser (seeded U-Net preset), its (C, H, W), parameter count and name."""
    cfg = UNetConfig.preset(preset)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = cfg.build()
    den = freeze(EpsDenoiser(net))
    chw = (cfg.in_channels, cfg.image_size, cfg.image_size)
    return den, chw, sum(p.numel() for p in net.parameters()), preset


def bare_loop(den: nn.Module, sched: NoiseSchedule, x: Tensor, ts: list[int]) -> Callable[[], None]:
    """Forward + backward w.r.t. the input only, one per t: the unavoidable work of a step."""
    noise = torch.randn_like(x)

    def run() -> None:
        for t in ts:
            x_t = x.detach().requires_grad_(True)
            eps = den(x_t, as_batch_t(t, x.shape[0]))
            torch.autograd.grad((eps - noise).square().mean(), x_t)

    return run


def engine_loop(den: nn.Module, sched: NoiseSchedule, x: Tensor, ts: Tensor) -> Callable[[], None]:
    """Algorithm 1 with a cheap constraint (log c = -mean x^2), len(ts) steps."""
    cheap = constraint(lambda v: -v.square().flatten(1).mean(dim=1), name="cheap")

    def run() -> None:
        infer_point(den, cheap, x, sched, t_schedule=ts, lr=5e-3,
                    optimizer_kwargs={"betas": (0.0, 0.999)},
                    generator=torch.Generator().manual_seed(0))

    return run


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds): CPU time is robust to other processes' load."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="landcover-cpu", help="U-Net preset")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: best on a shared 2-core machine)")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1, help="untimed repeats of each loop")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    den, chw, n_params, name = build_denoiser(args.preset)
    sched = NoiseSchedule.linear(1000)
    ts = paper_schedule("landcover", steps=args.steps)
    x = torch.randn((args.batch, *chw), generator=torch.Generator().manual_seed(1))
    bare, engine = bare_loop(den, sched, x, ts.tolist()), engine_loop(den, sched, x, ts)
    for _ in range(args.warmup):
        bare()
        engine()
    runs: dict[str, list[tuple[float, float]]] = {"bare": [], "engine": []}
    for i in range(args.repeats):  # interleaved, alternating order against drift
        order = ("bare", "engine") if i % 2 == 0 else ("engine", "bare")
        for key in order:
            runs[key].append(timed(bare if key == "bare" else engine))

    def rate(key: str, clock: int, pick: Callable[..., float] = statistics.median) -> float:
        return args.steps / pick(r[clock] for r in runs[key])

    def overhead(clock: int, pick: Callable[..., float] = statistics.median) -> float:
        return round((rate("bare", clock, pick) / rate("engine", clock, pick) - 1.0) * 100.0, 2)

    print(json.dumps({
        "denoiser": {"name": name, "parameters": n_params, "input": [args.batch, *chw]},
        "threads": args.threads,
        "steps_per_repeat": args.steps,
        "repeats": args.repeats,
        "algorithm1_steps_per_s": round(rate("engine", 0), 3),
        "denoiser_fwd_bwd_per_s": round(rate("bare", 0), 3),
        "algorithm1_steps_per_cpu_s": round(rate("engine", 1), 3),
        "denoiser_fwd_bwd_per_cpu_s": round(rate("bare", 1), 3),
        "overhead_pct": overhead(1),
        "overhead_note": "from process CPU time (medians: the *_per_cpu_s rates), robust to "
                         "other processes' load; the *_per_s rates and the figures below are "
                         "wall-clock",
        "wall": {
            "overhead_pct_median": overhead(0),
            "overhead_pct_best": overhead(0, min),
            "algorithm1_steps_per_s_best": round(rate("engine", 0, min), 3),
            "denoiser_fwd_bwd_per_s_best": round(rate("bare", 0, min), 3),
        },
        "cpu_time": {
            "algorithm1_steps_per_cpu_s": round(rate("engine", 1), 3),
            "denoiser_fwd_bwd_per_cpu_s": round(rate("bare", 1), 3),
        },
        "seconds_wall": {k: [round(r[0], 3) for r in v] for k, v in runs.items()},
        "seconds_cpu": {k: [round(r[1], 3) for r in v] for k, v in runs.items()},
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
