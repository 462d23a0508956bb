"""The random states a resumed training run restores, so that it continues step for step.

One format for every training loop: the loop's own generator (batches, timesteps, noise,
flips), torch's global stream (dropout) and, on a GPU, the device's stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def capture_rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The states of ``generator``, torch's global CPU stream and ``device``'s CUDA stream."""
    state: dict[str, Any] = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(
    state: Mapping[str, Any], generator: torch.Generator, device: torch.device
) -> None:
    """Put back what :func:`capture_rng_state` saved (the CUDA stream only on a GPU)."""
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
