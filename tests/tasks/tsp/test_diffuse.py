"""The diffusion TSP solver (paper section 5) on a tiny untrained U-Net, and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from landprior.cli import main
from landprior.diffusion.denoiser import EpsDenoiser, freeze
from landprior.diffusion.schedule import NoiseSchedule
from landprior.diffusion.train import TrainConfig, train
from landprior.diffusion.unet import UNetConfig
from landprior.tasks.tsp.adjacency import adjacency_from_logits
from landprior.tasks.tsp.data import (
    is_permutation,
    tour_lengths,
    uniform_instances,
    write_instances,
)
from landprior.tasks.tsp.diffuse import (
    ChunkStep,
    DiffusionSolverConfig,
    TSPPriorError,
    check_prior_config,
    instance_seed,
    load_prior,
    sample_seeds,
    solve,
    solve_instances,
)
from landprior.tasks.tsp.extract import random_tours, tours_from_adjacency
from landprior.tasks.tsp.render import render_tours

STEPS = 4
# 64x64, one channel, four levels and no attention: milliseconds per call
TINY = UNetConfig.preset(
    "tiny", image_size=64, in_channels=1, channel_mult=(1, 1, 2, 2), attention_resolutions=()
)
SOLVE_KEYS = (
    "n_instances", "mean_length", "mean_reference_length", "gap_pct", "two_opt_moves_mean",
    "seconds_per_instance", "steps", "n",
)  # fmt: skip


@pytest.fixture(scope="module")
def prior() -> tuple[EpsDenoiser, NoiseSchedule]:
    """An untrained tiny prior with random weights everywhere.

    guided-diffusion U-Nets zero-initialise their output convolution, so a fresh network
    predicts eps = 0 and gives L no gradient at all; random weights make it a real test.
    """
    torch.manual_seed(0)
    net = TINY.build()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return freeze(EpsDenoiser(net)), NoiseSchedule.from_name("linear", 1000)


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    return uniform_instances(6, 10, seed=3)


def _config(**changes: object) -> DiffusionSolverConfig:
    return DiffusionSolverConfig(**{"steps": STEPS, "batch_size": 4, **changes})  # type: ignore[arg-type]


def test_solve_gives_hamiltonian_cycles(prior, points) -> None:
    result = solve(*prior, points, config=_config(), seed=0)
    assert result.tours.shape == (6, 10) and result.steps == STEPS
    assert all(is_permutation(t, 10) for t in result.tours)
    np.testing.assert_allclose(result.lengths, tour_lengths(points, result.tours))
    assert (result.moves >= 0).all()
    assert set(result.seconds) == {"rasters", "inference", "extraction", "total"}
    assert result.adjacency is None


def test_deterministic_under_a_seed(prior, points) -> None:
    a = solve(*prior, points, config=_config(), seed=5, keep_adjacency=True)
    b = solve(*prior, points, config=_config(), seed=5, keep_adjacency=True)
    c = solve(*prior, points, config=_config(), seed=6, keep_adjacency=True)
    np.testing.assert_array_equal(a.adjacency, b.adjacency)
    np.testing.assert_array_equal(a.tours, b.tours)
    assert not np.array_equal(a.adjacency, c.adjacency)
    # A is symmetric, zero on the diagonal, each row of S sums to 1 so rows of A sum to 2
    adj = a.adjacency
    np.testing.assert_allclose(adj, adj.transpose(0, 2, 1), atol=1e-6)
    np.testing.assert_allclose(adj.sum(-1).mean(-1), 2.0, atol=1e-5)


def test_callback_and_the_prior_moves_the_logits(prior, points) -> None:
    seen: list[ChunkStep] = []
    result = solve(
        *prior, points, config=_config(), seed=0, callback=seen.append, keep_adjacency=True
    )
    assert [(s.first, s.size, s.step.index) for s in seen] == [
        (first, size, i) for first, size in ((0, 4), (4, 2)) for i in range(STEPS)
    ]
    assert all(s.n == 10 and s.step.log_c is None for s in seen)  # the prior alone
    assert seen[0].step.x.shape == (4, 1, 64, 64)
    assert seen[0].step.lr == pytest.approx(1.0) and seen[-1].step.lr < 1.0
    start = torch.randn(10, 10, generator=torch.Generator().manual_seed(instance_seed(0, 5)))
    a0 = adjacency_from_logits(start[None]).numpy()[0]
    assert np.abs(result.adjacency[5] - a0).max() > 1e-3


def test_problems_in_a_batch_do_not_interact(prior, points) -> None:
    other = points.copy()
    other[1:] = uniform_instances(5, 10, seed=99)
    a = solve(*prior, points, config=_config(batch_size=6), seed=1, keep_adjacency=True)
    b = solve(*prior, other, config=_config(batch_size=6), seed=1, keep_adjacency=True)
    np.testing.assert_array_equal(a.tours[0], b.tours[0])
    np.testing.assert_allclose(a.adjacency[0], b.adjacency[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a.adjacency[1:], b.adjacency[1:])


def test_batched_run_equals_separate_runs(prior, points) -> None:
    """Chunking by batch_size is transparent: the same as solving each chunk on its own."""
    whole = solve(*prior, points[:4], config=_config(batch_size=2), seed=2, keep_adjacency=True)
    for lo in (0, 2):
        part = solve(
            *prior, points[lo : lo + 2], config=_config(batch_size=2), seed=2,
            ids=[lo, lo + 1], keep_adjacency=True,
        )  # fmt: skip
        np.testing.assert_array_equal(part.tours, whole.tours[lo : lo + 2])
        np.testing.assert_allclose(part.adjacency, whole.adjacency[lo : lo + 2], atol=1e-6)
        np.testing.assert_array_equal(part.moves, whole.moves[lo : lo + 2])
    # batch of one, instance by instance: the per-instance path of the same solver
    single = solve(*prior, points[3:4], config=_config(batch_size=1), seed=2, ids=[3])
    one_by_one = solve(*prior, points[:4], config=_config(batch_size=1), seed=2)
    np.testing.assert_array_equal(single.tours[0], one_by_one.tours[3])


def test_batch_size_does_not_change_an_instance(prior, points) -> None:
    """Every instance's noise comes from its own (seed, id): batch size 1, 3, 6 agree."""
    runs = [
        solve(*prior, points, config=_config(batch_size=bs), seed=5, keep_adjacency=True)
        for bs in (1, 3, 6)
    ]
    for other in runs[1:]:
        np.testing.assert_allclose(other.adjacency, runs[0].adjacency, atol=1e-4)
        np.testing.assert_array_equal(other.tours, runs[0].tours)
    # and a different seed is a different draw
    moved = solve(*prior, points, config=_config(batch_size=3), seed=6, keep_adjacency=True)
    assert not np.allclose(moved.adjacency, runs[0].adjacency, atol=1e-3)


