"""Instances, the Kool test sets, the text and TSPLIB formats and their error messages."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from landprior.tasks.tsp.data import (
    DuplicateCitiesError,
    TSPDataError,
    check_points,
    distance_matrices,
    format_line,
    gap_pct,
    group_by_size,
    input_unit_lengths,
    is_permutation,
    kool_test_set,
    parse_line,
    read_instances,
    read_tsplib,
    read_tsplib_tour,
    tour_lengths,
    uniform_instances,
    write_instances,
)


def test_kool_first_point_and_prefix() -> None:
    first = kool_test_set(50, count=3)
    np.testing.assert_allclose(first[0, 0], [0.19151945, 0.62210877], atol=1e-8)
    # the first instances do not depend on how many are drawn, nor touch the global state
    before = np.random.get_state()  # noqa: NPY002 - the point is the legacy global state
    np.testing.assert_array_equal(kool_test_set(50, count=1)[0], first[0])
    after = np.random.get_state()  # noqa: NPY002
    assert before[2] == after[2] and np.array_equal(before[1], after[1])
    assert kool_test_set(100, count=2).shape == (2, 100, 2)
    with pytest.raises(ValueError, match="10000 instances"):
        kool_test_set(20, count=10_001)


def test_uniform_instances_seeded() -> None:
    a = uniform_instances(4, 10, seed=3)
    assert a.shape == (4, 10, 2) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, uniform_instances(4, 10, seed=3))
    assert not np.array_equal(a, uniform_instances(4, 10, seed=4))
    with pytest.raises(ValueError, match="at least 4"):
        uniform_instances(1, 3)


def test_tour_lengths_batched_matches_loop() -> None:
    pts = uniform_instances(5, 12, seed=1)
    rng = np.random.default_rng(0)
    tours = np.stack([rng.permutation(12) for _ in range(5)])
    expected = [
        sum(np.hypot(*(p[t[k]] - p[t[(k + 1) % 12]])) for k in range(12))
        for p, t in zip(pts, tours, strict=True)
    ]
    np.testing.assert_allclose(tour_lengths(pts, tours), expected, rtol=1e-12)
    assert float(tour_lengths(pts[0], tours[0])) == pytest.approx(expected[0])
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    assert float(tour_lengths(square, np.arange(4))) == pytest.approx(4.0)
    assert gap_pct(np.array([4.4]), np.array([4.0])) == pytest.approx(10.0)


def test_distance_matrices_symmetric_exact() -> None:
    d = distance_matrices(uniform_instances(2, 9, seed=2))
    assert d.shape == (2, 9, 9)
    np.testing.assert_array_equal(d, d.transpose(0, 2, 1))
    np.testing.assert_array_equal(np.diagonal(d, axis1=1, axis2=2), 0.0)


def test_text_round_trip_bit_exact(tmp_path: Path) -> None:
    pts = uniform_instances(3, 7, seed=5)
    tours = [np.random.default_rng(k).permutation(7) for k in range(3)]
    path = write_instances(tmp_path / "a.txt", pts, [tours[0], None, tours[2]])
    back = read_instances(path)
    assert len(back) == 3
    for k, inst in enumerate(back):
        np.testing.assert_array_equal(inst.points, pts[k])
        assert inst.where == f"{path}:{k + 1}"
    np.testing.assert_array_equal(back[0].tour, tours[0])
    assert back[1].tour is None
    line = format_line(pts[0], tours[0]).split()
    assert line[14] == "output" and line[15] == line[-1] == str(tours[0][0] + 1)
    assert len(line) == 14 + 1 + 8
    assert len(read_instances(path, limit=2)) == 2
    assert group_by_size(back) == {7: [0, 1, 2]}


def test_parse_line_accepts_open_tour_and_comments(tmp_path: Path) -> None:
    inst = parse_line("0 0 1 0 1 1 0 1 output 1 2 3 4")
    np.testing.assert_array_equal(inst.tour, [0, 1, 2, 3])
    path = tmp_path / "c.txt"
    path.write_text("# comment\n\n0 0 1 0 1 1 0 1 output 1 4 3 2 1\n")
    (only,) = read_instances(path)
    np.testing.assert_array_equal(only.tour, [0, 3, 2, 1])
    assert only.where.endswith("c.txt:3")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0.1 0.2 0.3 0.4 0.5 0.6", "at least 4 cities, got 3"),
        ("0.1 0.2 0.3 0.4 0.5 0.6 0.7", "odd number of coordinates"),
        ("0.1 0.2 0.3 zero 0.5 0.6 0.7 0.8", "coordinate 4 is 'zero'"),
        ("0.1 0.2 0.3 0.4 0.5 0.6 0.7 nan", "non-finite"),
        ("0 0 1 0 1 1 0 1 output 1 2 3", "tour has 3 entries for 4 cities"),
        ("0 0 1 0 1 1 0 1 output 1 2 2 4 1", "not a permutation"),
        ("0 0 1 0 1 1 0 1 output 1 2 x 4 1", "tour entry 'x'"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    good = "0.1 0.1 0.2 0.9 0.8 0.3 0.5 0.5"
    path.write_text(f"{good}\n{good}\n{line}\n")
    with pytest.raises(TSPDataError, match=message) as info:
        read_instances(path)
    assert f"{path}:3:" in str(info.value)


def test_duplicates_error_warn_skip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "dup.txt"
    path.write_text("0.1 0.1 0.5 0.5 0.9 0.2 0.5 0.5 0.7 0.7\n0.1 0.1 0.2 0.9 0.8 0.3 0.5 0.5\n")
    with pytest.raises(DuplicateCitiesError, match=r"dup.txt:1: 1 duplicate cities"):
        read_instances(path)
    with caplog.at_level(logging.WARNING):
        assert len(read_instances(path, duplicates="warn")) == 2
        assert len(read_instances(path, duplicates="skip")) == 1
    assert "dup.txt:1" in caplog.text
    with pytest.raises(ValueError, match="duplicates must be one of"):
        check_points(np.eye(4, 2), duplicates="ignore")  # type: ignore[arg-type]


def test_outside_unit_square_normalised_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    raw = np.array([[10.0, 20.0], [30.0, 20.0], [30.0, 30.0], [10.0, 25.0]])
    with caplog.at_level(logging.WARNING):
        pts, scale, offset = check_points(raw, "f.txt:9")
    assert "f.txt:9: points lie outside the unit square" in caplog.text
    assert "keeping the aspect ratio" in caplog.text
    np.testing.assert_allclose(pts, [[0, 0], [1, 0], [1, 0.5], [0, 0.25]])
    np.testing.assert_allclose(pts * scale + np.array(offset), raw)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "e.txt").write_text("\n# nothing\n")
    with pytest.raises(TSPDataError, match="no instances"):
        read_instances(tmp_path / "e.txt")
    with pytest.raises(FileNotFoundError, match="no TSP instance file"):
        read_instances(tmp_path / "missing.txt")


def test_is_permutation() -> None:
    assert is_permutation(np.array([2, 0, 1]), 3)
    assert not is_permutation(np.array([2, 2, 1]), 3)
    assert not is_permutation(np.array([0, 1, 3]), 3)
    assert not is_permutation(np.array([0.0, 1.0, 2.0]), 3)


_TSP = """NAME : toy5
COMMENT : five cities
TYPE : TSP
DIMENSION : 5
EDGE_WEIGHT_TYPE : EUC_2D
NODE_COORD_SECTION
1 0 0
2 40 0
3 40 30
4 20 40
5 0 30
EOF
"""
_TOUR = """NAME : toy5.opt.tour
TYPE : TOUR
DIMENSION : 5
TOUR_SECTION
1
2 3
4
5
-1
EOF
"""


def test_tsplib_reader(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "toy5.tsp").write_text(_TSP)
    (tmp_path / "toy5.tour").write_text(_TOUR)
    with caplog.at_level(logging.WARNING):
        inst = read_tsplib(tmp_path / "toy5.tsp", tmp_path / "toy5.tour")
    assert "normalised" in caplog.text
    assert inst.n == 5 and inst.scale == 40.0
    np.testing.assert_array_equal(inst.tour, [0, 1, 2, 3, 4])
    perimeter = 40 + 30 + np.hypot(20, 10) + np.hypot(20, 10) + 30
    assert float(tour_lengths(inst.points, inst.tour)) * inst.scale == pytest.approx(perimeter)
    np.testing.assert_array_equal(read_tsplib_tour(tmp_path / "toy5.tour"), np.arange(5))


def test_read_instances_takes_a_tsplib_file_and_refuses_binary_files(tmp_path: Path) -> None:
    (tmp_path / "toy5.tsp").write_text(_TSP)
    (tmp_path / "toy5.opt.tour").write_text(_TOUR)
    (inst,) = read_instances(tmp_path / "toy5.tsp")
    assert inst.n == 5 and inst.scale == 40.0
    np.testing.assert_array_equal(inst.tour, np.arange(5))
    png = tmp_path / "map.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(TSPDataError, match=r"map.png: not a text file"):
        read_instances(png)


def test_tsplib_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsp"
    bad.write_text(_TSP.replace("3 40 30", "3 40 thirty"))
    with pytest.raises(TSPDataError, match=r"bad.tsp:9: coordinates '40' 'thirty'"):
        read_tsplib(bad)
    geo = tmp_path / "geo.tsp"
    geo.write_text(_TSP.replace("EUC_2D", "GEO"))
    with pytest.raises(TSPDataError, match=r"geo.tsp:5: EDGE_WEIGHT_TYPE 'GEO'"):
        read_tsplib(geo)
    short = tmp_path / "short.tsp"
    short.write_text(_TSP.replace("DIMENSION : 5", "DIMENSION : 6"))
    with pytest.raises(TSPDataError, match="DIMENSION says 6 cities"):
        read_tsplib(short)
    tour = tmp_path / "t.tour"
    tour.write_text(_TOUR.replace("2 3", "2 2"))
    with pytest.raises(TSPDataError, match=r"t.tour:9: TOUR_SECTION does not visit every node "
                       r"1..5 exactly once: node 2 appears 2 times"):  # fmt: skip
        read_tsplib_tour(tour)


@pytest.mark.parametrize(
    ("body", "n", "message"),
    [
        # cut after node 4: no -1, a node missing (with and without the EOF line)
        ("1\n2 3\n4\nEOF\n", 5, "after 4 of 5 nodes"),
        ("1\n2 3\n4\n", None, "after 4 of 5 nodes"),  # n from the tour's DIMENSION
        ("1\n2 3\n", 5, "stops at line 6 after 3 of 5 nodes"),
    ],
)
def test_tsplib_tour_cut_short_is_an_error(
    tmp_path: Path, body: str, n: int | None, message: str
) -> None:
    """A TOUR_SECTION that does not end with -1 is a truncated file: one error naming it."""
    tour = tmp_path / "cut.tour"
    tour.write_text(_TOUR.split("TOUR_SECTION\n")[0] + "TOUR_SECTION\n" + body)
    with pytest.raises(TSPDataError) as info:
        read_tsplib_tour(tour, n)
    text = str(info.value)
    assert text.startswith(f"{tour}: TOUR_SECTION does not end with -1")
    assert message in text and "truncated" in text


def test_tsplib_tour_complete_but_without_minus_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """All n nodes once, n known (the instance or DIMENSION), only the -1 missing: nothing is
    lost, so the tour is used with a warning; with no n to check against it is refused."""
    tour = tmp_path / "open.tour"
    tour.write_text(_TOUR.replace("-1\n", ""))
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(read_tsplib_tour(tour, 5), np.arange(5))
        np.testing.assert_array_equal(read_tsplib_tour(tour), np.arange(5))
    assert "open.tour: TOUR_SECTION does not end with -1; used anyway" in caplog.text
    no_dimension = tmp_path / "nodim.tour"
    no_dimension.write_text(_TOUR.replace("-1\n", "").replace("DIMENSION : 5\n", ""))
    with pytest.raises(TSPDataError, match=r"nodim.tour: TOUR_SECTION does not end with -1"):
        read_tsplib_tour(no_dimension)


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("1 2 3 4 5 1 -1", "node 1 appears 2 times"),  # closed like the text format
        ("1 2 3 4 -1", "1 of 5 nodes are missing (e.g. node 5)"),
        ("1 2 3 4 6 -1", "node 6 is outside 1..5"),
        ("0 1 2 3 4 -1", "node 0 is outside 1..5"),  # 0-indexed by mistake
        ("-1", "it lists no nodes"),
    ],
)
def test_tsplib_tour_must_visit_every_node_once(
    tmp_path: Path, section: str, problem: str
) -> None:
    tour = tmp_path / "bad.tour"
    tour.write_text(_TOUR.split("TOUR_SECTION\n")[0] + f"TOUR_SECTION\n{section}\nEOF\n")
    with pytest.raises(TSPDataError) as info:
        read_tsplib_tour(tour, 5)
    assert str(info.value) == (
        f"{tour}:5: TOUR_SECTION does not visit every node 1..5 exactly once: {problem}"
    )


def test_tsplib_tour_of_another_instance(tmp_path: Path) -> None:
    (tmp_path / "toy5.tsp").write_text(_TSP)
    (tmp_path / "toy5.opt.tour").write_text(_TOUR.replace("DIMENSION : 5", "DIMENSION : 6"))
    with pytest.raises(TSPDataError, match=r"toy5.opt.tour:3: DIMENSION is 6 but the instance "
                       "has 5 cities"):  # fmt: skip
        read_instances(tmp_path / "toy5.tsp")


def test_input_unit_lengths_measure_on_the_original_points(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    metres = rng.uniform(-300.0, 9000.0, (4, 7, 2))
    tours = np.stack([rng.permutation(7) for _ in range(4)])
    records = read_instances(write_instances(tmp_path / "m.txt", metres, tours))
    unit = np.array([float(tour_lengths(r.points, r.tour)) for r in records])
    np.testing.assert_allclose(
        input_unit_lengths(unit, records), tour_lengths(metres, tours), rtol=1e-12
    )
    with pytest.raises(ValueError, match="expected 4 lengths"):
        input_unit_lengths(unit[:3], records)
