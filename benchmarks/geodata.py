"""Geodata benchmark (paper section 4 stages): weak labels, colour clustering, GeoTIFF I/O.

Prints one JSON object to stdout (progress goes to the log on stderr)::

    .venv/bin/python benchmarks/geodata.py            # full run (4096 x 4096 lazy tile)
    .venv/bin/python benchmarks/geodata.py --quick    # smaller sizes, well under a minute

Sections:
  weak_label_accuracy  argmax of the weak labels against REAL Chesapeake labels (5-class
                       mapping of ../shared/data/README.md), skipped without ../shared/data:
                       * patches_leave_one_out: the 8 train patches at 1 m (NLCD = channel 9,
                         raw codes; buildings = channel 28); each patch's co-occurrence is
                         estimated from the OTHER 7 patches, so no patch sees its own labels.
                       * test_tile: the real tile m_3907833_nw (another NAIP tile, ~23.6 m
                         pixels) with the co-occurrence of all 8 patches (source -> target),
                         blur and windows scaled to metres (101 px / 31 px at 1 m) and, for
                         reference, the unscaled 101 / 31 px.
                       Each with the "always trees" (majority) baseline and the data-free
                       NLCD-definition rows.
  clustering           chips/s of the local colour-clustering EM (K 5, r 7, 30 iterations,
                       5 with r 15) on a batch of 64 x 64 chips (real NAIP patches pooled x1/4
                       when available), and of the global GaussianMixture baseline, at 1 torch
                       thread and at --threads (on a shared 2-core machine 1 thread is faster).
  weak_labels_speed    megapixels/s of the in-memory (numpy) weak-label kernel.
  geotiff_write        megapixels/s writing the 5-band uint8 prior as a COG with overviews
                       (the writer used is named).
  lazy_tile            a synthetic tile written to disk (NLCD, roads, water, buildings),
                       opened with rioxarray/dask chunks, weak labels computed and written one
                       chunk row at a time in a fresh process: peak RSS above the process's
                       baseline and the tracemalloc peak, next to the tile's in-memory sizes;
                       plus the same tile done eagerly in memory for contrast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("benchmarks.geodata")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CRS = "EPSG:32617"


# --------------------------------------------------------------------------- fixtures


def synthetic_layers(size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """NLCD-like 30 px blocks plus thin road lines, building blobs and a river, (size, size)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 17, size=(size // 30 + 1, size // 30 + 1)).astype(np.uint8)
    nlcd = np.repeat(np.repeat(coarse, 30, axis=0), 30, axis=1)[:size, :size]
    roads = np.zeros((size, size), np.uint8)
    for pos in rng.integers(0, size - 6, size=max(2, size // 200)):
        roads[pos : pos + 6, :] = 1
        roads[:, pos : pos + 6] = 1
    buildings = (rng.random((size // 8, size // 8)) < 0.08).astype(np.uint8)
    buildings = np.repeat(np.repeat(buildings, 8, axis=0), 8, axis=1)[:size, :size] & (1 - roads)
    water = np.zeros((size, size), np.uint8)
    water[size // 3 : size // 3 + max(4, size // 60), :] = 1
    return {
        "nlcd": np.ascontiguousarray(nlcd),
        "roads": roads,
        "water": water,
        "buildings": buildings,
    }


def write_layer(path: Path, data: np.ndarray) -> None:
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[0],
        width=data.shape[1],
        count=1,
        dtype=data.dtype,
        crs=CRS,
        transform=from_origin(500_000.0, 4_400_000.0, 1.0, 1.0),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    ) as dst:
        dst.write(data[None])


# --------------------------------------------------------------------------- accuracy


def _scores(pred: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, Any]:
    from landprior.landcover.metrics import ConfusionAccumulator

    acc = ConfusionAccumulator()
    for p, t in zip(pred, truth, strict=True):
        acc.update(p, t)
    s = acc.scores()
    return {
        "accuracy": round(s["accuracy"], 4),
        "miou": round(s["miou"], 4),
        "iou": {k: (None if v != v else round(v, 4)) for k, v in s["iou"].items()},
        "pixels": s["pixels"],
    }


def weak_label_accuracy() -> dict[str, Any]:
    import rasterio

    from landprior.landcover.classes import (
        CHESAPEAKE_MAPPING,
        CLASS_NAMES,
        nlcd_codes_to_index,
        remap,
    )
    from landprior.landcover.weak_labels import (
        estimate_cooccurrence,
        nlcd_default_cooccurrence,
        weak_label_prior,
    )

    folder = SHARED / "chesapeake" / "train_patches"
    tile_dir = SHARED / "chesapeake" / "test_tile"
    if not folder.is_dir() or not tile_dir.is_dir():
        return {"skipped": f"real data not available under {SHARED}"}
    trees = CLASS_NAMES.index("trees")
    arrs = [np.load(f)["arr_0"][0] for f in sorted(folder.glob("*.npz"))]
    labs = [remap(a[8].astype(np.int64), CHESAPEAKE_MAPPING) for a in arrs]
    nls = [nlcd_codes_to_index(a[9]) for a in arrs]
    blds = [a[28] for a in arrs]
    default = nlcd_default_cooccurrence()
    loo, prior_rows = [], []
    for i in range(len(arrs)):
        others = [j for j in range(len(arrs)) if j != i]
        cooc = estimate_cooccurrence([nls[j] for j in others], [labs[j] for j in others])
        loo.append(weak_label_prior(nls[i], cooc, buildings=blds[i]).argmax(0))
        prior_rows.append(weak_label_prior(nls[i], default, buildings=blds[i]).argmax(0))
    out: dict[str, Any] = {
        "patches_leave_one_out": {
            "what": "8 real Chesapeake patches 256x256 at 1 m; co-occurrence from the other 7",
            "weak_labels": _scores(loo, labs),
            "nlcd_definition_rows": _scores(prior_rows, labs),
            "always_trees": _scores([np.full_like(lab, trees) for lab in labs], labs),
        }
    }
    base = tile_dir / "m_3907833_nw_17_1_"

    def read(name: str) -> tuple[np.ndarray, Any]:
        with rasterio.open(f"{base}{name}.tif") as src:
            return src.read(1), src.res[0]

    lc_raw, res = read("lc")
    lc = remap(lc_raw, CHESAPEAKE_MAPPING)
    nl = nlcd_codes_to_index(read("nlcd")[0])
    bld = read("buildings")[0]
    cooc_all = estimate_cooccurrence(nls, labs)
    scaled = {
        "blur_kernel": 2 * round(50 / res) + 1,
        "blur_sigma": 31.0 / res,
        "building_radius": round(4 / res),
    }
    tile: dict[str, Any] = {
        "what": "real tile m_3907833_nw at ~23.6 m px; co-occurrence from the 8 patches "
        "of another tile (source -> target)",
        "pixel_size_m": round(float(res), 3),
        "scaled_params": {k: round(v, 3) for k, v in scaled.items()},
    }
    tile["weak_labels_scaled"] = _scores(
        [weak_label_prior(nl, cooc_all, buildings=bld, **scaled).argmax(0)], [lc]
    )
    tile["weak_labels_101_31_px"] = _scores(
        [weak_label_prior(nl, cooc_all, buildings=bld).argmax(0)], [lc]
    )
    tile["nlcd_definition_rows_scaled"] = _scores(
        [weak_label_prior(nl, default, buildings=bld, **scaled).argmax(0)], [lc]
    )
    tile["always_trees"] = _scores([np.full_like(lc, trees)], [lc])
    out["test_tile"] = tile
    return out


# --------------------------------------------------------------------------- speed


def clustering_speed(batch: int, repeats: int, iterations: int, threads: int) -> dict[str, Any]:
    import torch

    from landprior.landcover.clustering import (
        global_colour_clustering,
        local_colour_clustering,
        prepare_naip,
    )

    torch.set_num_threads(threads)
    folder = SHARED / "chesapeake" / "train_patches"
    if folder.is_dir():
        naip = np.stack(
            [np.load(f)["arr_0"][0, :4].astype(np.uint8) for f in sorted(folder.glob("*.npz"))]
        )
        chips = prepare_naip(naip)  # (8, 4, 64, 64)
        source = "real Chesapeake NAIP patches pooled x1/4 (flips/rotations to fill the batch)"
        views = [chips, chips.flip(-1), chips.flip(-2), chips.transpose(-1, -2)]
        chips = torch.cat(views * (batch // 32 + 1))[:batch].contiguous()
    else:
        g = torch.Generator().manual_seed(0)
        chips = torch.rand(batch, 4, 64, 64, generator=g)
        source = "uniform random (real data absent)"
    gen = torch.Generator().manual_seed(0)
    local_colour_clustering(chips[:2], iterations=2, generator=gen)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        local_colour_clustering(chips, iterations=iterations, generator=gen)
        times.append(time.perf_counter() - start)
    best = min(times)
    start = time.perf_counter()
    global_colour_clustering(chips, method="gmm")
    gmm = time.perf_counter() - start
    return {
        "chips": source,
        "torch_threads": threads,
        "batch": batch,
        "chip_size": [64, 64],
        "iterations": iterations,
        "seconds_best": round(best, 3),
        "seconds_all": [round(t, 3) for t in times],
        "chips_per_s": round(batch / best, 2),
        "global_gmm_chips_per_s": round(batch / gmm, 2),
    }


def weak_label_speed(size: int, repeats: int) -> dict[str, Any]:
    from landprior.landcover.weak_labels import nlcd_default_cooccurrence, weak_label_prior

    layers = synthetic_layers(size)
    cooc = nlcd_default_cooccurrence()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        weak_label_prior(
            layers["nlcd"],
            cooc,
            roads=layers["roads"],
            water=layers["water"],
            buildings=layers["buildings"],
        )
        times.append(time.perf_counter() - start)
    best = min(times)
    return {
        "size": [size, size],
        "path": "numpy (scipy.ndimage separable 101-tap blur, 5 channels)",
        "seconds_best": round(best, 3),
        "megapixels_per_s": round(size * size / 1e6 / best, 3),
    }


def geotiff_speed(size: int, tmp: Path) -> dict[str, Any]:
    from rasterio.transform import from_origin

    from landprior.landcover.tiling import open_probability_output, probability_writer_name
    from landprior.landcover.weak_labels import (
        nlcd_default_cooccurrence,
        prior_to_uint8,
        weak_label_prior,
    )

    layers = synthetic_layers(size, seed=1)
    prior = prior_to_uint8(weak_label_prior(layers["nlcd"], nlcd_default_cooccurrence()))
    path = tmp / "prior.tif"
    start = time.perf_counter()
    with open_probability_output(
        path,
        crs=CRS,
        transform=from_origin(500_000.0, 4_400_000.0, 1.0, 1.0),
        height=size,
        width=size,
        band_names=("water", "impervious", "barren", "trees", "grass"),
    ) as writer:
        writer.write(prior)
    seconds = time.perf_counter() - start
    import rasterio

    with rasterio.open(path) as src:
        overviews = src.overviews(1)
        driver_layout = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "")
    return {
        "writer": probability_writer_name(),
        "size": [5, size, size],
        "file_mb": round(path.stat().st_size / 2**20, 2),
        "layout": driver_layout or "GTiff",
        "overviews": overviews,
        "seconds": round(seconds, 3),
        "megapixels_per_s": round(size * size / 1e6 / seconds, 3),
    }


# --------------------------------------------------------------------------- lazy tile


def _child(mode: str, folder: Path, chunk: int) -> None:
    """Run in a fresh process: weak labels of the tile in ``folder``, memory measured."""
    import psutil

    from landprior.landcover.weak_labels import (
        nlcd_default_cooccurrence,
        prior_to_uint8,
        weak_label_prior,
        write_weak_label_geotiff,
    )

    proc = psutil.Process()
    cooc = nlcd_default_cooccurrence()
    layers = {n: folder / f"{n}.tif" for n in ("nlcd", "roads", "water", "buildings")}
    if mode == "eager":  # import what the eager path uses before the baseline
        import rasterio

        from landprior.landcover.tiling import open_probability_output
    else:
        import dask.array  # noqa: F401
        import rioxarray  # noqa: F401
    baseline = proc.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    import tracemalloc

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    tracemalloc.start()
    start = time.perf_counter()
    out = folder / f"weak_{mode}.tif"
    if mode == "lazy":
        write_weak_label_geotiff(
            out,
            layers["nlcd"],
            cooc,
            chunk=chunk,
            **{k: layers[k] for k in ("roads", "water", "buildings")},
        )
    else:
        arrays = {}
        for name, path in layers.items():
            with rasterio.open(path) as src:
                arrays[name] = src.read(1)
                crs, transform = src.crs, src.transform
        prior = prior_to_uint8(
            weak_label_prior(
                arrays["nlcd"],
                cooc,
                roads=arrays["roads"],
                water=arrays["water"],
                buildings=arrays["buildings"],
            )
        )
        h, w = prior.shape[1:]
        with open_probability_output(
            out,
            crs=crs,
            transform=transform,
            height=h,
            width=w,
            band_names=("water", "impervious", "barren", "trees", "grass"),
        ) as writer:
            writer.write(prior)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    done.set()
    thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    print(
        json.dumps(
            {
                "seconds": round(seconds, 3),
                "peak_rss_above_baseline_mb": round((peak[0] - baseline) / 2**20, 1),
                "tracemalloc_peak_mb": round(traced_peak / 2**20, 1),
            }
        )
    )


def lazy_tile(size: int, chunk: int, tmp: Path, eager: bool) -> dict[str, Any]:
    layers = synthetic_layers(size, seed=2)
    for name, data in layers.items():
        write_layer(tmp / f"{name}.tif", data)
    del layers
    env = {**os.environ, "GDAL_CACHEMAX": "64"}
    result: dict[str, Any] = {
        "size": [size, size],
        "chunk": [chunk, chunk],
        "halo_px": 50,
        "gdal_cachemax_mb": 64,
        "in_memory_mb": {
            "inputs_uint8_4_layers": round(4 * size * size / 2**20, 1),
            "prior_float32": round(5 * 4 * size * size / 2**20, 1),
            "prior_uint8": round(5 * size * size / 2**20, 1),
            "one_chunk_row_prior_float32_with_halo": round(
                5 * 4 * (chunk + 100) * (size + 100) / 2**20, 1
            ),
        },
    }
    for mode in ("lazy", "eager") if eager else ("lazy",):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--_child",
                mode,
                "--_folder",
                str(tmp),
                "--chunk",
                str(chunk),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{mode} child failed:\n{proc.stderr[-3000:]}")
        stats = json.loads(proc.stdout.strip().splitlines()[-1])
        stats["megapixels_per_s"] = round(size * size / 1e6 / stats["seconds"], 3)
        result[mode] = stats
    return result


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument(
        "--threads", type=int, default=2, help="also time clustering at this many torch threads"
    )
    parser.add_argument("--tile", type=int, default=None, help="lazy tile side (4096; quick 1024)")
    parser.add_argument("--chunk", type=int, default=512, help="dask chunk side of the lazy tile")
    parser.add_argument("--_child", choices=["lazy", "eager"], help=argparse.SUPPRESS)
    parser.add_argument("--_folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        _child(args._child, args._folder, args.chunk)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    import torch

    quick = args.quick
    tile = args.tile or (1024 if quick else 4096)
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch_version": torch.__version__,
            "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
        },
        "quick": quick,
    }
    log.info("weak-label accuracy on real data")
    report["weak_label_accuracy"] = weak_label_accuracy()
    log.info("clustering speed")
    report["clustering"] = [
        clustering_speed(
            batch=16 if quick else 64, repeats=1 if quick else 2, iterations=30, threads=t
        )
        for t in sorted({1, args.threads})
    ]
    log.info("weak-label speed")
    report["weak_labels_speed"] = weak_label_speed(1024 if quick else 2048, 1 if quick else 2)
    with tempfile.TemporaryDirectory(prefix="landprior-geodata-") as tmp_name:
        tmp = Path(tmp_name)
        log.info("GeoTIFF writing")
        report["geotiff_write"] = geotiff_speed(1024 if quick else 2048, tmp)
        lazy_dir = tmp / "tile"
        lazy_dir.mkdir()
        log.info("lazy %d x %d tile", tile, tile)
        report["lazy_tile"] = lazy_tile(tile, args.chunk, lazy_dir, eager=True)
    report["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
