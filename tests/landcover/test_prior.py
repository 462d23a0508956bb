"""The label prior: one-hot scaling, source label patches, training and the sample grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import image as mpimg

from landprior.diffusion.train import TrainConfig, TrainResult, load_denoiser
from landprior.diffusion.unet import UNetConfig
from landprior.landcover.enviroatlas import EnviroAtlas
from landprior.landcover.prior import (
    OneHotLabelPatches,
    labels_to_x,
    prior_quality,
    sample_label_grid,
    source_label_patches,
    train_label_prior,
)
from tests.landcover.conftest import SOURCE_CITY, TARGET_CITY

TINY_PRIOR = UNetConfig.preset("tiny", in_channels=5, image_size=8)
Trained = tuple[np.ndarray, Path, TrainResult]


def test_labels_to_x_is_one_hot_in_minus_one_one() -> None:
    labels = np.array([[[0, 1, 2], [3, 4, 255]]], dtype=np.uint8)
    x = labels_to_x(labels)
    assert x.shape == (1, 5, 2, 3) and x.dtype == np.float32
    assert set(np.unique(x).tolist()) == {-1.0, 1.0}
    onehot = (x + 1) / 2
    for (r, c), k in np.ndenumerate(labels[0]):
        if k == 255:
            np.testing.assert_array_equal(x[0, :, r, c], -1.0)  # ignored: no class at all
        else:
            expected = -np.ones(5, np.float32)
            expected[k] = 1.0
            np.testing.assert_array_equal(x[0, :, r, c], expected)
            assert onehot[0, :, r, c].sum() == 1
    # fewer classes than the default is allowed when the labels fit
    assert labels_to_x(np.zeros((2, 4, 4), np.uint8), num_classes=3).shape == (2, 3, 4, 4)
    assert (labels_to_x(np.full((1, 2, 2), 255, np.uint8)) == -1).all()


def test_labels_to_x_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="reach class 5 >= 5"):
        labels_to_x(np.array([[[0, 5]]], dtype=np.uint8))
    with pytest.raises(ValueError, match="reach class 3 >= 3"):
        labels_to_x(np.array([[[3, 255]]], dtype=np.uint8), num_classes=3)
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        labels_to_x(np.zeros((4, 4), np.uint8))


def test_source_label_patches_shapes_and_determinism(tiny_dataset: EnviroAtlas) -> None:
    p = source_label_patches(tiny_dataset, SOURCE_CITY, 7, size=32, factor=4, seed=1)
    assert p.shape == (7, 8, 8) and p.dtype == np.uint8
    valid = p[p != 255]
    assert valid.size and valid.max() < 5
    assert (p == 255).mean(axis=(1, 2)).max() <= 0.05  # max_ignore_fraction
    assert len(np.unique(p)) >= 2  # real structure, not a constant fill
    again = source_label_patches(tiny_dataset, SOURCE_CITY, 7, size=32, factor=4, seed=1)
    np.testing.assert_array_equal(p, again)
    other = source_label_patches(tiny_dataset, SOURCE_CITY, 7, size=32, factor=4, seed=2)
    assert not np.array_equal(p, other)
    big = source_label_patches(tiny_dataset, SOURCE_CITY, 3, size=64, factor=2,
                               splits=("train", "val"), seed=0)
    assert big.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="no split 'train'"):
        source_label_patches(tiny_dataset, TARGET_CITY, 2, size=32)


@pytest.fixture(scope="module")
def trained_prior(tiny_dataset: EnviroAtlas, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    patches = source_label_patches(tiny_dataset, SOURCE_CITY, 6, size=32, factor=4, seed=0)
    out = tmp_path_factory.mktemp("prior")
    config = TrainConfig(steps=3, batch_size=4, lr=1e-3, ema_rate=0.9, checkpoint_every=2)
    result = train_label_prior(patches, out, preset=TINY_PRIOR, config=config, progress=False)
    return patches, out, result


def test_train_label_prior_writes_a_checkpoint(trained_prior: Trained) -> None:
    patches, out, result = trained_prior
    assert result.step == 3 and len(result.losses) == 3
    assert all(np.isfinite(result.losses))
    assert result.checkpoint == out / "checkpoint.pt" and result.checkpoint.is_file()
    log = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    denoiser, _, meta = load_denoiser(result.checkpoint)
    assert meta["step"] == 3 and meta["unet_config"].in_channels == 5
    x = torch.from_numpy(labels_to_x(patches[:2]))
    with torch.no_grad():
        eps = denoiser(x, torch.tensor([10, 500]))
    assert eps.shape == x.shape


def test_one_hot_label_patches_serve_labels_to_x_per_patch() -> None:
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 5, (7, 6, 6)).astype(np.uint8)
    patches[2, :2, :3] = 255
    served = OneHotLabelPatches(patches)
    assert len(served) == 7
    np.testing.assert_array_equal(np.stack([served[i] for i in range(7)]), labels_to_x(patches))
    assert served[0].dtype == np.float32 and served.patches.dtype == np.uint8
    picks = np.array([3, 1, 3, 6])  # whole batches in one call, repeats allowed
    np.testing.assert_array_equal(served.batch(picks), labels_to_x(patches[picks]))
    with pytest.raises(ValueError, match="reach class 5 >= 5"):
        OneHotLabelPatches(np.array([[[0, 5]]], dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        OneHotLabelPatches(np.zeros((4, 4), np.uint8))


def test_train_label_prior_matches_training_on_the_one_hot_tensor(
    trained_prior: Trained, tmp_path: Path
) -> None:
    """Serving uint8 patches one-hot per batch changes memory, not the training run."""
    from landprior.diffusion.train import train

    patches, _, result = trained_prior
    config = TrainConfig(steps=3, batch_size=4, lr=1e-3, ema_rate=0.9, checkpoint_every=2)
    x = torch.from_numpy(labels_to_x(patches))
    dense = train(x, TINY_PRIOR, config, tmp_path, progress=False)
    assert dense.losses == result.losses


def test_train_label_prior_resumes_and_refuses_wrong_classes(
    trained_prior: Trained, tmp_path: Path
) -> None:
    patches, out, _ = trained_prior
    again = train_label_prior(patches, out, preset=TINY_PRIOR,
                              config=TrainConfig(steps=3, batch_size=4, lr=1e-3, ema_rate=0.9),
                              progress=False)
    assert again.step == 3 and again.losses == []  # already done: nothing retrained
    with pytest.raises(ValueError, match="5 channels"):
        train_label_prior(patches, tmp_path / "bad",
                          preset=UNetConfig.preset("tiny", in_channels=4, image_size=8),
                          config=TrainConfig(steps=1, batch_size=2), progress=False)


def test_sample_label_grid_writes_a_png(trained_prior: Trained, tmp_path: Path) -> None:
    *_, result = trained_prior
    png = sample_label_grid(result.checkpoint, tmp_path / "g" / "samples.png", size=8, n=4,
                            scale=2)  # ancestral DDPM over all T steps, the default
    assert png == tmp_path / "g" / "samples.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    # real patches on top: n constant "barren" patches (whatever the pick) above the samples
    real = np.full((4, 8, 8), 2, np.uint8)
    with_real = sample_label_grid(result.checkpoint, tmp_path / "both.png", size=8, n=4,
                                  sampler="ddim", steps=3, scale=2, real_patches=real)
    with pytest.raises(ValueError, match="sampler"):
        sample_label_grid(result.checkpoint, tmp_path / "x.png", size=8, sampler="euler")
    both = mpimg.imread(with_real)[..., :3]
    assert both.shape[1] == img.shape[1] and both.shape[0] > img.shape[0]
    from landprior.landcover.prior import PALETTE

    barren = np.asarray(PALETTE[2], dtype=np.float32)
    pad, cell = 2 * 2, 8 * 2  # padding and cell size in PNG pixels (scale 2)

    def cell_at(r: int, c: int) -> np.ndarray:
        top, left = pad + r * (cell + pad), pad + c * (cell + pad)
        return both[top : top + cell, left : left + cell]

    for r, c in ((0, 0), (0, 1), (1, 0), (1, 1)):  # the grid is 2 wide: rows 0-1 are real
        np.testing.assert_allclose(cell_at(r, c), np.broadcast_to(barren, (cell, cell, 3)),
                                   atol=0.01)
    samples = np.concatenate([cell_at(r, c) for r in (2, 3) for c in (0, 1)])
    assert np.abs(samples - barren).sum(-1).max() > 0.1  # the samples are not all barren


def test_the_shipped_demo_prior_installs(tmp_path: Path) -> None:
    """models/landcover/demo-prior.pt: the landcover-cpu net over the 5 classes, EMA weights."""
    from landprior.landcover.prior import install_label_prior

    shipped = Path(__file__).resolve().parents[2] / "models" / "landcover" / "demo-prior.pt"
    out = install_label_prior(shipped, tmp_path)
    denoiser, _, meta = load_denoiser(out)
    net = meta["unet_config"]
    assert net.replace(out_channels=None) == UNetConfig.preset("landcover-cpu")
    assert net.in_channels == net.out_channels == 5 and meta["step"] == 10_000
    x = torch.zeros(1, 5, 32, 32)
    assert denoiser(x, torch.tensor([10])).shape == x.shape


def test_prior_quality_reports_denoising_and_sample_statistics(trained_prior: Trained) -> None:
    patches, _, result = trained_prior
    q = prior_quality(result.checkpoint, patches, ts=(50, 700), n_samples=3, batch_size=4)
    assert q["n_patches"] == len(patches)
    for t in (50, 700):
        assert 0.0 <= q[f"denoise_accuracy_t{t}"] <= 1.0
    s = q["samples"]
    assert s["n"] == 3 and len(s["class_frequencies"]) == 5
    assert sum(s["class_frequencies"]) == pytest.approx(1.0, abs=1e-3)
    valid = patches[patches != 255]
    expected = np.bincount(valid, minlength=5) / valid.size
    np.testing.assert_allclose(s["data_class_frequencies"], expected, atol=1e-4)
    assert 0.0 <= s["class_frequency_tv"] <= 1.0
    assert 0.0 <= s["same_class_neighbours"] <= 1.0
    constant = prior_quality(result.checkpoint, np.full((2, 8, 8), 3, np.uint8), n_samples=1)
    assert constant["samples"]["data_same_class_neighbours"] == 1.0
    assert constant["samples"]["data_class_frequencies"] == [0.0, 0.0, 0.0, 1.0, 0.0]
    train = np.full((2, 8, 8), 1, np.uint8)
    both = prior_quality(result.checkpoint, patches, n_samples=2, train_patches=train)["samples"]
    assert both["train_class_frequencies"] == [0.0, 1.0, 0.0, 0.0, 0.0]
    tv = 0.5 * np.abs(np.array(both["class_frequencies"]) - [0, 1, 0, 0, 0]).sum()
    assert both["train_class_frequency_tv"] == pytest.approx(tv, abs=1e-3)
    assert "samples" not in prior_quality(result.checkpoint, patches, n_samples=0)
    with pytest.raises(ValueError, match="samples_png needs n_samples"):
        prior_quality(result.checkpoint, patches, n_samples=0, samples_png="x.png")


def test_prior_quality_draws_its_own_samples_as_png(trained_prior: Trained, tmp_path: Path) -> None:
    patches, _, result = trained_prior
    png = tmp_path / "q.png"
    prior_quality(result.checkpoint, patches, ts=(50,), n_samples=4, batch_size=4, samples_png=png)
    img = mpimg.imread(png)[..., :3]
    # four samples (2 x 2) below four real patches: 4 rows of 8 x 8 cells at scale 4
    pad, cell = 2 * 4, 8 * 4
    assert img.shape[0] == 4 * cell + 5 * pad and img.shape[1] == 2 * cell + 3 * pad


def test_the_shipped_demo_prior_denoises_source_labels(
    tiny_dataset: EnviroAtlas, trained_prior: Trained
) -> None:
    """A trained prior recovers most of a half-noised label patch; a 3-step one does not."""
    shipped = Path(__file__).resolve().parents[2] / "models" / "landcover" / "demo-prior.pt"
    patches = source_label_patches(tiny_dataset, SOURCE_CITY, 16, size=128, factor=4, seed=1)
    good = prior_quality(shipped, patches, ts=(400,), n_samples=0)["denoise_accuracy_t400"]
    *_, untrained = trained_prior
    tiny = prior_quality(untrained.checkpoint, patches[:, :8, :8], ts=(400,), n_samples=0)
    assert good > 0.7 and good > tiny["denoise_accuracy_t400"] + 0.2
