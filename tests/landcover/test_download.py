"""Download step: checksum identification and atomic extraction on a local zip; no network."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from landprior.landcover import download as dl


def make_archive(folder: Path, *, name: str = "enviroatlas_lotp.zip") -> Path:
    """A small zip shaped like the real one: enviroatlas_lotp/ with an index and a tile."""
    path = folder / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("enviroatlas_lotp/spatial_index.geojson", '{"type": "FeatureCollection"}')
        zf.writestr(
            "enviroatlas_lotp/x_pa-2010_1m-test_tiles-debuffered/1_nw_a_naip.tif", b"\0" * 64
        )
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def spec_for(archive: Path, *extra: str) -> dl.ArchiveSpec:
    sums = [dl.KnownChecksum(m, f"test version {i}") for i, m in enumerate(extra)]
    sums.append(dl.KnownChecksum(md5(archive), "local test archive"))
    return dl.ArchiveSpec(
        filename="enviroatlas_lotp.zip",
        urls=("https://example.invalid/enviroatlas_lotp.zip",),
        checksums=tuple(sums),
        extracts_to="enviroatlas_lotp",
    )


def test_spec_from_manifest() -> None:
    spec = dl.ArchiveSpec.from_manifest()
    assert spec.filename == "enviroatlas_lotp.zip"
    assert spec.urls[0].startswith("https://zenodo.org/records/5778193/")
    assert [c.md5 for c in spec.checksums][:2] == [
        "bfe601be21c7c001315fc6154be8ef14",
        "6142f8d1ebfc7f8ad888337f0683dc7a",
    ]
    assert spec.extracts_to == "enviroatlas_lotp" and spec.marker == "spatial_index.geojson"


def test_md5_and_identify(tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    assert dl.md5sum(archive, chunk=7) == md5(archive)
    known = dl.identify_archive(archive, spec_for(archive, "0" * 32).checksums)
    assert known.version == "local test archive"
    with pytest.raises(dl.ChecksumError, match=r"enviroatlas_lotp\.zip: md5 [0-9a-f]{32} is not"):
        dl.identify_archive(archive, [dl.KnownChecksum("0" * 32, "v0")])


def test_download_uses_a_local_archive_and_extracts(tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    result = dl.download_enviroatlas(tmp_path, spec=spec_for(archive, "f" * 32))
    assert result.path == tmp_path / "enviroatlas_lotp"
    assert result.version == "local test archive" and result.md5 == md5(archive)
    assert (result.path / "spatial_index.geojson").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "enviroatlas_lotp",
        "enviroatlas_lotp.zip",
    ]
    again = dl.download_enviroatlas(tmp_path, spec=spec_for(archive))  # already there
    assert again.path == result.path and again.version is None


def test_checksum_mismatch_explains_what_to_do(tmp_path: Path) -> None:
    make_archive(tmp_path)
    spec = dl.ArchiveSpec(
        "enviroatlas_lotp.zip",
        ("https://example.invalid/a.zip",),
        (dl.KnownChecksum("0" * 32, "v1"),),
        "enviroatlas_lotp",
    )
    with pytest.raises(dl.ChecksumError) as err:
        dl.download_enviroatlas(tmp_path, spec=spec)
    msg = str(err.value)
    assert "https://example.invalid/a.zip" in msg and str(tmp_path / "enviroatlas_lotp.zip") in msg
    assert "0" * 32 in msg and "left untouched" in msg
    assert not (tmp_path / "enviroatlas_lotp").exists()


def test_offline_explains_what_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    spec = dl.ArchiveSpec.from_manifest()
    with pytest.raises(dl.DownloadError) as err:
        dl.download_enviroatlas(tmp_path, spec=spec)
    msg = str(err.value)
    assert "offline" in msg and spec.urls[0] in msg
    assert (
        str(tmp_path / "enviroatlas_lotp.zip") in msg and "bfe601be21c7c001315fc6154be8ef14" in msg
    )
    assert list(tmp_path.iterdir()) == []  # no .part left behind


def test_fetch_mismatch_keeps_the_download_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = make_archive(tmp_path, name="served.zip")
    payload = served.read_bytes()
    served.unlink()

    class Response:
        def __init__(self) -> None:
            self.left = payload

        def read(self, n: int) -> bytes:
            block, self.left = self.left[:n], self.left[n:]
            return block

        def __enter__(self) -> Response:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Response())
    spec = dl.ArchiveSpec(
        "enviroatlas_lotp.zip",
        ("https://example.invalid/a.zip",),
        (dl.KnownChecksum("0" * 32, "v1"),),
        "enviroatlas_lotp",
    )
    with pytest.raises(dl.ChecksumError, match=r"kept as .*enviroatlas_lotp\.zip\.bad"):
        dl.download_enviroatlas(tmp_path, spec=spec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enviroatlas_lotp.zip.bad"]
    # with the right checksum the same bytes are accepted and extracted
    (tmp_path / "enviroatlas_lotp.zip.bad").unlink()
    good = dl.ArchiveSpec(
        spec.filename,
        spec.urls,
        (dl.KnownChecksum(hashlib.md5(payload, usedforsecurity=False).hexdigest(), "v2"),),
        spec.extracts_to,
    )
    result = dl.download_enviroatlas(tmp_path, spec=good, keep_archive=False)
    assert result.version == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enviroatlas_lotp"]


def test_extract_is_atomic(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(dl.DownloadError, match="not a valid zip"):
        dl.extract_archive(bad, dest, "enviroatlas_lotp")
    assert list(dest.iterdir()) == []
    archive = make_archive(tmp_path)
    with pytest.raises(dl.DownloadError, match="no folder 'other'"):
        dl.extract_archive(archive, dest, "other")
    with pytest.raises(dl.DownloadError, match="missing from the archive"):
        dl.extract_archive(archive, dest, "enviroatlas_lotp", marker="nothing.json")
    assert list(dest.iterdir()) == []
    out = dl.extract_archive(archive, dest)
    assert out == dest / "enviroatlas_lotp" and sorted(p.name for p in dest.iterdir()) == [
        "enviroatlas_lotp"
    ]
    with pytest.raises(dl.DownloadError, match="already exists"):
        dl.extract_archive(archive, dest, "enviroatlas_lotp")


def test_extract_refuses_unsafe_paths(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("enviroatlas_lotp/../../escape.txt", "x")
    with pytest.raises(dl.DownloadError, match="unsafe member path"):
        dl.extract_archive(evil, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_corrupt_member_is_detected(tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    data = bytearray(archive.read_bytes())
    # flip a byte inside the stored (uncompressed) tile payload
    pos = data.find(b"\0" * 64)
    data[pos + 10] = 1
    archive.write_bytes(bytes(data))
    with pytest.raises(dl.DownloadError, match="corrupt"):
        dl.extract_archive(archive, tmp_path / "out", "enviroatlas_lotp")
    assert list((tmp_path / "out").iterdir()) == []