def test_per_row_seeds_match_one_seed_per_call(prior, points) -> None:
    """seed=[s_0, s_1, ...] draws row k from (s_k, ids[k]) as a call with seed s_k would."""
    rows = solve(*prior, points[[0, 0, 1]], config=_config(), seed=[5, 6, 6], ids=[0, 0, 1],
                 keep_adjacency=True)  # fmt: skip
    five = solve(*prior, points[:1], config=_config(), seed=5, keep_adjacency=True)
    six = solve(*prior, points[:2], config=_config(), seed=6, keep_adjacency=True)
    np.testing.assert_allclose(rows.adjacency[0], five.adjacency[0], atol=1e-4)
    np.testing.assert_allclose(rows.adjacency[1:], six.adjacency, atol=1e-4)
    assert not np.allclose(rows.adjacency[0], rows.adjacency[1], atol=1e-3)
    with pytest.raises(ValueError, match="seed has 2 entries for 3 instances"):
        solve(*prior, points[:3], config=_config(), seed=[1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        solve(*prior, points[:2], config=_config(), seed=[1, -2])


def test_two_opt_never_lengthens_the_greedy_tour(prior, points) -> None:
    full = solve(*prior, points, config=_config(), seed=4, keep_adjacency=True)
    greedy = solve(*prior, points, config=_config(two_opt=False), seed=4)
    assert (full.lengths <= full.greedy_lengths + 1e-12).all()
    np.testing.assert_array_equal(greedy.lengths, greedy.greedy_lengths)
    np.testing.assert_allclose(full.greedy_lengths, greedy.lengths)
    assert (greedy.moves == 0).all()
    # the same as the package's extraction seam on the same A
    ref = tours_from_adjacency(full.adjacency, points)
    np.testing.assert_array_equal(ref.tours, full.tours)
    np.testing.assert_array_equal(ref.moves, full.moves)


def test_mixed_sizes_are_grouped(prior) -> None:
    small, large = uniform_instances(2, 8, seed=7), uniform_instances(3, 10, seed=8)
    mixed = [large[0], small[0], large[1], small[1], large[2]]
    out = solve_instances(*prior, mixed, config=_config(), seed=0)
    assert out.groups == {8: [1, 3], 10: [0, 2, 4]}
    assert [len(t) for t in out.tours] == [10, 8, 10, 8, 10]
    alone = solve(*prior, small, config=_config(), seed=0, ids=[1, 3])
    np.testing.assert_array_equal(np.stack([out.tours[1], out.tours[3]]), alone.tours)
    np.testing.assert_allclose(out.lengths[[1, 3]], alone.lengths)


def test_best_of_k_samples_keeps_the_shortest_tour(prior, points) -> None:
    one = solve_instances(*prior, list(points), config=_config(), seed=5)
    three = solve_instances(*prior, list(points), config=_config(samples=3), seed=5)
    others = [
        solve_instances(*prior, list(points), config=_config(), seed=s)
        for s in sample_seeds(5, 3)[1:]
    ]
    best = np.minimum.reduce([one.lengths] + [o.lengths for o in others])
    np.testing.assert_allclose(three.lengths, best)
    assert (three.lengths <= one.lengths).all()
    for k in range(len(points)):
        assert is_permutation(three.tours[k], points.shape[1])
        np.testing.assert_allclose(tour_lengths(points[k], three.tours[k]), three.lengths[k])
    with pytest.raises(ValueError, match="samples"):
        DiffusionSolverConfig(samples=0)


def test_bad_settings_and_inputs(prior, points) -> None:
    with pytest.raises(ValueError, match="steps"):
        DiffusionSolverConfig(steps=0)
    with pytest.raises(ValueError, match="betas"):
        DiffusionSolverConfig(betas=(0.0, 1.0))
    with pytest.raises(ValueError, match="kernel"):
        DiffusionSolverConfig(kernel="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\]\^2"):
        solve(*prior, points * 3, config=_config())
    with pytest.raises(ValueError, match="at least 4 cities"):
        solve(*prior, points[:, :3], config=_config())
    with pytest.raises(ValueError, match="ids"):
        solve(*prior, points, config=_config(), ids=[0])
    with pytest.raises(TSPPriorError, match="3-channel"):
        check_prior_config(TINY.replace(in_channels=3))
    with pytest.raises(TSPPriorError, match="32x32"):
        check_prior_config(TINY.replace(image_size=32))


def test_paper_schedule_defaults() -> None:
    config = DiffusionSolverConfig()
    ts = config.t_schedule()
    assert (config.steps, config.lr, config.betas, config.lr_end) == (256, 1.0, (0.0, 0.9), 0.77)
    assert ts.shape == (256,) and int(ts[0]) == 1000 and int(ts[-1]) == 4
    assert DiffusionSolverConfig(steps=50).t_schedule().shape == (50,)


# --------------------------------------------------------------------------- CLI
def _checkpoint(folder: Path, config: UNetConfig) -> Path:
    data = np.zeros((4, config.in_channels, config.image_size, config.image_size), np.float32)
    if config.in_channels == 1 and config.image_size == 64:
        pts = uniform_instances(4, 10, seed=0)
        data = render_tours(pts, random_tours(4, 10, seed=0))
    tc = TrainConfig(steps=2, batch_size=2, ema_rate=0.0, checkpoint_every=2, seed=0)
    return train(data, config, tc, folder, progress=False).checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("prior"), TINY)


def _json(output: str) -> dict:
    return json.loads(output[output.index("{") :])


def test_cli_solve_prints_the_table_2_keys(checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "inst.txt"
    pts = uniform_instances(5, 10, seed=11)
    write_instances(path, pts, random_tours(5, 10, seed=1))
    out_path = tmp_path / "tours.txt"
    args = [
        "tsp", "solve", "--instances", path, "--checkpoint", checkpoint, "--limit", "3",
        "--steps", "3", "--batch-size", "2", "--threads", "1", "--out", out_path, "--json",
    ]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    out = _json(result.output)
    for key in SOLVE_KEYS:
        assert key in out, key
    assert out["n_instances"] == 3 and out["n"] == 10 and out["steps"] == 3
    assert out["samples"] == 1 and out["two_opt_kernel"] == "auto"
    # the file's (random) tours are the reference: 2-opt tours beat them
    assert out["mean_reference_length"] > out["mean_length"] and out["gap_pct"] < 0
    assert out["threads"] == 1 and out["checkpoint_step"] == 2
    assert len(out_path.read_text().splitlines()) == 3

    # mixed N and no tours: grouped; reference figures are null
    write_instances(path, [pts[0], uniform_instances(1, 7, seed=2)[0]])
    args = ["tsp", "solve", "--instances", path, "--checkpoint", checkpoint, "--steps", "2",
            "--json"]  # fmt: skip
    mixed = CliRunner().invoke(main, [str(a) for a in args])
    assert mixed.exit_code == 0, mixed.output
    out = _json(mixed.output)
    assert out["n"] == [7, 10] and out["gap_pct"] is None and out["mean_reference_length"] is None


def test_cli_solve_lengths_are_in_the_input_units(checkpoint: Path, tmp_path: Path) -> None:
    """Instances in metres: the printed lengths are metres, measured on the user's points
    (they were the unit-square lengths of the scaled instances); those stay under
    *_unit_square, and the gaps are ratios of the printed means."""
    from landprior.tasks.tsp.data import read_instances

    metres = uniform_instances(3, 10, seed=4) * 2500.0 + 300.0
    file_tours = random_tours(3, 10, seed=6)
    path = write_instances(tmp_path / "metres.txt", metres, file_tours)
    scaled = np.stack([r.points for r in read_instances(path)])
    out_path = tmp_path / "tours.txt"
    args = ["tsp", "solve", "--instances", path, "--checkpoint", checkpoint, "--steps", "2",
            "--threads", "1", "--out", out_path, "--json"]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    out = _json(result.output)
    tours = np.stack([r.tour for r in read_instances(out_path)])
    assert out["mean_length"] == pytest.approx(tour_lengths(metres, tours).mean(), rel=1e-9)
    assert out["mean_length_unit_square"] == pytest.approx(
        tour_lengths(scaled, tours).mean(), rel=1e-9
    )
    assert out["mean_reference_length"] == pytest.approx(
        tour_lengths(metres, file_tours).mean(), rel=1e-9
    )
    assert out["mean_reference_length_unit_square"] == pytest.approx(
        tour_lengths(scaled, file_tours).mean(), rel=1e-9
    )
    assert out["greedy_mean_length"] > 1000 > 20 > out["greedy_mean_length_unit_square"]
    for prefix in ("", "greedy_"):
        ratio = out[f"{prefix}mean_length"] / out["mean_reference_length"]
        assert out[f"{prefix}gap_pct"] == pytest.approx(100 * (ratio - 1))


def test_cli_solve_errors(checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "inst.txt"
    write_instances(path, uniform_instances(2, 10, seed=0))
    runner = CliRunner()

    def run(ckpt: Path, instances: Path = path, *extra: str) -> str:
        args = ["tsp", "solve", "--instances", instances, "--checkpoint", ckpt, "--steps", "1",
                *extra]  # fmt: skip
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code != 0
        return result.output

    assert "only 'cpu' and 'cuda' devices" in run(checkpoint, path, "--device", "mps")

    assert "checkpoint not found" in run(tmp_path / "nothing.pt")
    assert "train-prior" in run(tmp_path / "nothing.pt")
    wrong = _checkpoint(tmp_path / "rgb", TINY.replace(in_channels=3))
    assert "3-channel" in run(wrong) and "1 channel" in run(wrong)
    small = _checkpoint(tmp_path / "small", TINY.replace(image_size=32))
    assert "32x32" in run(small)
    bad = tmp_path / "bad.txt"
    bad.write_text(path.read_text().splitlines()[0] + "\n0.1 0.2 0.3\n")
    assert f"{bad}:2" in run(checkpoint, bad)
    with pytest.raises(TSPPriorError, match="not a landprior training checkpoint"):
        torch.save({"format": "other"}, tmp_path / "x.pt")
        load_prior(tmp_path / "x.pt")


def test_cli_train_prior_builds_data_and_resumes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LANDPRIOR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    base = ["tsp", "train-prior", "--out", str(out), "--n", "8", "--count", "6",
            "--batch-size", "2", "--threads", "1", "--workers", "1", "--no-progress"]  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(main, [*base, "--steps", "1"])
    assert first.exit_code == 0, first.output
    data = out / "data" / "tours-n8-count6-seed1.npy"
    assert np.load(data).shape == (6, 1, 64, 64)
    assert json.loads(data.with_suffix(".json").read_text())["seed"] == 1
    again = runner.invoke(main, [*base, "--steps", "2"])
    assert again.exit_code != 0 and "--resume" in again.output
    resumed = runner.invoke(main, [*base, "--steps", "2", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "step 2" in resumed.output
    prior = load_prior(out)
    assert prior.meta["step"] == 2 and prior.meta["unet_config"].name == "tsp-cpu"
    # --init-from a network of another preset fails before anything is rendered
    fresh = tmp_path / "ft"
    bad = runner.invoke(main, ["tsp", "train-prior", "--out", str(fresh), "--n", "8",
                               "--count", "6", "--steps", "1", "--preset", "tsp64",
                               "--init-from", str(out), "--no-progress"])  # fmt: skip
    assert bad.exit_code != 0 and "cannot initialise from" in bad.output
    assert not (fresh / "data").exists()
    tuned = runner.invoke(main, [*base[:2], "--out", str(fresh), *base[4:], "--steps", "1",
                                 "--init-from", str(out)])  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    assert load_prior(fresh).meta["step"] == 1


def test_export_prior_keeps_the_inference_weights(checkpoint: Path, tmp_path: Path) -> None:
    slim = tmp_path / "models" / "tiny.pt"
    result = CliRunner().invoke(
        main, ["tsp", "export-prior", "--checkpoint", str(checkpoint), "--out", str(slim)]
    )
    assert result.exit_code == 0, result.output
    assert slim.stat().st_size < checkpoint.stat().st_size
    full, small = load_prior(checkpoint), load_prior(slim)
    assert small.meta["step"] == full.meta["step"] and small.meta["weights"] == "model"
    x, t = torch.randn(2, 1, 64, 64), torch.tensor([10, 900])
    torch.testing.assert_close(small.denoiser(x, t), full.denoiser(x, t), rtol=0, atol=0)
    wrong = _checkpoint(tmp_path / "rgb", TINY.replace(in_channels=3))
    bad = CliRunner().invoke(
        main, ["tsp", "export-prior", "--checkpoint", str(wrong), "--out", str(slim)]
    )
    assert bad.exit_code != 0 and "3-channel" in bad.output
