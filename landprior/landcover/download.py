"""Explicit download of the EnviroAtlas archive: fetch, verify md5, extract atomically.

Nothing here runs at import time. :func:`download_enviroatlas` is called only by
``landprior data download --root DIR`` (or a pipeline rule):

1. if ``DIR/enviroatlas_lotp/spatial_index.geojson`` exists, nothing is done;
2. else if ``DIR/enviroatlas_lotp.zip`` exists (fetched by hand), it is verified;
3. else the archive is fetched from the manifest URL into a ``.part`` file;
4. its md5 must be one of the manifest's known checksums (the version found is logged);
5. it is extracted into a temporary folder in ``DIR`` that is renamed into place.

Offline or on a checksum mismatch a :class:`DownloadError` says exactly which URL to fetch,
which md5 values are accepted and where to put the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landprior.landcover.enviroatlas import load_manifest

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """The archive could not be fetched, verified or extracted; the message says what to do."""


class ChecksumError(DownloadError):
    """The archive's md5 is not one of the known checksums."""


@dataclass(frozen=True)
class KnownChecksum:
    """One md5 the archive is known to have, and the version it identifies."""

    md5: str
    version: str


@dataclass(frozen=True)
class DownloadResult:
    """Outcome of :func:`download_enviroatlas`: the dataset folder and what was verified."""

    path: Path
    version: str | None
    md5: str | None


@dataclass(frozen=True)
class ArchiveSpec:
    """Where the archive comes from and what it must look like (from a manifest)."""

    filename: str
    urls: tuple[str, ...]
    checksums: tuple[KnownChecksum, ...]
    extracts_to: str
    marker: str = "spatial_index.geojson"

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any] | str = "enviroatlas") -> ArchiveSpec:
        """The ``archive`` section of a manifest (a loaded dict or a manifest name)."""
        if not isinstance(manifest, Mapping):
            manifest = load_manifest(manifest)
        arc = manifest["archive"]
        return cls(
            filename=arc["filename"],
            urls=tuple(arc["urls"]),
            checksums=tuple(
                KnownChecksum(str(c["md5"]).lower(), str(c["version"])) for c in arc["md5"]
            ),
            extracts_to=arc["extracts_to"],
            marker=(manifest.get("layout") or {}).get("index", "spatial_index.geojson"),
        )


def md5sum(path: PathLike, chunk: int = CHUNK) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manual_instructions(spec: ArchiveSpec, root: PathLike) -> str:
    """What to download by hand, and where to put it."""
    root = Path(root)
    sums = ", ".join(f"{c.md5} ({c.version})" for c in spec.checksums)
    return (
        f"download {spec.urls[0]} and save it as {root / spec.filename} "
        f"(md5 must be one of: {sums}); then run `landprior data download --root {root}` "
        f"again to verify and extract it into {root / spec.extracts_to}"
    )


def identify_archive(path: PathLike, checksums: Sequence[KnownChecksum]) -> KnownChecksum:
    """The known checksum matching ``path``'s md5; ChecksumError naming the file otherwise."""
    path = Path(path)
    found = md5sum(path)
    for known in checksums:
        if known.md5.lower() == found:
            logger.info("%s: md5 %s = %s", path, found, known.version)
            return known
    expected = ", ".join(f"{c.md5} ({c.version})" for c in checksums)
    raise ChecksumError(
        f"{path}: md5 {found} is not a known version of this archive; expected one of: {expected}"
    )


def _safe_members(archive: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    for info in members:
        name = info.filename
        parts = Path(name).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise DownloadError(f"{path}: refusing unsafe member path {name!r} in the archive")
    return members


def extract_archive(
    archive: PathLike, dest: PathLike, expect_folder: str | None = None, marker: str | None = None
) -> Path:
    """Extract a zip into ``dest`` atomically; returns the extracted top folder.

    The zip is unpacked into a hidden temporary folder inside ``dest``; the folder
    ``expect_folder`` (or the single top-level folder) is then renamed into ``dest``. If
    ``marker`` is given it must exist inside the extracted folder. A corrupt zip, an
    unsafe member path or a missing folder raises DownloadError and leaves nothing behind.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".extract-{uuid.uuid4().hex[:8]}"
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                members = _safe_members(zf, archive)
                zf.extractall(tmp, members)  # checks every member's CRC-32 on the way
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{archive}: corrupt or not a valid zip archive ({exc})") from exc
        tops = [p for p in tmp.iterdir()]
        if expect_folder is None:
            if len(tops) != 1 or not tops[0].is_dir():
                raise DownloadError(
                    f"{archive}: expected one top-level folder, found {[p.name for p in tops]}"
                )
            expect_folder = tops[0].name
        src = tmp / expect_folder
        if not src.is_dir():
            raise DownloadError(
                f"{archive}: no folder {expect_folder!r} inside; found {[p.name for p in tops]}"
            )
        if marker is not None and not (src / marker).exists():
            raise DownloadError(f"{archive}: {expect_folder}/{marker} is missing from the archive")
        target = dest / expect_folder
        if target.exists():
            raise DownloadError(f"{target} already exists; remove it to extract {archive} again")
        os.replace(src, target)
        logger.info("extracted %s into %s", archive, target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(
    url: str,
    dest: PathLike,
    *,
    timeout: float = 60.0,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` through a ``.part`` file (renamed when complete)."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
            while block := response.read(CHUNK):
                f.write(block)
                if progress is not None:
                    progress(len(block))
        os.replace(part, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    return dest


def download_enviroatlas(
    root: PathLike,
    *,
    spec: ArchiveSpec | None = None,
    timeout: float = 60.0,
    keep_archive: bool = True,
    progress: Callable[[int], None] | None = None,
) -> DownloadResult:
    """Fetch (if needed), verify and extract the EnviroAtlas archive under ``root``.

    Returns the extracted dataset folder (``root/enviroatlas_lotp``) with the version and
    md5 found (both None when the folder was already there). Raises DownloadError
    (with :func:`manual_instructions`) when offline, and ChecksumError when the archive's
    md5 is unknown - the archive is then left in place for inspection, renamed ``*.bad``
    when it was just downloaded.
    """
    spec = spec or ArchiveSpec.from_manifest()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / spec.extracts_to
    if (target / spec.marker).exists():
        logger.info("%s is already extracted; nothing to do", target)
        return DownloadResult(target, None, None)
    archive = root / spec.filename
    downloaded = False
    if not archive.exists():
        errors = []
        for url in spec.urls:
            logger.info("downloading %s -> %s", url, archive)
            try:
                fetch(url, archive, timeout=timeout, progress=progress)
                downloaded = True
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                errors.append(f"{url}: {exc}")
        if not downloaded:
            raise DownloadError(
                "could not download the EnviroAtlas archive (offline?): "
                + "; ".join(errors)
                + ". To install it by hand, "
                + manual_instructions(spec, root)
            )
    try:
        known = identify_archive(archive, spec.checksums)
    except ChecksumError as exc:
        if downloaded:
            bad = archive.with_name(archive.name + ".bad")
            os.replace(archive, bad)
            where = f"the download was kept as {bad}"
        else:
            where = f"{archive} was left untouched"
        raise ChecksumError(
            f"{exc}; {where}. To fix it, {manual_instructions(spec, root)}"
        ) from exc
    logger.info("verified %s: %s", archive, known.version)
    path = extract_archive(archive, root, spec.extracts_to, spec.marker)
    if not keep_archive:
        archive.unlink()
    return DownloadResult(path, known.version, known.md5)
