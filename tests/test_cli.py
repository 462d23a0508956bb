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
