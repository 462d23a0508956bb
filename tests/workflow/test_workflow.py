"""Per-stage checks of the Snakemake workflow (issue 5; DESIGN conventions 9 and 11).

Fast checks: ``snakemake --lint``, dry runs of the demo and EnviroAtlas configurations,
configurations the schema refuses, missing or broken inputs, the profiles.

Slow checks (``-m slow``; CI runs them): the whole pipeline on pipelines/config/tiny.yaml,
run once for real in a temporary folder (session fixture), then every output is checked:
class-map GeoTIFFs, metrics.csv, report.md and its figures, the HTML report, resuming.

Every snakemake call runs in a subprocess with its own working directory, so nothing is
written into the checkout. The pipeline needs no network (synthetic data; the EnviroAtlas
cases below are set up so that the download step never tries to fetch anything).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import yaml

from landprior.landcover.classes import CLASS_NAMES
from landprior.landcover.download import ArchiveSpec
from landprior.landcover.enviroatlas import EnviroAtlas
from landprior.landcover.evaluate import METRIC_COLUMNS
from landprior.landcover.geotiff import (
    CLASS_NODATA,
    DEFAULT_CATEGORIES,
    read_categories,
    read_class_map,
)
from landprior.landcover.synthetic import write_synthetic_dataset

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
CONFIGS = REPO / "pipelines" / "config"
PROFILES = REPO / "pipelines" / "profiles"
BIN = Path(sys.executable).parent  # the venv's bin: snakemake, and landprior for the rules
SNAKEMAKE = shutil.which("snakemake", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")

pytestmark = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")

# Display names of the methods in metrics.csv and report.md (pipelines/rules/common.smk).
METHOD_NAMES = {
    "source_supervised": "source supervised",
    "source_supervised_weak": "source supervised + weak labels",
    "weak_labels": "weak-label argmax",
    "ours_scratch": "ours from scratch",
    "ours_finetuned": "ours fine-tuned",
}
# Methods whose maps are predicted per tile (the weak-label baseline has no map).
MAP_METHODS = ("source_supervised", "source_supervised_weak", "ours_scratch", "ours_finetuned")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_TIMEOUT_S = 900


def snakemake(
    *args: str, cwd: Path, timeout: float = 300, snakefile: Path = SNAKEFILE
) -> subprocess.CompletedProcess[str]:
    """Run snakemake in ``cwd``; stdout and stderr together in ``.stdout``."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(SNAKEMAKE), "-s", str(snakefile), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake run or dry run: rule -> number of jobs."""
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    except StopIteration:
        return {}
    counts: dict[str, int] = {}
    for line in lines[start + 3 :]:  # skip the header and the dashes
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total" or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def executed_jobs(output: str) -> dict[str, int]:
    """Jobs a (dry) run went through, from their headers: rule -> number of jobs.

    Unlike 'Job stats' (printed once, before a checkpoint re-plans the DAG), this counts
    the jobs added after the dataset checkpoint too.
    """
    counts: dict[str, int] = {}
    for rule in re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", output, re.MULTILINE):
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def tiny_config(**changes: Any) -> dict[str, Any]:
    """pipelines/config/tiny.yaml with ``changes`` ("prior.steps"-style keys) applied."""
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value
    return config


