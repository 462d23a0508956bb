"""Shared land-cover fixtures: one tiny synthetic dataset per test session.

The dataset (``write_synthetic_dataset(size="tiny", seed=0)``, about 2 s) holds the source
city ``synthsource_pa-2010`` (train / val / test) and three target cities with one test
tile each, all 128 x 128 px at 1 m in the EnviroAtlas layout. It is shared by every test
of the session, so tests must treat it as READ ONLY: write outputs under ``tmp_path``.
The geodata imports wait for the first fixture call, so tests that need no raster I/O (the
CUDA parity checks) also run on a GPU machine without GDAL / rasterio.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from landprior.landcover.enviroatlas import EnviroAtlas

SOURCE_CITY = "synthsource_pa-2010"
TARGET_CITY = "synthgreen_nc-2012"
TILE_SIZE = 128


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root folder of the tiny synthetic dataset (read only)."""
    from landprior.landcover.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(
        tmp_path_factory.mktemp("landcover-data") / "tiny", size="tiny", seed=0
    )


@pytest.fixture(scope="session")
def tiny_dataset(tiny_root: Path) -> EnviroAtlas:
    """The tiny synthetic dataset opened with the EnviroAtlas reader."""
    from landprior.landcover.enviroatlas import EnviroAtlas

    return EnviroAtlas(tiny_root)
