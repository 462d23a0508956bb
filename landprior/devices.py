"""Which torch device a command runs on: ``auto`` (CUDA when present, else CPU) or a name.

One place for the rule, so that ``--device`` means the same in every command and a device
that cannot be used fails before any work starts, with a line that says why.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

AUTO = "auto"


def resolve_device(name: str | torch.device | None = AUTO) -> torch.device:
    """``"auto"`` / None -> ``cuda`` if available else ``cpu``; otherwise the named device.

    Raises ValueError for a name torch does not know, for ``cuda`` on a machine or torch
    build without CUDA, and for a CUDA index past the last GPU.
    """
    if name is None or name == AUTO:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        log.debug("device auto -> %s", device)
        return device
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"unknown device {name!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA "
                "GPU; use --device cpu or auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r} asked for, but only {count} CUDA GPU(s) exist")
    elif device.type != "cpu":
        raise ValueError(f"device {name!r}: only 'cpu' and 'cuda' devices are supported")
    return device
