import pytest
from click.testing import CliRunner

from landprior.cli import main


def _all_commands(group, prefix=()):
    yield prefix
    for name, cmd in getattr(group, "commands", {}).items():
        yield from _all_commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", list(_all_commands(main)), ids=lambda p: " ".join(p) or "root")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "landprior" in result.output


def test_file_system_errors_end_as_one_line(tmp_path) -> None:
    """An output folder that cannot be made (its parent is a file): one line, exit 1."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = CliRunner().invoke(
        main, ["tsp", "generate", "--n", "5", "--count", "2", "--out", str(blocker / "x.txt")]
    )
    assert result.exit_code == 1, result.output
    assert "a-file" in result.output and "Error:" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert blocker.read_text() == "x" and not list(tmp_path.glob("**/x.txt"))


def _commands_with_device(group=main, prefix=()):
    for name, cmd in getattr(group, "commands", {}).items():
        path = (*prefix, name)
        if any("--device" in p.opts for p in getattr(cmd, "params", [])):
            yield path
        yield from _commands_with_device(cmd, path)


@pytest.mark.parametrize("path", list(_commands_with_device()), ids=" ".join)
def test_every_device_option_is_checked_before_any_work(path: tuple[str, ...]) -> None:
    """An unknown --device is a usage error at once (training commands included: they used to
    load the data first), before required options are even looked at."""
    result = CliRunner().invoke(main, [*path, "--device", "gpu0"])
    assert result.exit_code == 2, result.output
    assert "unknown device 'gpu0'" in result.output


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_stops_training_after_the_step_with_a_checkpoint(tmp_path, signame: str,
                                                                 code: int) -> None:
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM mid-run, in a real process, far from any
    periodic checkpoint: the run finishes its step, checkpoints it, exits 128 + signum with
    one line naming the step, leaves no temporary files, and resumes with a contiguous log."""
    import json
    import signal
    import subprocess
    import sys
    import time

    import numpy as np
    import torch

    data = tmp_path / "images.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (16, 1, 8, 8), dtype=np.uint8))
    out = tmp_path / "run"
    args = [sys.executable, "-m", "landprior", "diffusion", "train", "--data", str(data),
            "--preset", "tiny", "--batch-size", "2", "--checkpoint-every", "1000000", "--out",
            str(out), "--no-progress", "--device", "cpu", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen([*args, "--steps", "1000000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        # loss.jsonl is opened once the signal handlers are in place, as the loop starts
        while not (out / "loss.jsonl").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "no training loop within 120 s"
            time.sleep(0.05)
        time.sleep(0.5)  # inside the loop, many steps from a periodic checkpoint
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"Interrupted: stopped by {signame} at step ") and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "loss.jsonl"]
    step = int(torch.load(out / "checkpoint.pt", weights_only=False)["step"])
    assert step >= 1 and f"at step {step};" in last
    logged = [json.loads(line)["step"] for line in (out / "loss.jsonl").read_text().splitlines()]
    assert logged == list(range(1, step + 1))

    done = subprocess.run([*args, "--steps", str(step + 3), "--resume"], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    steps = [json.loads(line)["step"] for line in (out / "loss.jsonl").read_text().splitlines()]
    assert steps == list(range(1, step + 4))


def test_rasterio_debug_logs_appear_only_at_vvv(tmp_path) -> None:
    """-vv is landprior's debug output; rasterio/GDAL's internals join only at -vvv."""
    import subprocess
    import sys

    def rasterio_debug_lines(flag: str) -> int:
        cmd = [sys.executable, "-m", "landprior", flag, "data", "info", str(tmp_path)]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert run.returncode == 1 and "no spatial_index.geojson" in run.stderr  # empty folder
        return sum(" DEBUG rasterio" in line for line in run.stderr.splitlines())

    assert rasterio_debug_lines("-vv") == 0
    assert rasterio_debug_lines("-vvv") > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tsp", "generate", "--n", "3", "--count", "2", "--out", "a.txt"], "'--n'"),
        (["tsp", "generate", "--n", "10", "--count", "0", "--out", "a.txt"], "'--count'"),
        (["tsp", "generate", "--n", "10", "--count", "2", "--seed", "-1", "--out", "a.txt"],
         "'--seed'"),
        (["tsp", "generate", "--n", "10", "--count", "2", "--solve", "--workers", "0", "--out",
          "a.txt"], "'--workers'"),
        (["tsp", "generate", "--n", "10", "--count", "2", "--solve", "--time-budget", "0",
          "--out", "a.txt"], "'--time-budget'"),
        (["bench", "lgd-mog", "--scale", "nan"], "not a finite number"),
        (["bench", "lgd-mog", "--steps", "2000"], "'--steps'"),
    ],
)
def test_out_of_range_values_are_usage_errors(tmp_path, monkeypatch, args, message) -> None:
    """Values a command cannot use are refused by the option (exit 2, no traceback)."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and not (tmp_path / "a.txt").exists()


def test_an_unwritable_output_fails_before_the_work(tmp_path) -> None:
    """tsp solve / reference and diffusion sample check --out first (they used to solve or
    sample for minutes, then fail and lose the result)."""
    from pathlib import Path

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    instances = tmp_path / "i.txt"
    assert CliRunner().invoke(main, ["tsp", "generate", "--n", "8", "--count", "2", "--out",
                                     str(instances)]).exit_code == 0  # fmt: skip
    prior = Path(__file__).resolve().parents[1] / "models" / "tsp" / "tsp50-cpu.pt"
    import subprocess
    import sys

    solve = subprocess.run([sys.executable, "-m", "landprior", "-v", "tsp", "solve",
                            "--instances", str(instances), "--checkpoint", str(prior), "--steps",
                            "2", "--out", str(blocker / "s.txt")], capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert solve.returncode == 1, solve.stderr
    assert "a-file is a file, not a folder" in solve.stderr
    assert "solved" not in solve.stderr  # refused before the diffusion solve ran
    for args in (
        ["tsp", "reference", "--instances", str(instances), "--no-cache", "--out",
         str(blocker / "r.txt")],
        ["diffusion", "sample", "--checkpoint", str(prior), "--n", "1", "--out",
         str(blocker / "g.png")],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert "a-file" in result.output and "mean_length" not in result.output, args
    assert blocker.read_text() == "x"


def test_tsp_reference_writes_the_instances_in_their_input_units(tmp_path) -> None:
    """Coordinates outside [0, 1] are scaled to the unit square for solving; --out keeps the
    user's units (it wrote the scaled ones)."""
    import numpy as np

    rng = np.random.default_rng(3)
    points = rng.uniform(10.0, 800.0, (2, 9, 2)).round(3)
    src = tmp_path / "big.txt"
    src.write_text("".join(" ".join(f"{v:.3f}" for v in inst.ravel()) + "\n" for inst in points))
    out = tmp_path / "solved.txt"
    result = CliRunner().invoke(main, ["tsp", "reference", "--instances", str(src), "--no-cache",
                                       "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    for line, inst in zip(out.read_text().splitlines(), points, strict=True):
        coords = line.split("output")[0].split()
        np.testing.assert_allclose(np.array(coords, float).reshape(-1, 2), inst, atol=1e-3)


def test_a_closed_stdout_pipe_ends_quietly(tmp_path) -> None:
    """`landprior ... | head -1`: the reader goes away and the command stops without an error
    message or traceback, with status 141 (128 + SIGPIPE) like a Unix tool stopped by
    SIGPIPE (it used to print 'Error: BrokenPipeError: [Errno 32] Broken pipe', status 1)."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "landprior", "tsp", "generate", "--n", "8", "--count", "3",
           "--out", str(tmp_path / "i.txt")]  # fmt: skip
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: deterministic
    try:
        run = subprocess.run(cmd, stdout=write_end, stderr=subprocess.PIPE, text=True,
                             timeout=120)  # fmt: skip
    finally:
        os.close(write_end)
    assert run.returncode == 141, run.stderr
    assert run.stderr == ""
    assert (tmp_path / "i.txt").exists()  # the work was done; only the report was cut

    # a reader that takes one line and leaves (the rest may or may not fit in the pipe first)
    cmd = [sys.executable, "-m", "landprior", "tsp", "baseline", "--instances",
           str(tmp_path / "i.txt")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("method:")
        proc.stdout.close()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode in (0, 141), err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Error" not in err
