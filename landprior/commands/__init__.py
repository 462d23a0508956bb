"""Click command groups, one module per area; registered in :mod:`landprior.cli`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

DEVICE_HELP = "torch device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N."
"""Help of every ``--device`` whose default is ``auto`` (or None, which means auto)."""


def _resolve_device(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    from landprior.devices import resolve_device  # imports torch: not at --help time

    try:
        return resolve_device(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from err


def _check_device_name(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Like :func:`_resolve_device`, but keep the name (None: auto), which a training run
    stores in its checkpoint (and compares on resume)."""
    if value is not None:
        _resolve_device(ctx, param, value)
    return value


def train_device_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--device`` of the training commands: checked when the command starts (CUDA asked
    for where there is none is a usage error before the data are loaded), passed on by name."""
    return click.option("--device", default=None, show_default="auto", help=DEVICE_HELP,
                        callback=_check_device_name)(fn)


def device_option(default: str = "auto") -> Callable[[Any], Any]:
    """``--device``, resolved to a ``torch.device`` by :func:`landprior.devices.resolve_device`
    when the command starts: a name torch does not know, or CUDA where there is none, is a
    one-line usage error before any work."""
    help_text = DEVICE_HELP  # show_default names the default, whatever it is
    if default == "cpu":  # do not suggest auto is the default: say a GPU needs asking for
        help_text = ("torch device: cpu, cuda, cuda:N or auto (CUDA when present, else CPU); "
                     "a GPU is used only when asked for.")
    return click.option(
        "--device", default=default, show_default=True, callback=_resolve_device,
        help=help_text,
    )


def clustering_em_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The local Gaussian-mixture EM options shared by ``data cluster`` and ``landcover
    cluster`` (one set of ranges and defaults: paper section 4's 15 x 15 windows)."""
    options = [
        click.option("--radius", type=click.IntRange(min=0), default=7, show_default=True,
                     help="EM window radius in model (x1/factor) pixels: 7 -> 15x15."),
        click.option("--iterations", type=click.IntRange(min=1), default=30, show_default=True,
                     help="EM iterations in all, warm-up included."),
        click.option("--warmup-iterations", type=click.IntRange(min=0), default=5,
                     show_default=True,
                     help="First EM iterations that use --warmup-radius instead of --radius."),
        click.option("--warmup-radius", type=click.IntRange(min=0), default=15,
                     show_default=True,
                     help="EM window radius of the warm-up iterations, in model pixels."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of the random initial cluster responsibilities."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
