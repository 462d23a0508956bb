"""`landprior data`: Synthesise, download, tile and prepare land-cover data.

One function per subcommand; heavy imports stay inside the functions so that
``landprior --help`` is fast.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from landprior.commands import clustering_em_options


def _mask_option(name: str, what: str, window: str, target: str) -> Callable[..., Any]:
    """``--roads`` / ``--water`` / ``--buildings`` of single-raster weak labels."""
    return click.option(
        f"--{name}",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=f"With --nlcd: 0/1 {what} mask on its grid; its {window} mean is added to "
        f"{target}.",
    )


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
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the synthetic cities (the same seed writes the same dataset).",
)
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


# --- weak labels and colour clustering (paper section 4) ---------------------------------


@group.command(name="weak-labels")
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Dataset in the EnviroAtlas layout: compute the prior for its tiles.",
)
@click.option("--city", "cities", multiple=True, help="Cities of --root to do (default: all).")
@click.option("--split", default=None, help="Only this split of --root (default: all).")
@click.option(
    "--no-osm",
    is_flag=True,
    help="NLCD only: leave out roads, water and buildings (the _no_osm_no_buildings variant).",
)
@click.option(
    "--nlcd",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Single-raster mode: an NLCD GeoTIFF (index 0..16, or raw codes with --raw-nlcd).",
)
@_mask_option("roads", "road", "9x9", "impervious")
@_mask_option("water", "water", "5x5", "water")
@_mask_option("buildings", "building", "9x9", "impervious")
@click.option("--raw-nlcd", is_flag=True, help="--nlcd holds raw NLCD codes (11, 21, ...).")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output GeoTIFF (with --nlcd) or folder (with --root: OUT/<city>/<tile>_weak_labels.tif).",
)
@click.option(
    "--cooccurrence",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="P(class | NLCD) file (.json from --save-cooccurrence, or .npy).",
)
@click.option(
    "--source-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Dataset holding the source city (default: --root).",
)
@click.option(
    "--source-city",
    default=None,
    help="City whose labels give P(class | NLCD) (default: the dataset's source city).",
)
@click.option(
    "--source-split",
    default="train",
    show_default=True,
    help="Split of --source-city whose labels give P(class | NLCD).",
)
@click.option(
    "--allow-target-source",
    is_flag=True,
    help="Allow a target city as --source-city (leaks its labels into its weak labels).",
)
@click.option(
    "--save-cooccurrence",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the P(class | NLCD) used as .json (for --cooccurrence next time).",
)
@click.option(
    "--blur-kernel",
    type=click.IntRange(min=1),
    default=101,
    show_default=True,
    help="Gaussian blur of the NLCD classes: kernel size in NLCD-grid pixels (odd; paper: 101).",
)
@click.option(
    "--blur-sigma",
    type=click.FloatRange(min=0, min_open=True),
    default=31.0,
    show_default=True,
    help="Gaussian blur of the NLCD classes: sigma in NLCD-grid pixels (paper: 31).",
)
@click.option(
    "--chunk",
    type=click.IntRange(min=16),
    default=512,
    show_default=True,
    help="Dask chunk side: memory is a few chunk rows, not the tile.",
)
@click.option(
    "--scheduler",
    "scheduler_address",
    default=None,
    metavar="ADDRESS",
    help="dask.distributed scheduler (tcp://host:8786): compute the chunks on that cluster "
    "(its workers must see the input files under the same paths). Default: in this process.",
)
@click.option(
    "--scheduler-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the --scheduler to answer and to have a worker.",
)
def weak_labels(
    root: Path | None,
    cities: tuple[str, ...],
    split: str | None,
    no_osm: bool,
    nlcd: Path | None,
    roads: Path | None,
    water: Path | None,
    buildings: Path | None,
    raw_nlcd: bool,
    out: Path,
    cooccurrence: Path | None,
    source_root: Path | None,
    source_city: str | None,
    source_split: str,
    allow_target_source: bool,
    save_cooccurrence: Path | None,
    blur_kernel: int,
    blur_sigma: float,
    chunk: int,
    scheduler_address: str | None,
    scheduler_timeout: float,
) -> None:
    """Weak labels: the 5-band uint8 prior layer (NLCD blur 101/31 + roads/water/buildings).

    P(class | NLCD) comes from the SOURCE city's labels (--cooccurrence file, or estimated
    from --source-root/--source-city), never from the city being labelled. Each output
    GeoTIFF is computed lazily and written atomically. With --scheduler the dask graph of
    every tile runs on that dask.distributed cluster; this process only writes the results.
    """
    from contextlib import ExitStack

    from landprior.landcover import weak_labels as wl
    from landprior.landcover.enviroatlas import DataError, EnviroAtlas

    if (root is None) == (nlcd is None):
        raise click.UsageError("give exactly one of --root (a dataset) or --nlcd (one raster)")
    if root is None and (cities or split or no_osm):
        raise click.UsageError("--city, --split and --no-osm need --root")
    if root is not None and (roads or water or buildings):
        raise click.UsageError("--roads, --water and --buildings go with --nlcd; with --root "
                               "the dataset's own layers are used (--no-osm leaves them out)")
    params: dict[str, object] = {
        "blur_kernel": blur_kernel, "blur_sigma": blur_sigma, "chunk": chunk,
    }  # fmt: skip
    cluster = ExitStack()  # holds the dask client (if any) until the last tile is written
    if scheduler_address is not None:
        from distributed import Client
        from distributed.comm.addressing import get_address_host_port

        try:  # a malformed address is refused here, before any connection attempt
            get_address_host_port(scheduler_address)
        except ValueError as exc:
            raise click.BadParameter(
                f"{exc} (expected a dask scheduler address such as tcp://host:8786)",
                param_hint="--scheduler",
            ) from exc
        # Workers open the rasters themselves (maybe elsewhere): give them absolute paths.
        root, nlcd, roads, water, buildings = (
            None if p is None else p.resolve() for p in (root, nlcd, roads, water, buildings)
        )
        try:
            client = cluster.enter_context(Client(scheduler_address, timeout=scheduler_timeout))
            client.wait_for_workers(1, timeout=scheduler_timeout)
        except Exception as exc:  # no answer, no worker, a port that is no dask scheduler
            cluster.close()
            raise click.ClickException(
                f"cannot compute on the dask scheduler {scheduler_address!r} (no answer or no "
                f"worker within {scheduler_timeout:g} s): {type(exc).__name__}: {exc}"
            ) from exc
        from dask.optimization import cull

        def on_cluster(expr: object, keys: list, **kwargs: object) -> object:
            # Send only the tasks the chunk row needs. A lazily sliced row still carries
            # unneeded input tasks, and distributed's scheduler fails with a KeyError on
            # those while it still holds the previous row's tasks (seen with 2026.8).
            graph, _ = cull(dict(expr.__dask_graph__()), keys)  # type: ignore[attr-defined]
            return client.get(graph, keys, **kwargs)

        params["scheduler"] = on_cluster  # dask calls it like Client.get
        click.echo(f"computing on the dask scheduler {scheduler_address}")
    try:
        if cooccurrence is not None:
            cooc = wl.load_cooccurrence(cooccurrence)
            origin = str(cooccurrence)
        else:
            src_root = source_root or root
            if src_root is None:
                raise click.UsageError("give --cooccurrence or --source-root/--source-city")
            src_ds = EnviroAtlas(src_root)
            roles = src_ds.roles
            if source_city is None:
                found = [c for c, r in roles.items() if r == "source"]
                if len(found) != 1:
                    raise click.UsageError(
                        f"{src_root}: cannot tell the source city (roles {roles}); "
                        "pass --source-city"
                    )
                source_city = found[0]
            if roles.get(source_city) == "target" and not allow_target_source:
                raise click.UsageError(
                    f"{source_city} is a target city: estimating P(class | NLCD) from its labels "
                    "leaks them into its weak labels (pass --allow-target-source to do it anyway)"
                )
            cooc = wl.source_cooccurrence(src_root, source_city, split=source_split)
            origin = f"{source_city}/{source_split}"
        if save_cooccurrence is not None:
            wl.save_cooccurrence(save_cooccurrence, cooc, source=origin)
        if nlcd is not None:
            wl.write_weak_label_geotiff(
                out, nlcd, cooc, roads=roads, water=water, buildings=buildings,
                nlcd_is_raw=raw_nlcd, **params,
            )  # fmt: skip
            click.echo(f"wrote {out} (co-occurrence from {origin})")
            return
        ds = EnviroAtlas(root)  # type: ignore[arg-type]
        tiles = [t for c in (cities or ds.cities) for t in ds.tiles(c, split)]
        if not tiles:
            raise click.UsageError(f"{root}: no tiles for cities {cities or 'all'}, split {split}")
        for tile in tiles:
            folder = out / tile.city
            folder.mkdir(parents=True, exist_ok=True)
            extra = {} if no_osm else {n: ds.path(tile, n) for n in ("roads", "water", "buildings")}
            target = folder / f"{tile.tile_id}_weak_labels.tif"
            wl.write_weak_label_geotiff(target, ds.path(tile, "nlcd"), cooc, **extra, **params)
            click.echo(f"wrote {target}")
        click.echo(f"{len(tiles)} tiles; co-occurrence from {origin}")
    except (DataError, FileNotFoundError, ValueError, KeyError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        cluster.close()


@group.command(name="cluster")
@click.argument("naip", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--factor",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Average-pool the imagery by this factor (1 m -> 4 m label grid).",
)
@click.option(
    "--chip",
    type=click.IntRange(min=0),
    default=64,
    show_default=True,
    help="Chip side at the pooled resolution (0: the whole image at once).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Chips clustered at once (memory only: chips are independent).",
)
@click.option(
    "--components",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Colour clusters K per chip (paper: 5).",
)
@clustering_em_options
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch CPU threads (1 is fastest on a shared 2-core machine).",
)
def cluster(
    naip: Path,
    out: Path,
    factor: int,
    chip: int,
    batch_size: int,
    components: int,
    radius: int,
    iterations: int,
    warmup_iterations: int,
    warmup_radius: int,
    seed: int,
    threads: int,
) -> None:
    """Local colour clustering of a NAIP GeoTIFF -> K-band uint8 responsibilities GeoTIFF.

    The local Gaussian-mixture EM of paper section 4 on NAIP/255 pooled to the label grid;
    cluster ids are local to each chip. Written atomically, same CRS, coarser transform.
    """
    import torch

    from landprior.landcover.clustering import cluster_geotiff

    torch.set_num_threads(threads)
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)  # as every other command's outputs
    try:
        cluster_geotiff(
            naip, out, factor=factor, chip=chip, batch_size=batch_size, seed=seed,
            n_components=components, radius=radius, iterations=iterations,
            warmup_iterations=warmup_iterations, warmup_radius=warmup_radius,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out} in {time.perf_counter() - started:.1f} s")
