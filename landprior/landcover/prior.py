"""The label prior: a DDPM on one-hot land-cover patches of the source city (section 4).

Paper: random 256 x 256 label patches at 1 m from the source city (Pittsburgh), flipped,
nearest/mode-downsampled x1/4 to 64 x 64, one-hot; eps-prediction U-Net, Adam 1e-4.
Here the patch size, pooling factor and U-Net preset are parameters: the CPU demo uses
128 m patches (32 x 32 at 4 m) and the small ``landcover-cpu`` U-Net.

Scale: one-hot ``{0, 1}`` maps to ``x = 2 * onehot - 1`` in [-1, 1]; ignored pixels
(rare: patches with more than ``max_ignore_fraction`` ignored pixels are redrawn) become
all -1 ("no class").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from landprior.diffusion.images import save_grid
from landprior.diffusion.sample import ddim_sample, ddpm_sample
from landprior.diffusion.train import (
    CHECKPOINT_NAME,
    TrainConfig,
    TrainResult,
    export_inference_checkpoint,
    load_checkpoint,
    load_denoiser,
    train,
)
from landprior.diffusion.unet import UNetConfig
from landprior.landcover.classes import CLASS_COLORS, IGNORE_INDEX, NUM_CLASSES, MappingName

if TYPE_CHECKING:  # reading tiles needs rasterio; training and sampling do not
    from landprior.landcover.enviroatlas import EnviroAtlas

log = logging.getLogger(__name__)

PALETTE = tuple(tuple(c / 255 for c in rgb) for rgb in CLASS_COLORS)


def _check_label_patches(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``labels`` as an (N, h, w) array of class indices below ``num_classes`` (or ignored)."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"label patches must be (N, h, w), got shape {labels.shape}")
    valid = labels != IGNORE_INDEX
    if valid.any() and int(labels[valid].max()) >= num_classes:
        raise ValueError(f"label patches reach class {int(labels[valid].max())} >= {num_classes}")
    return labels


def labels_to_x(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(N, h, w) uint8 class indices -> (N, L, h, w) float32 in [-1, 1]; 255 -> all -1."""
    labels = _check_label_patches(labels, num_classes)
    valid = labels != IGNORE_INDEX
    onehot = (labels[:, None] == np.arange(num_classes)[None, :, None, None]) & valid[:, None]
    return np.where(onehot, np.float32(1.0), np.float32(-1.0))


class OneHotLabelPatches:
    """Label patches (N, h, w) uint8 served as one-hot ``labels_to_x`` batches.

    The training loop asks for whole batches (:meth:`batch`), so the patches stay uint8 in
    memory: 20,000 patches of 64 x 64 (the paper-scale configuration) hold 82 MB here against
    1.6 GB as a float32 one-hot tensor. The values are those of ``labels_to_x`` of the whole
    array, so training draws the same batches either way.
    """

    def __init__(self, patches: np.ndarray, num_classes: int = NUM_CLASSES) -> None:
        self.patches = _check_label_patches(patches, num_classes)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, i: int) -> np.ndarray:
        """Patch ``i`` as (L, h, w) float32 in [-1, 1]."""
        return self.batch(np.array([i]))[0]

    def batch(self, indices: np.ndarray) -> np.ndarray:
        """Patches ``indices`` as (B, L, h, w) float32 in [-1, 1] (one vectorised encode)."""
        return labels_to_x(self.patches[indices], self.num_classes)


