"""`landprior data`: Synthesise, download, tile and prepare land-cover data.

One function per subcommand; heavy imports stay inside the functions so that
``landprior --help`` is fast.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


@click.group(name="data")
def group() -> None:
    """Synthesise, download, tile and prepare land-cover data."""


@group.command(name="synth")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder to create (must not exist or be empty, unless --overwrite).",
)
@click.option(
    "--size",
    type=click.Choice(["tiny", "small", "medium"]),
    default="small",
    show_default=True,
    help="tiny: tests; small: the demo pipeline in minutes on 2 cores; medium: larger.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset folder.")
def synth(out: Path, size: str, seed: int, overwrite: bool) -> None:
    """Write the synthetic cities in the EnviroAtlas layout (offline stand-in for real data)."""
    from landprior.landcover.synthetic import write_synthetic_dataset

    started = time.perf_counter()
    try:
        root = write_synthetic_dataset(out, size=size, seed=seed, overwrite=overwrite)  # type: ignore[arg-type]
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {root} ({size}, seed {seed}) in {time.perf_counter() - started:.1f} s")


@group.command(name="download")
@click.option(
    "--root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for enviroatlas_lotp.zip and the extracted enviroatlas_lotp/.",
)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Network timeout (s).")
@click.option("--delete-archive", is_flag=True, help="Remove the zip after extraction.")
def download(root: Path, timeout: float, delete_archive: bool) -> None:
    """Fetch the EnviroAtlas archive (explicitly), verify its md5 and extract it atomically.

    Offline, or when the md5 is not a known version, it stops and says which URL to fetch
    by hand and where to save it.
    """
    from landprior.landcover.download import DownloadError, download_enviroatlas

    try:
        result = download_enviroatlas(root, timeout=timeout, keep_archive=not delete_archive)
    except DownloadError as exc:
        raise click.ClickException(str(exc)) from exc
    if result.version is None:
        click.echo(f"{result.path} already extracted; nothing to do")
    else:
        click.echo(f"verified {result.version} (md5 {result.md5}); extracted to {result.path}")


@group.command(name="info")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--validate", is_flag=True, help="Also check every layer's header and grid.")
def info(root: Path, as_json: bool, validate: bool) -> None:
    """List the cities, splits, tile counts and CRS of a dataset in the EnviroAtlas layout."""
    from landprior.landcover.enviroatlas import DataError, EnviroAtlas

    try:
        ds = EnviroAtlas(root)
        rows = ds.summary()
        checked = ds.validate() if validate else None
    except (DataError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(
            json.dumps({"root": str(ds.root), "splits": rows, "validated": checked}, indent=2)
        )
        return
    click.echo(f"{ds.root}: {len(ds)} tiles, {len(ds.cities)} cities")
    header = ("city", "role", "split", "tiles", "crs")
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in header]
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        click.echo("  ".join(str(row[h]).ljust(w) for h, w in zip(header, widths, strict=True)))
    if checked is not None:
        click.echo(f"validated {checked} tiles: every layer present, right bands/dtype, one grid")
