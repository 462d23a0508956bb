"""Click command groups, one module per area; registered in :mod:`landprior.cli`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def _resolve_device(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    from landprior.devices import resolve_device  # imports torch: not at --help time

    try:
        return resolve_device(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from err


def device_option(default: str = "auto") -> Callable[[Any], Any]:
    """``--device``, resolved to a ``torch.device`` by :func:`landprior.devices.resolve_device`
    when the command starts: a name torch does not know, or CUDA where there is none, is a
    one-line usage error before any work."""
    return click.option(
        "--device", default=default, show_default=True, callback=_resolve_device,
        help="torch device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N.",
    )
