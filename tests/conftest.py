"""Shared fixtures: the real-data locator and a guard that keeps tests off the network."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest
import torch

# Test tensors are tiny: one intra-op thread avoids OpenMP hand-off costs that dominate
# small ops (and keeps timings steady when the 2 CI cores are busy).
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_data_path(*parts: str) -> Path:
    """Path inside ../shared/data, skipping the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real sample data not available: {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The ../shared/data folder; tests using it skip when it is absent."""
    return shared_data_path()


def _is_local(address: object) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # unix sockets and the like
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to reach a non-loopback address."""
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: object) -> object:
        if not _is_local(address):
            raise RuntimeError(f"tests must not use the network (tried to connect to {address})")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