def source_label_patches(
    dataset: EnviroAtlas,
    city: str,
    n: int,
    *,
    splits: tuple[str, ...] = ("train",),
    size: int = 128,
    factor: int = 4,
    mapping: MappingName = "prior",
    max_ignore_fraction: float = 0.05,
    seed: int = 0,
) -> np.ndarray:
    """``n`` random label patches (n, size/f, size/f) uint8 from ``city``'s tiles, flipped."""
    from landprior.landcover.tiling import sample_label_patches

    tiles = [t for s in splits for t in dataset.tiles(city, s)]
    if not tiles:
        raise ValueError(f"city {city!r} has no tiles in splits {splits} under {dataset.root}")
    rng = np.random.default_rng(seed)
    counts = np.full(len(tiles), n // len(tiles))
    counts[rng.permutation(len(tiles))[: n % len(tiles)]] += 1
    out = []
    for tile, count in zip(tiles, counts, strict=True):
        if count == 0:
            continue
        labels = dataset.read_labels(tile, mapping)
        out.append(
            sample_label_patches(
                labels, int(count), generator=rng, size=size, factor=factor, flips=True,
                max_ignore_fraction=max_ignore_fraction, name=tile.key,
            )
        )
    patches = np.concatenate(out)
    log.info("sampled %d label patches of %s (%d tiles)", len(patches), city, len(tiles))
    return patches


def train_label_prior(
    patches: np.ndarray,
    out_dir: str | Path,
    *,
    preset: str | UNetConfig = "landcover-cpu",
    config: TrainConfig | None = None,
    resume: bool = True,
    progress: bool = True,
    allow_data_change: bool = False,
) -> TrainResult:
    """Train the DDPM on label patches (N, h, w) uint8; checkpoints in ``out_dir``.

    ``resume`` continues a run in ``out_dir`` on the same patches (other patches raise
    :class:`~landprior.diffusion.train.TrainingDataChanged` unless ``allow_data_change``).

    ``preset`` names a U-Net preset, whose input and output channels are set to the number
    of classes of the one-hot patches; an explicit ``UNetConfig`` is used as given (a
    channel mismatch is then an error).
    """
    x = OneHotLabelPatches(patches)  # one-hot per batch: the patches stay uint8
    channels = x.num_classes
    unet = preset
    if isinstance(preset, str):
        unet = UNetConfig.preset(preset)
        if unet.in_channels != channels or unet.out_channels != channels:
            unet = unet.replace(in_channels=channels, out_channels=channels)
    # default: the CPU recipe (models/landcover/README.md: ~17 min on one thread)
    config = config or TrainConfig(steps=3000, batch_size=32, lr=1e-3, ema_rate=0.995)
    return train(x, unet, config, out_dir, resume=resume, progress=progress,
                 allow_data_change=allow_data_change)


def sample_label_grid(
    checkpoint: str | Path,
    out_png: str | Path,
    *,
    size: int,
    n: int = 16,
    seed: int = 0,
    scale: int = 4,
    sampler: str = "ddpm",
    steps: int = 100,
    real_patches: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> Path:
    """Unconditional samples (``size`` x ``size``) of the prior in class colours (PNG grid).

    ``sampler``: "ddpm" (ancestral, all T steps; the default: small CPU priors draw
    visibly cleaner layouts with it) or "ddim" (``steps`` steps, eta 0). With
    ``real_patches`` (N, h, w) uint8, the top half shows real label patches and the
    bottom half samples, for comparison.
    """
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
    denoiser, schedule, meta = load_denoiser(checkpoint, device=device)
    channels = int(meta["unet_config"].in_channels)
    g = torch.Generator().manual_seed(seed)
    shape = (n, channels, size, size)
    with torch.no_grad():
        if sampler == "ddpm":
            x = ddpm_sample(denoiser, schedule, shape, generator=g, clip_x0=1.0, device=device)
        else:
            x = ddim_sample(denoiser, schedule, shape, steps=steps, generator=g, clip_x0=1.0,
                            device=device)  # fmt: skip
    return _save_label_grid(x.cpu(), out_png, real_patches=real_patches, seed=seed, scale=scale)


def _save_label_grid(
    x: Tensor, out_png: str | Path, *, real_patches: np.ndarray | None, seed: int, scale: int
) -> Path:
    """Samples x (n, L, h, w) in class colours; real patches (if given) in the rows above."""
    n, channels = x.shape[:2]
    nrow = int(np.ceil(np.sqrt(n)))
    if real_patches is not None:
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(real_patches), size=min(n, len(real_patches)), replace=False)
        real = torch.from_numpy(labels_to_x(real_patches[pick], channels))
        x = torch.cat([real, x])
    return save_grid(x, out_png, nrow=nrow, palette=PALETTE, scale=scale)


def _class_frequencies(labels: np.ndarray, num_classes: int) -> np.ndarray:
    valid = labels[labels != IGNORE_INDEX]
    counts = np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
    return counts / max(int(counts.sum()), 1)


def _same_class_neighbour_fraction(labels: np.ndarray) -> float:
    """Share of 4-neighbour pixel pairs with the same class (1 - boundary density)."""
    same = [labels[:, 1:, :] == labels[:, :-1, :], labels[:, :, 1:] == labels[:, :, :-1]]
    return float(sum(int(m.sum()) for m in same) / sum(m.size for m in same))


def prior_quality(
    checkpoint: str | Path,
    patches: np.ndarray,
    *,
    ts: tuple[int, ...] = (400, 700),
    n_samples: int = 64,
    seed: int = 0,
    batch_size: int = 64,
    samples_png: str | Path | None = None,
    device: torch.device | str = "cpu",
    train_patches: np.ndarray | None = None,
) -> dict[str, object]:
    """How well a label prior knows the layouts of ``patches`` (N, h, w) uint8 (held-out).

    * ``denoise_accuracy_t{t}``: the class of argmax x0_hat(x_t) (eq. 2's one-step estimate
      from a forward-noised patch) against the patch, over non-ignored pixels;
    * ``samples``: ``n_samples`` unconditional DDPM samples (argmax): class frequencies
      next to the patches' and their total-variation distance, and the share of
      4-neighbour pixel pairs of the same class (layout smoothness) for both
      (left out when ``n_samples`` is 0). ``train_patches`` (patches of the data the prior
      was trained on) adds their class frequencies and the samples' distance to them: a
      held-out tile can hold another class mix than the training tiles, and a faithful
      prior follows the training data.

    ``samples_png``: also draw up to 16 of those samples below real patches
    (the :func:`sample_label_grid` layout) - no second sampling run.
    """
    if samples_png is not None and n_samples < 1:
        raise ValueError("samples_png needs n_samples >= 1 (the PNG shows those samples)")
    denoiser, schedule, meta = load_denoiser(checkpoint, device=device)
    channels = int(meta["unet_config"].in_channels)
    x0 = torch.from_numpy(labels_to_x(patches, channels))
    valid = torch.from_numpy(np.asarray(patches) != IGNORE_INDEX)
    truth = torch.from_numpy(np.asarray(patches).astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    out: dict[str, object] = {"checkpoint": str(checkpoint), "n_patches": len(patches)}
    with torch.no_grad():
        for t in ts:
            right = 0
            for lo in range(0, len(x0), batch_size):
                xb = x0[lo : lo + batch_size]
                noise = torch.randn(xb.shape, generator=g)
                tt = torch.full((len(xb),), int(t), dtype=torch.long)
                x_t = schedule.q_sample(xb, tt, noise).to(device)
                tt = tt.to(device)
                pred = schedule.predict_x0(x_t, tt, denoiser(x_t, tt)).argmax(1).cpu()
                rows = slice(lo, lo + batch_size)
                right += int(((pred == truth[rows]) & valid[rows]).sum())
            out[f"denoise_accuracy_t{t}"] = right / max(int(valid.sum()), 1)
        if n_samples < 1:
            return out
        h, w = patches.shape[1:]
        samples = []
        for lo in range(0, n_samples, batch_size):
            shape = (min(batch_size, n_samples - lo), channels, h, w)
            samples.append(ddpm_sample(denoiser, schedule, shape, generator=g, clip_x0=1.0,
                                       device=device).cpu())  # fmt: skip
        x_drawn = torch.cat(samples)
        drawn = x_drawn.argmax(1).numpy().astype(np.uint8)
    if samples_png is not None:
        _save_label_grid(x_drawn[:16], samples_png, real_patches=np.asarray(patches),
                         seed=seed, scale=4)  # fmt: skip
    data_freq = _class_frequencies(np.asarray(patches), channels)
    sample_freq = _class_frequencies(drawn, channels)
    out["samples"] = {
        "n": n_samples,
        "class_frequencies": [round(float(v), 4) for v in sample_freq],
        "data_class_frequencies": [round(float(v), 4) for v in data_freq],
        "class_frequency_tv": round(float(0.5 * np.abs(sample_freq - data_freq).sum()), 4),
        "same_class_neighbours": round(_same_class_neighbour_fraction(drawn), 4),
        "data_same_class_neighbours": round(
            _same_class_neighbour_fraction(np.asarray(patches)), 4
        ),
    }
    if train_patches is not None:
        train_freq = _class_frequencies(np.asarray(train_patches), channels)
        out["samples"]["train_class_frequencies"] = [round(float(v), 4) for v in train_freq]
        out["samples"]["train_class_frequency_tv"] = round(
            float(0.5 * np.abs(sample_freq - train_freq).sum()), 4
        )
    return out


def install_label_prior(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    num_classes: int = NUM_CLASSES,
) -> Path:
    """Check a trained (or exported) label prior and copy it to ``out_dir/checkpoint.pt``.

    For pipelines that reuse a shipped prior instead of training one. Raises ValueError
    naming the file when the network's class count differs from ``num_classes``. The copy
    holds the EMA weights only and is written atomically.
    """
    ckpt = load_checkpoint(checkpoint)
    unet = UNetConfig.from_dict(ckpt["unet_config"])
    if unet.in_channels != num_classes or unet.out_channels != num_classes:
        raise ValueError(
            f"{checkpoint}: the prior models {unet.in_channels} classes, the class table "
            f"has {num_classes}"
        )
    out = Path(out_dir) / CHECKPOINT_NAME
    export_inference_checkpoint(checkpoint, out, use_ema=True)
    log.info("installed label prior %s (step %d) as %s", checkpoint, ckpt["step"], out)
    return out
