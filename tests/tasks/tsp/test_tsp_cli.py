"""`landprior tsp generate | reference | baseline | render-dataset`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from landprior.cli import main
from landprior.tasks.tsp.data import kool_test_set, read_instances
from landprior.tasks.tsp.extract import baseline_tours


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("LANDPRIOR_CACHE_DIR", str(tmp_path / "cache"))
    return CliRunner()


def _json(output: str) -> dict:
    return json.loads(output[output.index("{") :])


def test_generate_solve_reference_baseline(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "k.txt"
    args = ["tsp", "generate", "--n", "12", "--count", "6", "--kool", "--solve", "--out", path]
    result = runner.invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    records = read_instances(path)
    np.testing.assert_array_equal(np.stack([r.points for r in records]), kool_test_set(12, 6))
    assert all(r.tour is not None for r in records)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 6

    ref = runner.invoke(main, ["tsp", "reference", "--instances", str(path), "--json"])
    assert ref.exit_code == 0, ref.output
    ref_out = _json(ref.output)
    assert ref_out["n_instances"] == 6 and ref_out["n_from_cache"] == 6
    assert ref_out["gap_pct"] == pytest.approx(0.0, abs=1e-9)

    for method in ("greedy", "nn-two-opt"):
        base = runner.invoke(
            main,
            ["tsp", "baseline", "--instances", str(path), "--method", method, "--limit", "4",
             "--json"],
        )  # fmt: skip
        assert base.exit_code == 0, base.output
        out = _json(base.output)
        for key in ("n_instances", "mean_length", "mean_reference_length", "gap_pct",
                    "two_opt_moves_mean", "seconds_per_instance"):  # fmt: skip
            assert key in out
        assert out["n_instances"] == 4 and out["gap_pct"] >= -1e-9
        assert out["mean_length"] >= out["mean_reference_length"] - 1e-9


def test_baseline_without_tours_and_bad_file(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "u.txt"
    result = runner.invoke(
        main, ["tsp", "generate", "--n", "8", "--count", "3", "--seed", "1", "--out", str(path)]
    )
    assert result.exit_code == 0, result.output
    out = _json(runner.invoke(main, ["tsp", "baseline", "--instances", str(path), "--json"]).output)
    assert out["gap_pct"] is None and out["mean_reference_length"] is None
    bad = tmp_path / "bad.txt"
    bad.write_text(path.read_text() + "0.1 0.2 0.3\n")
    failed = runner.invoke(main, ["tsp", "baseline", "--instances", str(bad), "--json"])
    assert failed.exit_code != 0
    assert f"{bad}:4: odd number of coordinates" in failed.output


def test_baseline_kernels_give_the_same_tours(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "u.txt"
    result = runner.invoke(
        main, ["tsp", "generate", "--n", "30", "--count", "5", "--seed", "2", "--out", str(path)]
    )
    assert result.exit_code == 0, result.output
    lengths = {}
    for kernel in ("compiled", "pruned", "dense"):
        out = runner.invoke(
            main,
            ["tsp", "baseline", "--instances", str(path), "--method", "two-opt",
             "--two-opt-kernel", kernel, "--json"],
        )  # fmt: skip
        assert out.exit_code == 0, out.output
        summary = _json(out.output)
        assert summary["two_opt_kernel"] == kernel and summary["two_opt_moves_mean"] > 0
        lengths[kernel] = (summary["mean_length"], summary["two_opt_moves_mean"])
    assert lengths["compiled"] == lengths["pruned"] == lengths["dense"]

    # best of several random starts: never longer than the first start alone
    many = runner.invoke(
        main,
        ["tsp", "baseline", "--instances", str(path), "--method", "two-opt", "--starts", "4",
         "--json"],
    )  # fmt: skip
    assert many.exit_code == 0, many.output
    summary = _json(many.output)
    assert summary["starts"] == 4 and summary["mean_length"] <= lengths["compiled"][0]
    wrong = runner.invoke(
        main, ["tsp", "baseline", "--instances", str(path), "--method", "greedy", "--starts", "2"]
    )
    assert wrong.exit_code == 2 and "needs --method two-opt" in wrong.output


def test_render_dataset(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "d.npy"
    result = runner.invoke(
        main, ["tsp", "render-dataset", "--n", "8", "--count", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (3, 1, 64, 64)
    wrong = runner.invoke(
        main, ["tsp", "render-dataset", "--n", "8", "--count", "3", "--out", str(tmp_path / "x")]
    )
    assert wrong.exit_code != 0 and ".npy" in wrong.output


@pytest.mark.parametrize("seed", ["0", "7"])
def test_generate_kool_refuses_an_explicit_seed(
    runner: CliRunner, tmp_path: Path, seed: str
) -> None:
    """The Kool et al. test set is fixed: --seed (even its default value, typed out) used to
    be ignored without a word."""
    out = tmp_path / "k.txt"
    args = ["tsp", "generate", "--kool", "--n", "10", "--count", "2", "--seed", seed,
            "--out", str(out)]  # fmt: skip
    result = runner.invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"--seed {seed} does not apply with --kool" in result.output
    assert "test set is fixed" in result.output and not out.exists()


def test_generate_kool_count_is_at_most_the_test_set(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "k.txt"
    args = ["tsp", "generate", "--kool", "--n", "10", "--count", "10001", "--out", str(out)]
    result = runner.invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "--count" in result.output and "has 10000 instances, asked for 10001" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not out.exists()


def test_a_truncated_tsplib_tour_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    """A .opt.tour cut short (no -1) beside a .tsp: one error line naming the tour file."""
    tsp = tmp_path / "sq.tsp"
    coords = "".join(f"{k + 1} {x} {y}\n" for k, (x, y) in enumerate([(0, 0), (9, 0), (9, 9),
                                                                     (0, 9), (4, 5)]))
    tsp.write_text("NAME : sq\nDIMENSION : 5\nEDGE_WEIGHT_TYPE : EUC_2D\nNODE_COORD_SECTION\n"
                   + coords + "EOF\n")  # fmt: skip
    tour = tmp_path / "sq.opt.tour"
    tour.write_text("NAME : sq.opt.tour\nTYPE : TOUR\nDIMENSION : 5\nTOUR_SECTION\n1\n2\n3\n")
    result = runner.invoke(main, ["tsp", "baseline", "--instances", str(tsp)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {tour}: TOUR_SECTION does not end with -1 (it stops at line 7 after 3 of 5 "
        "nodes): the file looks truncated; expected node ids 1..5 ended by -1"
    )


def _user_unit_instances(path: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three 9-city instances in metres (x in [500, 4000]) with random tours, written to path."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(500.0, 4000.0, (3, 9, 2)).round(2)
    tours = np.stack([rng.permutation(9) for _ in range(3)])
    lines = [
        " ".join(f"{v:.2f}" for v in pts.ravel())
        + " output " + " ".join(str(v + 1) for v in [*tour, tour[0]])
        for pts, tour in zip(points, tours, strict=True)
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return points, tours


def _lengths_on(points: np.ndarray, tours: np.ndarray) -> np.ndarray:
    closed = np.concatenate([tours, tours[:, :1]], axis=1)
    ordered = np.take_along_axis(points, closed[..., None], axis=1)
    return np.linalg.norm(np.diff(ordered, axis=1), axis=-1).sum(-1)


def test_reference_and_baseline_lengths_are_in_the_input_units(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Instances in metres: mean_length and mean_reference_length are metres (they were the
    lengths in the unit square each instance was scaled to); the unit-square figures stay
    under *_unit_square, and the gap is the ratio of the printed means."""
    src = tmp_path / "metres.txt"
    points, file_tours = _user_unit_instances(src, seed=5)
    file_metres = _lengths_on(points, file_tours)
    scaled = read_instances(src)
    unit_square = np.stack([r.points for r in scaled])

    out = tmp_path / "solved.txt"
    ref = runner.invoke(main, ["tsp", "reference", "--instances", str(src), "--no-cache",
                               "--out", str(out), "--json"])  # fmt: skip
    assert ref.exit_code == 0, ref.output
    summary = _json(ref.output)
    solved = np.stack([r.tour for r in read_instances(out)])
    assert summary["mean_length"] == pytest.approx(_lengths_on(points, solved).mean(), rel=1e-9)
    assert summary["mean_reference_length"] == pytest.approx(file_metres.mean(), rel=1e-9)
    assert summary["mean_length_unit_square"] == pytest.approx(
        _lengths_on(unit_square, solved).mean(), rel=1e-9
    )
    assert summary["mean_reference_length_unit_square"] == pytest.approx(
        _lengths_on(unit_square, file_tours).mean(), rel=1e-9
    )
    assert summary["mean_length"] > 1000 > 10 > summary["mean_length_unit_square"]
    shorter = _lengths_on(unit_square, solved) < _lengths_on(unit_square, file_tours) - 1e-9
    assert summary["n_shorter_than_file"] == int(shorter.sum()) > 0  # random file tours
    assert summary["gap_pct"] == pytest.approx(
        100 * (summary["mean_length"] / summary["mean_reference_length"] - 1)
    )
    text = runner.invoke(main, ["tsp", "reference", "--instances", str(src), "--no-cache"])
    assert f"mean_length: {summary['mean_length']}" in text.output.splitlines()

    base = runner.invoke(main, ["tsp", "baseline", "--instances", str(src), "--json"])
    assert base.exit_code == 0, base.output
    summary = _json(base.output)
    assert summary["mean_reference_length"] == pytest.approx(file_metres.mean(), rel=1e-9)
    assert summary["mean_length"] > 1000 > 10 > summary["mean_length_unit_square"]
    expected = baseline_tours(unit_square, "nn-two-opt").lengths  # the command's default
    assert summary["mean_length_unit_square"] == pytest.approx(expected.mean(), rel=1e-9)
    scales = np.array([r.scale for r in scaled])
    assert summary["mean_length"] == pytest.approx((expected * scales).mean(), rel=1e-9)
