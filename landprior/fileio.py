"""Small file helpers shared by every stage: atomic writes and checked torch loads.

A crash (or Ctrl-C) while writing must never leave a partial file that looks complete, so
outputs are written to a temporary file in the destination folder and renamed onto the
final path (``os.replace`` is atomic on one filesystem). Reading a torch file that is not
one, or is truncated, raises a ``ValueError`` that names the file instead of a bare
unpickling or zip error.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK_LOCK = threading.Lock()


def _current_umask() -> int:
    """The process umask, read without changing it where the OS allows (threads write too:
    a set-and-restore racing another thread's could leave the wrong umask behind)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # no /proc (macOS): set and restore, serialised among our writers
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _publish_mode(path: Path) -> None:
    """Give a ``mkstemp`` file (always 0600) the mode a plain ``open`` would: 0666 - umask."""
    os.chmod(path, 0o666 & ~_current_umask())


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name ends in ``suffix`` (default: ``path``'s own; writers such as
    ``np.savez`` or matplotlib choose the format from it, or append theirs). On any
    exception the temporary file is removed and ``path`` is left as it was. The file gets
    the usual permissions (0666 minus the umask), not ``mkstemp``'s private 0600, so other
    users can read shared outputs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    end = path.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{end}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _publish_mode(tmp)
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npy_atomic(array: Any, path: str | os.PathLike[str]) -> Path:
    """``np.save`` through a temporary file and rename."""
    import numpy as np

    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)
    return path


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write UTF-8 text through a temporary file and rename."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def torch_save_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed onto
    it: a crash leaves the previous file (a checkpoint, a training state) intact."""
    import torch

    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def torch_load_checked(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with a named error.

    A missing file raises ``FileNotFoundError``; a file torch cannot read (not a torch
    file, truncated, pickled code) raises ``ValueError`` naming the file and ``what`` it
    should have been.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling, zip and stream errors: name the file
        with path.open("rb") as fh:
            magic = fh.read(4)
        if magic != b"PK\x03\x04":  # torch.save writes a zip archive
            raise ValueError(f"cannot read {what} {path}: not a torch checkpoint (torch.save "
                             f"writes a zip archive; this file starts {magic!r})") from err
        if isinstance(err, pickle.UnpicklingError):
            # torch's message suggests weights_only=False, i.e. running the file's code:
            # never pass that on for a file that landprior did not write
            raise ValueError(f"cannot read {what} {path}: it holds Python objects other than "
                             "tensors and plain containers, which landprior never writes; "
                             "refusing to unpickle them") from err
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        reason = f"{type(err).__name__}: {first}" if first else type(err).__name__
        raise ValueError(f"cannot read {what} {path} (cut short or damaged): {reason}") from err


def ensure_writable(path: str | os.PathLike[str]) -> Path:
    """Make ``path``'s folder and check a file can be created in it, before long work whose
    result would otherwise be lost at the end (raises the ``OSError`` that writing would)."""
    path = Path(path)
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(f"cannot write {path}: {folder} is a file, not a folder")
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
        pass
    return path
