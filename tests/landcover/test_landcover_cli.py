"""`landprior landcover` end to end on the tiny synthetic dataset, and its error paths.

One module fixture runs the whole chain once (train-prior -> chips -> cluster ->
pseudolabel -> train-segmenter -> predict -> evaluate) with tiny settings; the tests
then check what each stage wrote. Errors must be one line: exit code != 0, a message,
no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner, Result

from landprior.cli import main
from landprior.landcover.chips import ChipSet
from landprior.landcover.enviroatlas import EnviroAtlas
from landprior.landcover.segmenter import load_segmenter
from tests.landcover.conftest import SOURCE_CITY, TARGET_CITY, TILE_SIZE


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _ok(*args: str | Path) -> Result:
    result = _run(*args)
    assert result.exit_code == 0, f"{args}\n{result.output}\n{result.exception!r}"
    return result


def _fails(*args: str | Path, match: str) -> str:
    """Run a command that must fail with a one-line error containing ``match``."""
    result = _run(*args)
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # handled by click
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert match in errors[0], result.output
    return errors[0]


@pytest.fixture(scope="module")
def pipeline(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tiny_root
    tmp = tmp_path_factory.mktemp("cli")
    p = {
        "root": root,
        "prior": tmp / "prior",
        "samples": tmp / "prior" / "samples.png",
        "chips": tmp / "chips" / "green.npz",
        "source_chips": tmp / "chips" / "source.npz",
        "clustered": tmp / "chips" / "green_clustered.npz",
        "pseudo": tmp / "chips" / "green_pseudo.npz",
        "summary": tmp / "chips" / "green_summary.json",
        "source_model": tmp / "models" / "source.pt",
        "model": tmp / "models" / "ours.pt",
        "preds": tmp / "preds",
        "scores": tmp / "eval" / "ours.json",
        "weak_scores": tmp / "eval" / "weak.json",
    }
    _ok("landcover", "train-prior", "--data", root, "--city", SOURCE_CITY, "--out", p["prior"],
        "--patches", "8", "--patch-size", "32", "--factor", "4", "--preset", "landcover-cpu",
        "--steps", "2", "--batch-size", "4", "--samples-png", p["samples"], "--threads", "1",
        "--no-progress")
    _ok("landcover", "chips", "--data", root, "--city", TARGET_CITY, "--split", "test",
        "--n", "4", "--size", "64", "--out", p["chips"])
    _ok("landcover", "chips", "--data", root, "--city", SOURCE_CITY, "--split", "train",
        "--n", "4", "--size", "64", "--out", p["source_chips"])
    _ok("landcover", "cluster", "--chips", p["chips"], "--out", p["clustered"], "--radius", "2",
        "--iterations", "3", "--warmup-iterations", "1", "--warmup-radius", "4")
    _ok("landcover", "pseudolabel", "--prior", p["prior"] / "checkpoint.pt",
        "--chips", p["clustered"], "--out", p["pseudo"], "--steps", "3", "--window-radius", "3",
        "--batch-size", "3", "--summary", p["summary"], "--no-progress")
    _ok("landcover", "train-segmenter", "--chips", p["source_chips"], "--target", "truth",
        "--out", p["source_model"], "--steps", "2", "--batch-size", "2", "--base-channels", "4",
        "--depth", "2", "--no-progress")
    _ok("landcover", "train-segmenter", "--chips", p["pseudo"], "--target", "pseudo",
        "--init", p["source_model"], "--out", p["model"], "--steps", "2", "--batch-size", "2",
        "--no-progress")
    _ok("landcover", "predict", "--data", root, "--city", TARGET_CITY, "--model", p["model"],
        "--out-dir", p["preds"], "--window", "16", "--overlap", "4", "--probabilities")
    _ok("landcover", "evaluate", "--data", root, "--city", TARGET_CITY, "--method", "ours",
        "--predictions", p["preds"], "--out", p["scores"])
    _ok("landcover", "evaluate", "--data", root, "--city", TARGET_CITY, "--method", "weak",
        "--weak-labels", "--out", p["weak_scores"])
    return p


def test_prior_and_chips(pipeline: dict[str, Path]) -> None:
    assert (pipeline["prior"] / "checkpoint.pt").is_file()
    assert np.load(pipeline["prior"] / "patches.npy").shape == (8, 8, 8)
    assert pipeline["samples"].read_bytes()[:4] == b"\x89PNG"
    cs = ChipSet.load(pipeline["chips"])
    assert len(cs) == 4 and cs.city == TARGET_CITY and cs.image.shape == (4, 4, 16, 16)
    assert cs.truth is not None and cs.clusters is None


def test_cluster_and_pseudolabel(pipeline: dict[str, Path]) -> None:
    clustered = ChipSet.load(pipeline["clustered"])
    assert clustered.clusters is not None and clustered.clusters.shape == (4, 5, 16, 16)
    np.testing.assert_allclose(clustered.clusters.sum(1), 1.0, atol=1e-4)
    pseudo = ChipSet.load(pipeline["pseudo"])
    assert pseudo.pseudo is not None and pseudo.pseudo.shape == (4, 16, 16)
    assert pseudo.pseudo.max() < 5
    assert pseudo.pseudo_probs is not None and pseudo.pseudo_probs.shape == (4, 5, 16, 16)
    np.testing.assert_array_equal(pseudo.image, clustered.image)  # earlier fields carried
    np.testing.assert_array_equal(pseudo.offsets, clustered.offsets)
    summary = json.loads(pipeline["summary"].read_text())
    assert summary["city"] == TARGET_CITY and summary["chips"] == 4
    for key in ("pseudo_label_accuracy", "weak_label_accuracy", "chips_per_second"):
        assert 0 <= summary[key], key
    assert summary["pseudo_label_accuracy"] <= 100
    assert summary["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # auto


def test_segmenters_predictions_and_scores(
    pipeline: dict[str, Path], tiny_dataset: EnviroAtlas
) -> None:
    model, meta = load_segmenter(pipeline["model"])
    assert meta["inputs"] == "image" and meta["downsample"] == 4 and meta["target"] == "pseudo"
    assert meta["init"] == str(pipeline["source_model"])
    assert model.config.base_channels == 4  # fine-tuned from the source model's architecture
    tile = tiny_dataset.tiles(TARGET_CITY, "test")[0]
    with rasterio.open(pipeline["preds"] / f"{tile.tile_id}_landcover.tif") as src:
        assert (src.height, src.width) == (TILE_SIZE, TILE_SIZE)
        assert src.crs == tiny_dataset.profile(tile, "naip")["crs"]
        assert src.read(1).max() < 5
    with rasterio.open(pipeline["preds"] / f"{tile.tile_id}_probabilities.tif") as src:
        assert src.count == 5
        guided = src.read()
    bilinear_dir = pipeline["preds"].parent / "preds_bilinear"
    predict_one = ("landcover", "predict", "--data", pipeline["root"], "--city", TARGET_CITY,
                   "--model", pipeline["model"], "--tile", tile.tile_id)
    _ok(*predict_one, "--out-dir", bilinear_dir, "--window", "16", "--overlap", "4",
        "--probabilities", "--upsample", "bilinear")
    with rasterio.open(bilinear_dir / f"{tile.tile_id}_probabilities.tif") as src:
        bilinear = src.read()
    assert guided.shape == bilinear.shape and not np.array_equal(guided, bilinear)
    assert meta["chip_size"] == 16  # 64 px chips at x1/4: predict's default window
    assert "Warning" not in _ok(*predict_one, "--out-dir", bilinear_dir).stderr
    warned = _ok(*predict_one, "--out-dir", bilinear_dir, "--window", "8", "--overlap", "2")
    assert "--window 8 differs from the 16-pixel chips" in warned.stderr
    batch_model = pipeline["model"].parent / "batchnorm.pt"
    _ok("landcover", "train-segmenter", "--chips", pipeline["pseudo"], "--target", "pseudo",
        "--norm", "batch", "--base-channels", "4", "--out", batch_model, "--steps", "2",
        "--batch-size", "2", "--no-progress")
    assert load_segmenter(batch_model)[0].config.norm == "batch"
    quiet = _ok("landcover", "predict", "--data", pipeline["root"], "--city", TARGET_CITY,
                "--model", batch_model, "--tile", tile.tile_id, "--out-dir", bilinear_dir,
                "--window", "8", "--overlap", "2")
    assert "Warning" not in quiet.stderr  # BatchNorm maps do not depend on the window
    ours = json.loads(pipeline["scores"].read_text())
    weak = json.loads(pipeline["weak_scores"].read_text())
    for scores, method in ((ours, "ours"), (weak, "weak")):
        assert scores["row"]["method"] == method and scores["row"]["city"] == TARGET_CITY
        assert 0 <= scores["row"]["accuracy"] <= 100
        assert scores["scores"]["tiles"] == 1
        assert scores["scores"]["pixels"] == scores["row"]["pixels"] > 0


def test_one_line_errors(pipeline: dict[str, Path], tmp_path: Path) -> None:
    root, out = pipeline["root"], tmp_path / "out.json"
    evaluate = ("landcover", "evaluate", "--data", root, "--city", TARGET_CITY, "--method", "m",
                "--out", out)
    _fails(*evaluate, match="give exactly one of --predictions DIR or --weak-labels")
    _fails(*evaluate, "--weak-labels", "--predictions", pipeline["preds"],
           match="give exactly one of --predictions DIR or --weak-labels")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(*evaluate, "--predictions", empty, match="not found")
    assert not out.exists()
    _fails("landcover", "predict", "--data", root, "--city", TARGET_CITY, "--model",
           pipeline["model"], "--out-dir", tmp_path / "p", "--tile", "9999999_xx",
           match="unknown tiles ['9999999_xx'] in synthgreen_nc-2012/test")
    _fails("landcover", "predict", "--data", root, "--city", TARGET_CITY, "--model",
           pipeline["model"], "--out-dir", tmp_path / "p", "--guide-sigma", "0",
           match="--guide-sigma")
    _fails("landcover", "pseudolabel", "--prior", pipeline["prior"] / "checkpoint.pt",
           "--chips", pipeline["chips"], "--out", tmp_path / "x.npz", "--no-progress",
           match="has no clusters; run `landcover cluster`")
    _fails("landcover", "train-segmenter", "--chips", pipeline["chips"], "--target", "pseudo",
           "--out", tmp_path / "m.pt", "--no-progress", match="has no 'pseudo' labels")
    _fails("landcover", "train-segmenter", "--chips", pipeline["source_chips"], "--inputs",
           "image+weak", "--init", pipeline["source_model"], "--out", tmp_path / "m.pt",
           "--steps", "1", "--no-progress", match="takes inputs 'image', not 'image+weak'")
    _fails("landcover", "train-segmenter", "--chips", pipeline["source_chips"], "--target",
           "truth", "--replay-fraction", "0.3", "--out", tmp_path / "m.pt", "--steps", "1",
           "--no-progress", match="--replay-fraction needs --replay-chips")
    _fails("landcover", "train-segmenter", "--chips", pipeline["pseudo"], "--target", "pseudo",
           "--init", pipeline["source_model"], "--norm", "batch", "--out", tmp_path / "m.pt",
           "--steps", "1", "--no-progress", match="uses norm 'group'; --norm batch cannot")
    assert not (tmp_path / "m.pt").exists()
    _fails("landcover", "chips", "--data", root, "--city", "atlantis", "--out", tmp_path / "c.npz",
           match="unknown city 'atlantis'")
    _fails("landcover", "chips", "--data", root, "--city", TARGET_CITY, "--size", "30",
           "--out", tmp_path / "c.npz", match="not divisible by the factor 4")
    _fails("landcover", "chips", "--data", root, "--city", TARGET_CITY, "--weak-layer",
           tmp_path / "nowhere", "--out", tmp_path / "c.npz", match="neither a layer")
    pseudolabel = ("landcover", "pseudolabel", "--prior", pipeline["prior"] / "checkpoint.pt",
                   "--chips", pipeline["clustered"], "--out", tmp_path / "x.npz", "--no-progress")
    _fails(*pseudolabel, "--device", "mps", match="only 'cpu' and 'cuda' devices")
    _fails(*pseudolabel, "--device", "gpu0", match="unknown device 'gpu0'")
    if not torch.cuda.is_available():
        _fails(*pseudolabel, "--device", "cuda", match="sees no CUDA GPU")
        _fails("landcover", "train-segmenter", "--chips", pipeline["source_chips"],
               "--out", tmp_path / "m.pt", "--steps", "1", "--device", "cuda", "--no-progress",
               match="sees no CUDA GPU")
    assert not any(tmp_path.glob("*.npz")) and not (tmp_path / "m.pt").exists()


def test_install_prior_reuses_a_trained_prior(pipeline: dict[str, Path], tmp_path: Path) -> None:
    import torch

    from landprior.diffusion.train import load_checkpoint

    out, png = tmp_path / "installed", tmp_path / "installed.png"
    _ok("landcover", "install-prior", "--checkpoint", pipeline["prior"], "--data",
        pipeline["root"], "--city", SOURCE_CITY, "--out", out, "--patch-size", "32",
        "--samples-png", png, "--threads", "1")
    trained, installed = load_checkpoint(pipeline["prior"]), load_checkpoint(out)
    assert installed["ema"] is None and installed["step"] == trained["step"]
    assert all(torch.equal(installed["model"][k], v) for k, v in trained["ema"].items())
    assert png.read_bytes()[:4] == b"\x89PNG"

    # a one-channel network is not a prior over the five land-cover classes
    data = tmp_path / "gray.npy"
    np.save(data, np.zeros((4, 16, 16), dtype=np.float32))
    _ok("diffusion", "train", "--data", data, "--preset", "tiny", "--steps", "1",
        "--batch-size", "2", "--out", tmp_path / "gray", "--no-progress")
    _fails("landcover", "install-prior", "--checkpoint", tmp_path / "gray", "--data",
           pipeline["root"], "--city", SOURCE_CITY, "--out", tmp_path / "x",
           match="models 1 classes")


def test_prior_quality_prints_one_json_object(pipeline: dict[str, Path]) -> None:
    import json

    out = _ok("landcover", "prior-quality", "--checkpoint", pipeline["prior"] / "checkpoint.pt",
              "--data", pipeline["root"], "--city", SOURCE_CITY, "--split", "train",
              "--patches", "4", "--samples", "2", "--patch-size", "32", "--threads", "1",
              "--samples-png", pipeline["prior"] / "quality.png")
    assert (pipeline["prior"] / "quality.png").read_bytes()[:4] == b"\x89PNG"
    result = json.loads(out.output)
    assert result["n_patches"] == 4 and result["city"] == SOURCE_CITY
    assert 0 <= result["denoise_accuracy_t400"] <= 1 and 0 <= result["denoise_accuracy_t700"] <= 1
    assert result["samples"]["n"] == 2 and len(result["samples"]["class_frequencies"]) == 5
    # the samples are also compared with the training split's class mix (the default "train")
    assert result["train_split"] == "train"
    assert len(result["samples"]["train_class_frequencies"]) == 5
    assert 0 <= result["samples"]["train_class_frequency_tv"] <= 1
    alone = json.loads(_ok("landcover", "prior-quality", "--checkpoint",
                           pipeline["prior"] / "checkpoint.pt", "--data", pipeline["root"],
                           "--city", SOURCE_CITY, "--train-split", "nosuch", "--patches", "2",
                           "--samples", "1", "--patch-size", "32", "--threads", "1").output)
    assert alone["train_split"] is None and "train_class_frequencies" not in alone["samples"]
    _fails("landcover", "prior-quality", "--checkpoint", pipeline["prior"] / "checkpoint.pt",
           "--data", pipeline["root"], "--city", SOURCE_CITY, "--split", "nosuch",
           match="no split 'nosuch'")


def test_cluster_refuses_an_empty_chip_set(pipeline: dict[str, Path], tmp_path: Path) -> None:
    chips = ChipSet.load(pipeline["clustered"])
    empty = chips.with_(**{
        name: getattr(chips, name)[:0]
        for name in ("image", "weak", "tile_ids", "offsets", "transforms", "truth",
                     "clusters", "pseudo", "pseudo_probs")
        if getattr(chips, name) is not None
    }).save(tmp_path / "empty.npz")
    result = _run("landcover", "cluster", "--chips", empty, "--out", tmp_path / "out.npz")
    assert result.exit_code == 1 and "holds no chips to cluster" in result.output
    assert not (tmp_path / "out.npz").exists()


def _interrupt_segmenter_training(args: list[str], signame: str, *wait_for: str
                                  ) -> tuple[int, str]:
    """Start `train-segmenter` (``args``) in a real process, wait for each of ``wait_for``
    on its log in turn (the last: the loop has started), send ``signame``; return code, log."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        expected = list(wait_for)
        for line in proc.stderr:
            lines.append(line)
            if expected[0] in line:
                expected.pop(0)
                if not expected:
                    break
        assert not expected and proc.poll() is None, "".join(lines)
        time.sleep(0.5)  # many steps into the loop, far from a periodic save
        proc.send_signal(getattr(signal, signame))
        err = "".join(lines) + proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, err


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_stops_segmenter_training_resumably(pipeline: dict[str, Path], tmp_path: Path,
                                                    signame: str, code: int) -> None:
    """Ctrl-C / SIGTERM during train-segmenter, in a real process, far from any periodic
    save: the run saves OUT.resume after its step, exits 128 + signum with one line naming
    the step and writes no OUT; --resume continues from that step (and only with the same
    settings); a finished run leaves no OUT.resume behind."""
    import subprocess
    import sys

    out = tmp_path / "seg.pt"
    state = tmp_path / "seg.pt.resume"
    args = [sys.executable, "-m", "landprior", "-v", "landcover", "train-segmenter", "--chips",
            str(pipeline["source_chips"]), "--out", str(out), "--batch-size", "2",
            "--base-channels", "4", "--depth", "2", "--save-every", "1000000", "--no-progress",
            "--threads", "1"]  # fmt: skip
    looping = "segmenter training: steps "
    code_, err = _interrupt_segmenter_training([*args, "--steps", "1000000"], signame, looping)
    assert code_ == code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"Interrupted: stopped by {signame} at step ") and "Traceback" not in err
    step = int(torch.load(state, weights_only=False)["step"])
    assert step >= 1 and f"at step {step};" in last and str(state) in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.pt.resume"]

    other = subprocess.run([*args, "--steps", "5", "--resume"], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    # the state records --steps (the cosine schedule's length): another count is refused
    assert other.returncode == 1 and "training settings changed" in other.stderr, other.stderr

    code_, err = _interrupt_segmenter_training([*args, "--steps", "1000000", "--resume"],
                                               "SIGTERM", f"resumed {state} at step {step} ",
                                               f"{looping}{step + 1}..1000000")  # fmt: skip
    assert code_ == 143, err
    assert int(torch.load(state, weights_only=False)["step"]) > step

    # without --resume a new run starts over; one that finishes removes its state (the
    # last option given wins: saved after steps 1 and 2 here)
    done = subprocess.run([*args, "--steps", "3", "--save-every", "1"], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "holds an interrupted run; starting over" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.pt"]


def test_train_prior_extends_a_run_and_minds_its_patches(pipeline: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """A run in OUT is continued (more --steps extend it) only on the same label patches:
    other patches stop with the option to pass, or continue / restart as asked."""
    import shutil

    from landprior.diffusion.train import load_checkpoint

    run = tmp_path / "prior"
    shutil.copytree(pipeline["prior"], run)

    def train(*extra: str) -> Result:
        return _run("landcover", "train-prior", "--data", pipeline["root"], "--city",
                    SOURCE_CITY, "--out", run, "--patch-size", "32", "--factor", "4",
                    "--preset", "landcover-cpu", "--batch-size", "4", "--threads", "1",
                    "--no-progress", *extra)  # fmt: skip

    def log_steps() -> list[int]:
        lines = (run / "loss.jsonl").read_text().splitlines()
        return [json.loads(line)["step"] for line in lines]

    extended = train("--patches", "8", "--steps", "3")
    assert extended.exit_code == 0, extended.output
    assert load_checkpoint(run)["step"] == 3 and log_steps() == [1, 2, 3]

    refused = train("--patches", "9", "--steps", "4")
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "the label patches differ from the data the run was trained on" in refused.output
    assert "--on-data-change continue (or restart)" in refused.output
    assert load_checkpoint(run)["step"] == 3 and np.load(run / "patches.npy").shape[0] == 8

    restarted = train("--patches", "9", "--steps", "2", "--on-data-change", "restart")
    assert restarted.exit_code == 0, restarted.output
    assert load_checkpoint(run)["step"] == 2 and log_steps() == [1, 2]
    assert np.load(run / "patches.npy").shape[0] == 9

    continued = train("--patches", "10", "--steps", "3", "--on-data-change", "continue")
    assert continued.exit_code == 0, continued.output
    assert load_checkpoint(run)["step"] == 3 and log_steps() == [1, 2, 3]


def test_train_segmenter_resume_over_another_runs_state(pipeline: dict[str, Path],
                                                       tmp_path: Path) -> None:
    """A state left by another run (here: another --seed) is an error by default and is
    replaced with --on-change restart (what the pipeline does)."""
    from landprior.landcover.segmenter import SegmenterTrainConfig, train_segmenter

    out = tmp_path / "seg.pt"
    stale = tmp_path / "seg.pt.resume"
    images, labels = ChipSet.load(pipeline["source_chips"]).training_tensors()
    model, _ = load_segmenter(pipeline["source_model"])
    train_segmenter(model, images, labels, SegmenterTrainConfig(steps=3, batch_size=2),
                    state_path=stale, save_every=1)  # seed 0; its state stays after step 2
    assert stale.exists()
    args = ["landcover", "train-segmenter", "--chips", pipeline["source_chips"], "--out", out,
            "--init", pipeline["source_model"], "--steps", "3", "--batch-size", "2", "--seed",
            "1", "--no-progress", "--resume"]  # fmt: skip
    error = _fails(*args, match=f"cannot resume {stale}: the training settings changed")
    assert "'seed': (0, 1)" in error and "--on-change restart starts over" in error
    assert not out.exists()
    _ok(*args, "--on-change", "restart")
    assert out.is_file() and not stale.exists()


def test_map_own_imagery_equals_predict_on_the_same_pixels(pipeline: dict[str, Path],
                                                            tiny_dataset: EnviroAtlas,
                                                            tmp_path: Path) -> None:
    """`landcover map` on a tile's NAIP file, copied out of the dataset, writes the very map
    `predict` wrote for that tile (same window and overlap), on the image's own grid."""
    import shutil

    tile = tiny_dataset.tiles(TARGET_CITY, "test")[0]
    mine = tmp_path / "my area.tif"
    shutil.copy(tile.paths[tiny_dataset.layout.layer("naip").name], mine)
    out = tmp_path / "maps"
    result = _ok("landcover", "map", mine, "--model", pipeline["model"], "--out-dir", out,
                 "--window", "16", "--overlap", "4", "--probabilities")
    assert "Warning" not in result.stderr
    for name in ("landcover", "probabilities"):
        with rasterio.open(out / f"my area_{name}.tif") as got, \
                rasterio.open(pipeline["preds"] / f"{tile.tile_id}_{name}.tif") as want:
            assert (got.crs, got.transform, got.shape) == (want.crs, want.transform, want.shape)
            np.testing.assert_array_equal(got.read(), want.read())
            if name == "landcover":
                assert got.colormap(1) and got.nodata == 255


@pytest.mark.realdata
def test_map_a_real_naip_quarter_quad(pipeline: dict[str, Path], tmp_path: Path) -> None:
    """A real NAIP extract (0.6 m, UTM 11N, NIR tagged as alpha): the map keeps its grid."""
    from tests.conftest import shared_data_path

    naip = shared_data_path("naip", "m_3211605_ne_11_060_20200415.tif")
    _ok("landcover", "map", naip, "--model", pipeline["model"], "--out-dir", tmp_path)
    with rasterio.open(naip) as src, \
            rasterio.open(tmp_path / "m_3211605_ne_11_060_20200415_landcover.tif") as got:
        assert (got.crs, got.transform, got.shape) == (src.crs, src.transform, src.shape)
        classes = got.read(1)
    assert set(np.unique(classes).tolist()) <= {0, 1, 2, 3, 4}  # NIR = 0 is not "no data"


def test_map_refuses_what_it_cannot_map(pipeline: dict[str, Path], tiny_dataset: EnviroAtlas,
                                         tmp_path: Path) -> None:
    tile = tiny_dataset.tiles(TARGET_CITY, "test")[0]
    naip = Path(tile.paths[tiny_dataset.layout.layer("naip").name])
    with rasterio.open(naip) as src:
        profile, pixels = dict(src.profile), src.read()
    rgb = tmp_path / "rgb.tif"
    with rasterio.open(rgb, "w", **{**profile, "count": 3}) as dst:
        dst.write(pixels[:3])
    small = tmp_path / "small.tif"
    with rasterio.open(small, "w", **{**profile, "width": 40, "height": 40}) as dst:
        dst.write(pixels[:, :40, :40])
    out = tmp_path / "maps"
    mapping = ("landcover", "map", "--model", pipeline["model"], "--out-dir", out)
    _fails(*mapping, rgb, match=f"{rgb}: expected 4 uint8 bands (R, G, B, NIR; NAIP), got 3")
    _fails(*mapping, small, match=f"{small} is 40 x 40 px, smaller than one prediction window")
    no_crs = tmp_path / "no_crs.tif"
    with rasterio.open(no_crs, "w", **{**profile, "crs": None}) as dst:
        dst.write(pixels)
    _fails(*mapping, no_crs, match=f"{no_crs} has no CRS: its map could not be georeferenced")
    cut = tmp_path / "cut.tif"
    with rasterio.open(cut, "w", **{**profile, "tiled": False, "compress": "deflate"}) as dst:
        dst.write(pixels)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    _fails(*mapping, cut, match=f"{cut}: reading the image failed")
    _fails(*mapping, naip, "--guide-sigma", "5", match="--guide-sigma")
    # a bad image anywhere in the list stops the run before any map is written
    _fails(*mapping, naip, rgb, match=f"{rgb}: expected 4 uint8 bands")
    twin = tmp_path / "a" / naip.name
    twin.parent.mkdir()
    twin.write_bytes(naip.read_bytes())
    _fails(*mapping, naip, twin, match="several IMAGES are named")
    weak_model = tmp_path / "weak.pt"
    _ok("landcover", "train-segmenter", "--chips", pipeline["source_chips"], "--inputs",
        "image+weak", "--base-channels", "4", "--depth", "2", "--out", weak_model, "--steps",
        "1", "--batch-size", "2", "--no-progress")
    _fails("landcover", "map", naip, "--model", weak_model, "--out-dir", out,
           match="takes imagery + weak labels")
    assert not out.exists() or not list(out.iterdir())


def test_train_prior_names_the_option_of_a_bad_setting(pipeline: dict[str, Path],
                                                       tmp_path: Path) -> None:
    """nan slips through click's ranges; TrainConfig refuses it under the option's name,
    before any label patch is read or run folder made."""
    result = _run("landcover", "train-prior", "--data", pipeline["root"], "--city", SOURCE_CITY,
                  "--out", tmp_path / "run", "--lr", "nan")
    assert result.exit_code == 2 and "Invalid value for '--lr'" in result.output, result.output
    assert "TrainConfig" not in result.output and not (tmp_path / "run").exists()


def test_every_mapping_option_offers_the_library_mappings() -> None:
    """The CLI spells the mapping names out (no numpy import for --help): keep them in step."""
    from landprior.commands.landcover import group as landcover
    from landprior.landcover.classes import MAPPING_NAMES

    found = {
        name: param
        for name, command in landcover.commands.items()
        for param in command.params
        if param.name == "mapping"
    }
    assert {"chips", "evaluate", "train-prior"} <= set(found)
    for name, param in found.items():
        assert tuple(param.type.choices) == MAPPING_NAMES, name
        assert param.default == "prior" and param.help == found["chips"].help, name
