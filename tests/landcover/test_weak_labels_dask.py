"""`landprior data weak-labels --scheduler`: the weak-label dask graphs on a dask.distributed
cluster give the same GeoTIFFs as the in-process computation (DESIGN convention 11).

The cluster is a LocalCluster on loopback TCP (so tasks really are serialised to the worker);
the tests' no-network guard lets loopback through.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from landprior.cli import main

distributed = pytest.importorskip("distributed")

SOURCE = "synthsource_pa-2010"
# Small blur and chunks: each 128 px tile is 2 x 2 chunks whose halos cross chunk borders.
SMALL = ["--blur-kernel", "21", "--blur-sigma", "6", "--chunk", "64"]


@pytest.fixture
def dataset(tiny_root: Path) -> Path:
    """The session's tiny synthetic dataset (tests/landcover/conftest.py), read only."""
    return tiny_root


def local_cluster(n_workers: int) -> distributed.LocalCluster:
    """In-process cluster on loopback TCP: no dashboard, its HTTP server on a free port."""
    return distributed.LocalCluster(
        processes=False,
        n_workers=n_workers,
        threads_per_worker=1,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    with local_cluster(n_workers=1) as local:
        yield local


def run_weak_labels(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["data", "weak-labels", *args])
    return result.exit_code, result.output


def tifs(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*_weak_labels.tif"))}


def assert_same_geotiffs(a: Path, b: Path) -> None:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert (x.crs, x.transform, x.shape, x.count, x.dtypes) == (
            y.crs,
            y.transform,
            y.shape,
            y.count,
            y.dtypes,
        )
        assert x.descriptions == y.descriptions
        np.testing.assert_array_equal(x.read(), y.read())


def test_scheduler_gives_the_same_geotiffs(
    dataset: Path, cluster: distributed.LocalCluster, tmp_path: Path
) -> None:
    common = ["--root", str(dataset), "--source-city", SOURCE, *SMALL]
    code, out = run_weak_labels(*common, "--out", str(tmp_path / "local"))
    assert code == 0, out
    before = cluster.scheduler.transition_counter
    code, out = run_weak_labels(
        *common, "--out", str(tmp_path / "dask"), "--scheduler", cluster.scheduler_address
    )
    assert code == 0, out
    assert f"computing on the dask scheduler {cluster.scheduler_address}" in out
    # the chunks ran as tasks on the cluster (not in the CLI's own thread)
    assert cluster.scheduler.transition_counter > before
    local, remote = tifs(tmp_path / "local"), tifs(tmp_path / "dask")
    assert len(local) == 7 and local.keys() == remote.keys()
    for name in local:
        assert_same_geotiffs(local[name], remote[name])


def test_scheduler_single_raster_mode(
    dataset: Path,
    cluster: distributed.LocalCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nlcd = next(dataset.rglob("*_nlcd.tif"))
    cooc = tmp_path / "cooc.json"
    # a relative --nlcd path: the workers get it resolved
    monkeypatch.chdir(nlcd.parent)
    base = ["--nlcd", nlcd.name, "--source-root", str(dataset), "--source-city", SOURCE, *SMALL]
    code, out = run_weak_labels(
        *base, "--save-cooccurrence", str(cooc), "--out", str(tmp_path / "a.tif")
    )
    assert code == 0, out
    code, out = run_weak_labels(
        "--nlcd", nlcd.name, "--cooccurrence", str(cooc), *SMALL,
        "--out", str(tmp_path / "b.tif"), "--scheduler", cluster.scheduler_address,
    )  # fmt: skip
    assert code == 0, out
    assert_same_geotiffs(tmp_path / "a.tif", tmp_path / "b.tif")


def closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_fails_fast_and_clearly(dataset: Path, tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{closed_loopback_port()}"
    started = time.perf_counter()
    code, out = run_weak_labels(
        "--root", str(dataset), "--source-city", SOURCE, "--out", str(tmp_path / "w"),
        "--scheduler", address, "--scheduler-timeout", "1",
    )  # fmt: skip
    assert code == 1, out
    assert f"cannot compute on the dask scheduler {address!r}" in out
    assert "Timed out" in out
    assert time.perf_counter() - started < 15
    assert not (tmp_path / "w").exists() or not tifs(tmp_path / "w")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("not-an-address", "missing port number"),
        ("foo://127.0.0.1:1", "unknown address scheme 'foo'"),
        ("tcp://127.0.0.1", "missing port number"),
    ],
)
def test_malformed_scheduler_address_is_refused(
    dataset: Path, tmp_path: Path, address: str, expected: str
) -> None:
    code, out = run_weak_labels(
        "--root", str(dataset), "--source-city", SOURCE, "--out", str(tmp_path / "w"),
        "--scheduler", address,
    )  # fmt: skip
    assert code == 2, out  # a usage error, before any connection attempt
    assert "Invalid value for --scheduler" in out and expected in out


def test_scheduler_without_workers_fails_clearly(dataset: Path, tmp_path: Path) -> None:
    with local_cluster(n_workers=0) as empty:
        code, out = run_weak_labels(
            "--root", str(dataset), "--source-city", SOURCE, "--out", str(tmp_path / "w"),
            "--scheduler", empty.scheduler_address, "--scheduler-timeout", "1",
        )  # fmt: skip
    assert code != 0
    assert "no worker" in out and "TimeoutError" in out
