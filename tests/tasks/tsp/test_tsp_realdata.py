"""The 29 real TSPLIB instances of ../shared/data/tsp (skipped when the folder is absent)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from landprior.tasks.tsp.data import DuplicateCitiesError, read_instances, tour_lengths
from landprior.tasks.tsp.extract import two_opt
from landprior.tasks.tsp.solvers import solve_instance
from tests.conftest import shared_data_path

pytestmark = pytest.mark.realdata

# (cities, length of the file's optimal tour in the file's normalised coordinates), by line;
# computed once with math.dist over the closed tour. Lines 4 (n = 198) and 25 (n = 159)
# are degenerate in this extract: many repeated cities, and line 25 has every y = 3.0.
STATED = [
    (100, 3.748192), (105, 7.266575), (150, 9.332109), (198, 3.300685), (130, 8.841255),
    (100, 8.031588), (52, 5.483177), (51, 7.088177), (100, 7.764016), (150, 9.420173),
    (107, 5.837852), (200, 10.622659), (76, 6.878981), (136, 9.241423), (195, 13.181986),
    (100, 7.963382), (150, 9.311298), (127, 7.114714), (100, 7.596585), (76, 8.018321),
    (124, 6.383091), (101, 9.232109), (70, 7.072347), (99, 9.053141), (159, 2.000000),
    (200, 10.544048), (152, 6.403331), (144, 6.306695), (100, 7.863189),
]  # fmt: skip


@pytest.fixture(scope="module")
def tsplib_file():
    return shared_data_path("tsp", "tsplib50-200.txt")


def test_tsplib_parses_with_stated_tour_lengths(
    tsplib_file, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        records = read_instances(tsplib_file, duplicates="warn")
    assert len(records) == 29
    assert "tsplib50-200.txt:25: points lie outside the unit square" in caplog.text
    for k, (rec, (n, length)) in enumerate(zip(records, STATED, strict=True)):
        assert rec.n == n and rec.tour is not None, k
        assert rec.where.endswith(f":{k + 1}")
        assert float(tour_lengths(rec.points, rec.tour)) == pytest.approx(length, abs=2e-6)
    # strict reading names the first degenerate line; skipping keeps the 27 clean ones
    with pytest.raises(DuplicateCitiesError, match=r"tsplib50-200.txt:4: 130 duplicate"):
        read_instances(tsplib_file)
    assert len(read_instances(tsplib_file, duplicates="skip")) == 27


def test_tsplib_tours_are_near_optimal_for_our_tools(tsplib_file) -> None:
    records = read_instances(tsplib_file, limit=8, duplicates="skip")
    small = [r for r in records if r.n <= 52]  # eil51 and berlin52 in this extract
    assert len(small) == 2
    for rec in small:
        given = float(tour_lengths(rec.points, rec.tour))
        ours = float(tour_lengths(rec.points, solve_instance(rec.points)))
        assert ours == pytest.approx(given, rel=5e-3)
        # an optimal tour is a 2-opt local optimum (up to the per-axis normalisation
        # of this extract, which may leave a few tiny improving moves)
        polished = two_opt(rec.points[None], rec.tour[None])
        assert float(tour_lengths(rec.points, polished.tours[0])) >= given * (1 - 5e-3)
    assert all(np.isfinite(r.points).all() for r in records)