def write_config(folder: Path, config: dict[str, Any], name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- fast checks


def test_lint_is_clean(tmp_path: Path) -> None:
    result = snakemake("--lint", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert "Congratulations, your workflow is in a good condition!" in result.stdout


@pytest.mark.parametrize("name", ["demo", "enviroatlas"])
def test_dry_run(tmp_path: Path, name: str) -> None:
    result = snakemake("-n", f"--configfile={CONFIGS / f'{name}.yaml'}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    jobs = job_counts(result.stdout)
    # before the dataset checkpoint has run, the DAG ends at the jobs that do not need
    # the tile lists; the checkpoint re-plans the rest after it completes
    assert jobs.get("dataset") == 1 and jobs.get("all") == 1, result.stdout
    assert {"metrics_table", "report"} <= jobs.keys(), jobs
    assert "This was a dry-run" in result.stdout
    assert not list(tmp_path.glob("results*/**/*.tif")), "a dry run wrote outputs"


def test_configs_from_before_the_upsample_and_norm_keys_still_run(tmp_path: Path) -> None:
    """``segmenter.upsample`` and ``norm`` are optional: the schema fills in guided / group."""
    import copy

    from snakemake.utils import validate

    config = tiny_config()
    del config["segmenter"]["upsample"], config["segmenter"]["norm"]
    path = write_config(tmp_path, config)  # written WITHOUT the two keys
    filled = copy.deepcopy(config)
    validate(filled, str(REPO / "pipelines" / "schemas" / "config.schema.yaml"))
    assert (filled["segmenter"]["upsample"], filled["segmenter"]["norm"]) == ("guided", "group")
    result = snakemake("-n", f"--configfile={path}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    # a --configfile is used alone, not layered on demo.yaml (whose bilinear would otherwise
    # fill the missing key instead of the schema's documented default)
    used = next(line for line in result.stdout.splitlines() if "Config file(s)" in line)
    assert path.name in used and "demo.yaml" not in used, used


def test_without_a_configfile_the_demo_config_is_used(tmp_path: Path) -> None:
    result = snakemake("-n", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    used = next(line for line in result.stdout.splitlines() if "Config file(s)" in line)
    assert "pipelines/config/demo.yaml" in used, used


@pytest.mark.parametrize(
    ("changes", "messages"),
    [
        # out of range
        ({"prior.steps": 0}, ["0 is less than the minimum of 1", "['prior']['steps']"]),
        # wrong type
        ({"chip_size": "big"}, ["'big' is not of type 'integer'", "['chip_size']"]),
        # not one of the allowed values; a misspelt key
        ({"weak_labels.mode": "magic"}, ["'magic' is not one of ['layer', 'compute']"]),
        ({"chip_sise": 64}, ["Additional properties are not allowed", "'chip_sise'"]),
        ({"device": "gpu"}, ["'gpu' does not match", "['device']"]),
        ({"segmenter.upsample": "cubic"}, ["'cubic' is not one of ['guided', 'bilinear']"]),
        ({"segmenter.norm": "layer"}, ["'layer' is not one of ['group', 'batch']"]),
    ],
    ids=["steps-0", "chip_size-str", "mode-enum", "typo", "device", "upsample", "norm"],
)
def test_bad_config_fails_early_with_the_schema_message(
    tmp_path: Path, changes: dict[str, Any], messages: Sequence[str]
) -> None:
    config = write_config(tmp_path, tiny_config(**changes))
    result = snakemake("-n", f"--configfile={config}", cwd=tmp_path)
    assert result.returncode != 0
    assert "Error validating config file" in result.stdout, result.stdout
    for message in messages:
        assert message in result.stdout, result.stdout
    assert not (tmp_path / "results").exists(), "nothing may run on an invalid configuration"


def enviroatlas_config(root: Path, download_root: Path, results: Path) -> dict[str, Any]:
    """The tiny configuration, but reading a dataset in the EnviroAtlas layout at ``root``."""
    config = tiny_config(results=str(results))
    config["dataset"] = {
        "kind": "enviroatlas", "root": str(root), "download_root": str(download_root),
    }  # fmt: skip
    return config


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset in the EnviroAtlas layout (copied before tests break it)."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "tiny", size="tiny")


def test_bad_archive_fails_with_what_to_download(tmp_path: Path) -> None:
    """An archive that is not the EnviroAtlas one: the md5 check says what to fetch, where.

    (With no archive at all the dataset rule would try to download it, so the test puts a
    wrong file where the archive belongs: no network is touched.)
    """
    spec = ArchiveSpec.from_manifest()
    download = tmp_path / "downloads"
    download.mkdir()
    (download / spec.filename).write_bytes(b"not the EnviroAtlas archive")
    config = enviroatlas_config(download / spec.extracts_to, download, tmp_path / "results")
    result = snakemake(
        "--cores", "1", "--show-failed-logs",
        f"--configfile={write_config(tmp_path, config)}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Error in rule dataset" in result.stdout, result.stdout
    assert "is not a known version of this archive" in result.stdout
    assert spec.urls[0] in result.stdout and str(download / spec.filename) in result.stdout
    assert not (download / spec.extracts_to / spec.marker).exists()


def broken_copy(root: Path, where: Path) -> tuple[Path, Path]:
    """A copy of ``root``; returns it and the NLCD layer of its first source train tile."""
    copy = Path(shutil.copytree(root, where))
    dataset = EnviroAtlas(copy)
    source = next(c for c, role in dataset.roles.items() if role == "source")
    tile = dataset.tiles(source, "train")[0]
    return copy, dataset.path(tile, "nlcd")


def run_weak_labels(
    data: Path, tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the pipeline up to the weak labels on ``data``; returns the run and results dir."""
    results = tmp_path / "results"
    config = enviroatlas_config(data, tmp_path / "downloads", results)
    result = snakemake(
        f"{results}/weak_labels/done.json", "--cores", "1", "--show-failed-logs",
        f"--configfile={write_config(tmp_path, config)}", cwd=tmp_path,
    )  # fmt: skip
    return result, results


def test_missing_input_file_fails_with_its_name(synthetic_root: Path, tmp_path: Path) -> None:
    # the dataset lies where the archive extracts: download_root/enviroatlas_lotp
    data, nlcd = broken_copy(synthetic_root, tmp_path / "downloads" / "enviroatlas_lotp")
    nlcd.unlink()
    result, results = run_weak_labels(data, tmp_path)
    assert result.returncode != 0
    assert "Error in rule weak_labels" in result.stdout, result.stdout
    assert f"missing layer file {nlcd}" in result.stdout, result.stdout
    # a failed job never leaves its outputs behind as if complete
    assert not (results / "weak_labels" / "done.json").exists()


def test_wrong_crs_fails_with_the_library_message(synthetic_root: Path, tmp_path: Path) -> None:
    # the dataset lies where the archive extracts: download_root/enviroatlas_lotp
    data, nlcd = broken_copy(synthetic_root, tmp_path / "downloads" / "enviroatlas_lotp")
    roads = nlcd.with_name(nlcd.name.replace("_b_nlcd.tif", "_c_roads.tif"))
    with rasterio.open(roads, "r+") as dst:
        dst.crs = "EPSG:4326"
    result, results = run_weak_labels(data, tmp_path)
    assert result.returncode != 0
    assert re.search(r"roads raster CRS EPSG:4326 != NLCD CRS EPSG:\d+", result.stdout), (
        result.stdout
    )
    assert not (results / "weak_labels" / "done.json").exists()


# --------------------------------------------------------------------------- Ctrl-C


def _wait_for(path: Path, text: str, proc: subprocess.Popen[str], timeout: float = 300) -> str:
    """Poll ``path`` until it contains ``text`` (while ``proc`` runs); its content."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(encoding="utf-8") if path.is_file() else ""
        if text in content:
            return content
        assert proc.poll() is None, f"snakemake exited {proc.returncode} before {text!r}"
        time.sleep(0.2)
    raise AssertionError(f"{path} did not show {text!r} within {timeout} s")


def _ctrl_c(proc: subprocess.Popen[str]) -> int:
    """SIGINT to snakemake's whole process group, as Ctrl-C in its terminal does."""
    os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout=120)


@pytest.mark.slow
def test_ctrl_c_during_a_segmenter_job_resumes_on_the_next_run(tmp_path: Path) -> None:
    """A real pipeline interrupted inside train-segmenter (Ctrl-C): the job saves its state
    beside the missing output, and the next `snakemake --rerun-incomplete` continues that
    training from the saved step instead of starting over (the rule's log says so)."""
    config = write_config(tmp_path, tiny_config(**{"segmenter.pretrain_steps": 1_000_000}))
    target = "results/tiny/segmenter/source_image.pt"
    log = tmp_path / "results/tiny/logs/segmenter/source_image.log"
    state = tmp_path / f"{target}.resume"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(SNAKEMAKE), "-s", str(SNAKEFILE), "--cores", "2", "--rerun-incomplete",
             f"--configfile={config}", target],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            text=True, start_new_session=True,
        )  # fmt: skip

    proc = start()
    try:
        _wait_for(log, "segmenter training: steps 1..1000000", proc)
        time.sleep(1.0)  # some steps into the loop
        assert _ctrl_c(proc) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first = log.read_text(encoding="utf-8")
    assert "Interrupted: stopped by SIGINT at step " in first, first
    step = int(torch.load(state, weights_only=False)["step"])
    assert step >= 1 and f"at step {step};" in first
    assert not (tmp_path / target).exists()

    log.unlink()  # so that the wait below sees the new job's log, not this one
    proc = start()
    try:
        resumed = _wait_for(log, "segmenter training: steps ", proc)
        assert f"resumed {target}.resume at step {step} of 1000000" in resumed, resumed
        assert f"segmenter training: steps {step + 1}..1000000" in resumed, resumed
        assert _ctrl_c(proc) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert int(torch.load(state, weights_only=False)["step"]) > step
    assert not (tmp_path / target).exists()


# --------------------------------------------------------------------------- profiles


@pytest.mark.parametrize("name", ["local", "slurm"])
def test_profile_is_valid_yaml(name: str) -> None:
    profile = yaml.safe_load((PROFILES / name / "config.yaml").read_text(encoding="utf-8"))
    assert isinstance(profile, dict) and profile
    assert all(isinstance(key, str) for key in profile)


def test_slurm_profile_settings() -> None:
    profile = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text(encoding="utf-8"))
    assert profile["executor"] == "slurm"
    assert {"slurm_partition", "runtime", "mem_mb"} <= profile["default-resources"].keys()
    assert profile["jobs"] > 0 and profile["latency-wait"] > 0 and profile["retries"] >= 1
    assert profile["keep-going"] is True and profile["printshellcmds"] is True
    for rule in ("train_prior", "pseudolabel", "segmenter_source", "segmenter_finetune",
                 "segmenter_scratch"):
        assert profile["set-resources"][rule]["slurm_extra"] == "'--gres=gpu:1'"
    # every rule named there exists in the workflow
    rules = set(re.findall(r"^(?:rule|checkpoint) (\w+):", _workflow_text(), re.MULTILINE))
    assert set(profile["set-resources"]) <= rules


def _workflow_text() -> str:
    texts = [SNAKEFILE.read_text(encoding="utf-8")]
    texts += [p.read_text(encoding="utf-8") for p in (REPO / "pipelines" / "rules").glob("*.smk")]
    # rules inside `if` blocks are indented
    return "\n".join(line.strip() for text in texts for line in text.splitlines())


def test_slurm_profile_resources_parse(tmp_path: Path) -> None:
    """Everything but the executor (the plugin is not installed here) is taken by snakemake."""
    profile = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text(encoding="utf-8"))
    del profile["executor"]
    (tmp_path / "profile").mkdir()
    write_config(tmp_path / "profile", profile)
    result = snakemake(
        "-n", "--profile", str(tmp_path / "profile"), "--forcerun", "dataset",
        f"--configfile={CONFIGS / 'enviroatlas.yaml'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert "slurm_partition=cpu" in result.stdout and "runtime=240" in result.stdout


def test_local_profile_dry_run(tmp_path: Path) -> None:
    result = snakemake(
        "-n", "--profile", str(PROFILES / "local"),
        f"--configfile={CONFIGS / 'tiny.yaml'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert job_counts(result.stdout).get("dataset") == 1, result.stdout


# --------------------------------------------------------------------------- the full run


@dataclass(frozen=True)
class TinyRun:
    """The tiny pipeline, run for real once: where it ran and what it wrote."""

    workdir: Path
    results: Path
    data: EnviroAtlas
    targets: tuple[str, ...]
    split: str
    output: str

    def tiles(self, city: str) -> list[Any]:
        return self.data.tiles(city, self.split)

    def snakemake(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return snakemake(
            *args, f"--configfile={CONFIGS / 'tiny.yaml'}", cwd=self.workdir, timeout=timeout
        )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    workdir = tmp_path_factory.mktemp("tiny_run")
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text(encoding="utf-8"))
    result = snakemake(
        "--cores", "2", "--show-failed-logs", f"--configfile={CONFIGS / 'tiny.yaml'}",
        cwd=workdir, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-20000:]
    return TinyRun(
        workdir=workdir,
        results=workdir / config["results"],
        data=EnviroAtlas(workdir / config["dataset"]["root"]),
        targets=tuple(config["target_cities"]),
        split=config["test_split"],
        output=result.stdout,
    )


def class_maps(run: TinyRun) -> list[tuple[Path, Any]]:
    """Every class-map GeoTIFF the run must have written, with its tile."""
    maps = []
    for city in run.targets:
        for tile in run.tiles(city):
            maps.append((run.results / city / f"{tile.tile_id}_landcover.tif", tile))
            for method in MAP_METHODS:
                folder = run.results / "predictions" / method / city
                maps.append((folder / f"{tile.tile_id}_landcover.tif", tile))
    return maps


@pytest.mark.slow
def test_run_did_every_stage(tiny_run: TinyRun) -> None:
    jobs = executed_jobs(tiny_run.output)
    expected = {
        "dataset", "weak_labels", "chips", "cluster", "train_prior", "pseudolabel",
        "segmenter_source", "segmenter_finetune", "segmenter_scratch", "predict",
        "final_map", "evaluate_maps", "evaluate_weak_labels", "metrics_table", "report", "all",
        "pseudolabel_geotiffs",
    }  # fmt: skip
    assert expected <= jobs.keys(), jobs
    n_tiles = sum(len(tiny_run.tiles(c)) for c in tiny_run.targets)
    assert jobs["predict"] == len(MAP_METHODS) * n_tiles
    assert jobs["final_map"] == n_tiles
    # atomic writers leave no temporary files, and finished trainings no resumable state
    leftovers = [p for p in tiny_run.results.rglob("*")
                 if p.name.endswith((".tmp", ".part", ".resume"))]  # fmt: skip
    assert not leftovers


@pytest.mark.slow
def test_class_maps_are_georeferenced_paletted_cogs(tiny_run: TinyRun) -> None:
    maps = class_maps(tiny_run)
    assert maps
    expected_colours = DEFAULT_CATEGORIES.colormap()
    for path, tile in maps:
        assert path.is_file(), path
        assert path.with_name(path.name + ".aux.xml").is_file(), path
        with rasterio.open(tiny_run.data.path(tile, "naip")) as naip:
            crs, transform, shape = naip.crs, naip.transform, naip.shape
        with rasterio.open(path) as src:
            assert src.count == 1 and src.dtypes[0] == "uint8", path
            assert src.crs == crs, path
            assert src.transform.almost_equals(transform), (path, src.transform, transform)
            assert src.shape == shape, path
            assert src.nodata == CLASS_NODATA == 255
            assert src.overviews(1), f"{path} has no overviews"
            colours = src.colormap(1)
            for value in range(len(CLASS_NAMES)):
                assert colours[value] == expected_colours[value], (path, value)
        assert read_categories(path) == tuple(CLASS_NAMES)
        class_map = read_class_map(path)
        assert class_map.names == tuple(CLASS_NAMES)
        assert class_map.crs == crs and class_map.nodata == 255
        values = np.unique(class_map.classes)
        assert set(values.tolist()) <= {*range(len(CLASS_NAMES)), CLASS_NODATA}, values
        assert (class_map.classes != CLASS_NODATA).any(), f"{path} is all nodata"


@pytest.mark.slow
def test_pseudolabelled_chips_are_exported_inside_their_tiles(tiny_run: TinyRun) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    for city in tiny_run.targets:
        folder = tiny_run.results / "pseudolabels" / f"{city}_chips"
        index = gpd.read_file(folder / "chips.gpkg")
        pseudo = np.load(tiny_run.results / "pseudolabels" / f"{city}.npz")["pseudo"]
        assert len(index) == len(pseudo) > 0
        tiles = {t.tile_id: t for t in tiny_run.tiles(city)}
        for row in index.itertuples():
            with rasterio.open(tiny_run.data.path(tiles[row.tile_id], "naip")) as naip:
                tile_box, crs = box(*naip.bounds), naip.crs
            with rasterio.open(folder / row.file_pseudo) as src:
                assert src.crs == crs == index.crs
                assert tile_box.contains(box(*src.bounds)), (row.file_pseudo, src.bounds)
                np.testing.assert_array_equal(src.read(1), pseudo[row.chip])
            assert row.geometry.equals(box(*src.bounds))


@pytest.mark.slow
def test_final_maps_are_the_fine_tuned_predictions(tiny_run: TinyRun) -> None:
    for city in tiny_run.targets:
        for tile in tiny_run.tiles(city):
            final = tiny_run.results / city / f"{tile.tile_id}_landcover.tif"
            pred = tiny_run.results / "predictions" / "ours_finetuned" / city / final.name
            assert final.read_bytes() == pred.read_bytes()


@pytest.mark.slow
def test_metrics_csv(tiny_run: TinyRun) -> None:
    with (tiny_run.results / "metrics.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == METRIC_COLUMNS
        rows = list(reader)
    pairs = [(row["method"], row["city"]) for row in rows]
    expected = {(m, c) for m in METHOD_NAMES.values() for c in tiny_run.targets}
    assert sorted(pairs) == sorted(expected), "one row per method x target city"
    for row in rows:
        for column in ("accuracy", "miou"):
            assert 0.0 <= float(row[column]) <= 100.0, row
        for column in (c for c in METRIC_COLUMNS if c.startswith("iou_")):
            # empty: the class is in neither the truth nor the map (IoU undefined)
            assert row[column] == "" or 0.0 <= float(row[column]) <= 100.0, row
        assert int(row["pixels"]) > 0
        assert int(row["tiles"]) == len(tiny_run.tiles(row["city"]))


@pytest.mark.slow
def test_report_md_and_figures(tiny_run: TinyRun) -> None:
    report = tiny_run.results / "report.md"
    text = report.read_text(encoding="utf-8")
    for city in tiny_run.targets:
        assert city in text
    for name in METHOD_NAMES.values():
        assert f"| {name} |" in text, name
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images, "report.md shows no figures"
    for ref in images:
        assert (report.parent / ref).is_file(), ref
    figures = sorted((tiny_run.results / "figures").glob("*.png"))
    assert figures
    assert {(report.parent / ref).resolve() for ref in images} <= {p.resolve() for p in figures}
    from PIL import Image

    for png in figures:
        assert png.read_bytes()[:8] == PNG_SIGNATURE, png
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) > 0


@pytest.mark.slow
def test_html_report(tiny_run: TinyRun) -> None:
    html = tiny_run.workdir / "report.html"
    result = tiny_run.snakemake("--report", str(html))
    assert result.returncode == 0, result.stdout
    assert html.is_file() and html.stat().st_size > 10_000
    assert "<html" in html.read_text(encoding="utf-8", errors="replace")[:2000].lower()


@pytest.mark.slow
def test_second_run_has_nothing_to_do(tiny_run: TinyRun) -> None:
    result = tiny_run.snakemake("-n")
    assert result.returncode == 0, result.stdout
    assert "Nothing to be done" in result.stdout, job_counts(result.stdout)


def delete_prediction(run: TinyRun, method: str) -> tuple[Path, str]:
    """Delete the first target tile's map of ``method``; returns it and its target name."""
    city = run.targets[0]
    tile = run.tiles(city)[0]
    path = run.results / "predictions" / method / city / f"{tile.tile_id}_landcover.tif"
    path.unlink()
    return path, str(path.relative_to(run.workdir))


@pytest.mark.slow
def test_deleted_final_prediction_plans_only_what_depends_on_it(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    """Resuming plans only the rules downstream of a missing map (dry run, then restored).

    (A missing intermediate file whose consumers are up to date is not rebuilt on its own,
    so the deleted map is asked for explicitly next to the default target.)
    """
    city = tiny_run.targets[0]
    tile = tiny_run.tiles(city)[0]
    kept = tmp_path / "kept.tif"
    source = tiny_run.results / "predictions" / "ours_finetuned" / city
    shutil.copy2(source / f"{tile.tile_id}_landcover.tif", kept)
    deleted, target = delete_prediction(tiny_run, "ours_finetuned")
    try:
        planned = tiny_run.snakemake("-n", "all", target)
    finally:
        shutil.copy2(kept, deleted)  # same bytes and mtime: up to date again
    assert planned.returncode == 0, planned.stdout
    assert job_counts(planned.stdout) == {
        "predict": 1,  # the deleted map itself
        "evaluate_maps": 1,  # its method x city scores
        "final_map": 1,  # results/<city>/<tile>_landcover.tif is a copy of it
        "metrics_table": 1,
        "report": 1,  # the report draws the fine-tuned maps
        "all": 1,
    }, planned.stdout
    assert "Nothing to be done" in tiny_run.snakemake("-n").stdout


@pytest.mark.slow
def test_deleted_prediction_reruns_only_what_depends_on_it(tiny_run: TinyRun) -> None:
    """A real resume: the missing map is rebuilt and only its dependants are redone."""
    deleted, target = delete_prediction(tiny_run, "source_supervised_weak")
    # this method's maps are not drawn in the report, but its scores are in the table
    downstream = {"predict": 1, "evaluate_maps": 1, "metrics_table": 1, "report": 1, "all": 1}
    planned = tiny_run.snakemake("-n", "all", target)
    assert planned.returncode == 0, planned.stdout
    assert executed_jobs(planned.stdout) == downstream, planned.stdout
    done = tiny_run.snakemake("--cores", "2", "all", target)
    assert done.returncode == 0, done.stdout[-20000:]
    assert executed_jobs(done.stdout) == downstream, done.stdout
    assert deleted.is_file()
    with rasterio.open(deleted) as src:
        assert src.colormap(1) and src.overviews(1)
    again = tiny_run.snakemake("-n")
    assert "Nothing to be done" in again.stdout, again.stdout


@pytest.mark.slow
def test_more_prior_steps_extend_the_trained_prior(tiny_run: TinyRun, tmp_path: Path) -> None:
    """The prior trains in RESULTS/prior/run, which is not a rule output (Snakemake deletes
    a job's outputs before rerunning it): raising prior.steps continues that run instead
    of starting over, and the installed prior is the extended one. On a copy of the run."""
    from landprior.diffusion.train import load_checkpoint

    work = tmp_path / "copy"
    shutil.copytree(tiny_run.workdir, work, symlinks=True)  # .snakemake and mtimes too
    results = work / tiny_config()["results"]
    steps = tiny_config()["prior"]["steps"]
    assert load_checkpoint(results / "prior" / "run")["step"] == steps
    loss_log = results / "prior" / "run" / "loss.jsonl"
    before = loss_log.read_text().splitlines()
    path = write_config(work, tiny_config(**{"prior.steps": steps + 2}), name="longer.yaml")
    target = str((results / "prior" / "samples.png").relative_to(work))
    done = snakemake("--cores", "2", f"--configfile={path}", target, cwd=work)
    assert done.returncode == 0, done.stdout[-20000:]
    assert executed_jobs(done.stdout) == {"train_prior": 1}, done.stdout
    lines = loss_log.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, steps + 3))
    assert lines[:steps] == before  # resumed: the first steps (and their times) were kept
    assert load_checkpoint(results / "prior" / "checkpoint.pt")["step"] == steps + 2


def test_enviroatlas_root_must_be_where_the_archive_extracts(tmp_path: Path) -> None:
    config = enviroatlas_config(tmp_path / "elsewhere", tmp_path / "downloads", tmp_path / "r")
    result = snakemake("-n", f"--configfile={write_config(tmp_path, config)}", cwd=tmp_path)
    assert result.returncode != 0
    assert "archive extracts to" in result.stdout, result.stdout


def test_missing_prior_checkpoint_fails_early_with_its_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_config(**{"prior.checkpoint": "no/such/prior.pt"}))
    result = snakemake("-n", f"--configfile={config}", cwd=tmp_path)
    assert result.returncode != 0
    assert "prior.checkpoint is 'no/such/prior.pt' but no such file exists" in result.stdout


@pytest.mark.slow
def test_a_trained_prior_is_installed_instead_of_trained(tiny_run: TinyRun) -> None:
    """prior.checkpoint: the plan installs that prior, and every stage after it reruns."""
    prior = tiny_run.results / "prior" / "checkpoint.pt"
    config = tiny_config(**{"prior.checkpoint": str(prior)})
    config["results"] = str(tiny_run.workdir / "results_installed")
    path = write_config(tiny_run.workdir, config, name="installed.yaml")
    result = snakemake("-n", f"--configfile={path}", cwd=tiny_run.workdir)
    assert result.returncode == 0, result.stdout
    jobs = executed_jobs(result.stdout)
    assert jobs.get("install_prior") == 1 and "train_prior" not in jobs, jobs


def _keys(node: Any, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return set()
    keys = set()
    for key, value in node.items():
        keys.add(prefix + key)
        keys |= _keys(value, f"{prefix}{key}.")
    return keys


@pytest.mark.parametrize("name", ["tiny", "enviroatlas"])
def test_configs_set_every_key_the_base_demo_config_sets(name: str) -> None:
    """The shipped configurations spell out every key the demo sets (a --configfile is used
    alone, so a key left out would take the schema's default: say every choice instead)."""
    demo = _keys(yaml.safe_load((CONFIGS / "demo.yaml").read_text(encoding="utf-8")))
    other = _keys(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text(encoding="utf-8")))
    allowed = {"dataset.synthetic_size", "dataset.seed", "weak_labels.layer"}  # kind-specific
    assert not (demo - other - allowed), sorted(demo - other)
