"""Atomic writes and checked torch loads (landprior.fileio)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from landprior.fileio import atomic_output, save_npy_atomic, torch_load_checked, write_text_atomic


def test_atomic_output_renames_on_success_and_keeps_the_suffix(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "grid.png"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and tmp != target
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["grid.png"]


def test_atomic_output_leaves_the_old_file_and_no_temp_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "table.md"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="crash"), atomic_output(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_save_npy_and_text_round_trip(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.int16).reshape(3, 4)
    path = save_npy_atomic(arr, tmp_path / "a.npy")
    np.testing.assert_array_equal(np.load(path), arr)
    assert write_text_atomic("é\n", tmp_path / "t.txt").read_text(encoding="utf-8") == "é\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "t.txt"]


def test_torch_load_checked_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    assert torch.equal(torch_load_checked(good)["w"], torch.ones(3))
    with pytest.raises(FileNotFoundError, match=r"prior checkpoint not found: .*none\.pt"):
        torch_load_checked(tmp_path / "none.pt", "prior checkpoint")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*garbage\.pt"):
        torch_load_checked(garbage)
    with pytest.raises(ValueError, match=r"garbage\.pt: not a torch checkpoint .*b'not '"):
        torch_load_checked(garbage)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*truncated\.pt \(cut short"):
        torch_load_checked(truncated)


def test_torch_load_checked_never_suggests_unpickling_code(tmp_path: Path) -> None:
    """A torch file holding arbitrary objects: refused without passing on torch's advice to
    load it with weights_only=False (which would run the file's code)."""
    from collections import OrderedDict

    odd = tmp_path / "odd.pt"
    torch.save({"cls": OrderedDict, "x": Path("a")}, odd)
    with pytest.raises(ValueError, match=r"odd\.pt: it holds Python objects") as err:
        torch_load_checked(odd, "segmenter checkpoint")
    assert "weights_only" not in str(err.value)


def test_outputs_get_the_usual_permissions_not_mkstemps_0600(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        text = write_text_atomic("x", tmp_path / "t.md")
        arr = save_npy_atomic(np.zeros(2), tmp_path / "a.npy")
        assert (text.stat().st_mode & 0o777) == 0o644
        assert (arr.stat().st_mode & 0o777) == 0o644
        os.umask(0o002)  # a group-shared project folder
        assert (write_text_atomic("x", tmp_path / "g.md").stat().st_mode & 0o777) == 0o664
    finally:
        os.umask(old)


def test_umask_is_read_not_changed() -> None:
    import os

    from landprior.fileio import _current_umask

    old = os.umask(0o027)
    try:
        assert _current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # still what it was: reading did not reset it
    finally:
        os.umask(old)


def test_torch_save_atomic_keeps_the_old_file_when_saving_fails(tmp_path) -> None:
    import torch

    from landprior.fileio import torch_save_atomic

    path = tmp_path / "state.pt"
    torch_save_atomic({"step": 1}, path)
    with pytest.raises(TypeError, match="pickle"):  # a generator cannot be pickled
        torch_save_atomic({"step": 2, "bad": (i for i in range(3))}, path)
    assert torch.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
