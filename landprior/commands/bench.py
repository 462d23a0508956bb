"""`landprior bench`: Benchmarks and checks against published results (print JSON)."""

from __future__ import annotations

import json
import math

import click


@click.group(name="bench")
def group() -> None:
    """Benchmarks and checks against published results (print JSON)."""


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number", ctx=ctx, param=param)
    return value


@group.command(name="lgd-mog")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--samples", default=2000, show_default=True, type=click.IntRange(min=2),
              help="Samples per method.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the torch.Generator.")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=1, max=1000),
              help="DDIM steps (at most the 1000 diffusion times).")
@click.option("--scale", default=1.0, show_default=True, type=float, callback=_finite,
              help="Guidance scale shared by every method (1 = Bayes weight with --rule score).")
@click.option("--rule", default="score", show_default=True, type=click.Choice(["score", "step"]),
              help="score: add scale * grad log p(y|x_t) to the score; step: DPS-style "
              "x_{t-1} -= scale * grad loss.")
def lgd_mog(as_json: bool, samples: int, seed: int, steps: int, scale: float, rule: str) -> None:
    """1-D check of the LGD paper (sections 4.2, 6.1): DPS vs LGD-MC on a Gaussian mixture.

    Prior 0.5 N(-1, 0.2^2) + 0.5 N(1, 0.2^2) with its analytic denoiser, logistic loss
    selecting the component at -1, 20-step DDIM. Prints KL(N(-1, 0.2^2) || fitted Gaussian)
    per method under the key "kl" (oracle, dps, lgd_mc_1, lgd_mc_5, lgd_mc_10, lgd_mc_20).
    """
    import torch

    from landprior.engine.toy import MogSettings, run_lgd_mog

    torch.set_num_threads(1)  # (2000, 1) tensors: extra threads only add synchronisation
    result = run_lgd_mog(
        MogSettings(samples=samples, seed=seed, steps=steps, scale=scale, rule=rule)  # type: ignore[arg-type]
    )
    if as_json:
        click.echo(json.dumps(result, sort_keys=False))
        return
    click.echo(
        f"LGD 1-D mixture check: {samples} samples, seed {seed}, {steps}-step DDIM, "
        f"scale {scale:g} ({rule} rule); target N(-1, 0.2^2)"
    )
    click.echo(f"{'method':<12}{'KL':>10}{'mean':>10}{'std':>9}")
    rows = {**result["kl"], **{f"({k})": v for k, v in result["kl_reference"].items()}}
    for name, kl in rows.items():
        fit = result["fit"][name.strip("()")]
        click.echo(f"{name:<12}{kl:>10.4f}{fit['mean']:>10.3f}{fit['std']:>9.3f}")
    click.echo("(exact) = DDIM with the exact guidance: the error of the sampler itself.")
