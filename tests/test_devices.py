"""``--device`` resolution: one rule for every command, clear errors before any work."""

from __future__ import annotations

import pytest
import torch

from landprior.devices import resolve_device

HAS_CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("name", ["auto", None])
def test_auto_picks_cuda_when_present_else_cpu(name: str | None) -> None:
    assert resolve_device(name).type == ("cuda" if HAS_CUDA else "cpu")


def test_cpu_by_name_and_as_a_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "match"),
    [("gpu0", "unknown device 'gpu0'"), ("meta", "only 'cpu' and 'cuda' devices")],
)
def test_unknown_or_unsupported_devices_are_named(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_device(name)


@pytest.mark.skipif(HAS_CUDA, reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_says_so() -> None:
    with pytest.raises(ValueError, match="sees no CUDA GPU; use --device cpu or auto"):
        resolve_device("cuda")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_index_past_the_last_gpu() -> None:
    assert resolve_device("cuda:0").type == "cuda"
    with pytest.raises(ValueError, match="CUDA GPU"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
