"""The segmentation network p(labels | image) that pseudo-labels fine-tune (paper section 4).

* :class:`SegmentationUNet`: a compact U-Net on 4-band imagery, optionally with the
  5 weak-label bands as extra input channels (the "supervised + weak labels" baseline).
* :func:`train_segmenter`: seeded cross-entropy training on in-memory chips (pretraining
  on the source city, fine-tuning or training from scratch on pseudo-labels).
* :func:`iter_strip_predictions`: sliding-window prediction of a whole tile with overlap
  blending, emitted strip by strip, so memory is bounded by a strip of windows, not the
  tile. Runs at a coarser model resolution (``downsample``) and upsamples probabilities
  guided by the full-resolution imagery (:mod:`landprior.landcover.upsample`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from landprior.fileio import torch_load_checked, torch_save_atomic
from landprior.fingerprint import array_fingerprint, native_bytes
from landprior.interrupt import StopOnSignal, TrainingInterrupted
from landprior.landcover.classes import IGNORE_INDEX, NUM_CLASSES
from landprior.landcover.upsample import (
    DEFAULT_SIGMA_RANGE,
    UPSAMPLE_MODES,
    UpsampleMode,
    upsample_probabilities,
)
from landprior.rng_state import capture_rng_state, restore_rng_state

log = logging.getLogger(__name__)


NORMS: tuple[str, ...] = ("group", "batch")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(min(8, channels), channels)


def _block(c_in: int, c_out: int, dropout: float, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        _norm(norm, c_out),
        nn.SiLU(),
        nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        _norm(norm, c_out),
        nn.SiLU(),
    )


@dataclass(frozen=True)
class SegmenterConfig:
    """Architecture of :class:`SegmentationUNet` (saved with every checkpoint).

    ``norm``: "group" (GroupNorm, 8 groups: statistics of the window the net sees, so its
    predictions depend on the prediction window) or "batch" (BatchNorm: running statistics
    of the training batches at inference, so a pixel's prediction depends only on its
    receptive field, not on the window).
    """

    in_channels: int = 4
    num_classes: int = NUM_CLASSES
    base_channels: int = 32
    depth: int = 3
    dropout: float = 0.0
    norm: str = "group"

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"unknown segmenter norm {self.norm!r}; expected one of {NORMS}")

    def build(self) -> SegmentationUNet:
        """A freshly initialised network of this configuration."""
        return SegmentationUNet(self)


class SegmentationUNet(nn.Module):
    """U-Net: (B, in_channels, H, W) in [0, 1] -> logits (B, num_classes, H, W).

    H and W must be divisible by ``2 ** depth``.
    """

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SegmenterConfig()
        if config.depth < 1:
            raise ValueError(f"depth must be >= 1, got {config.depth}")
        chans = [config.base_channels * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList()
        c_in = config.in_channels
        for c in chans[:-1]:
            self.down.append(_block(c_in, c, config.dropout, config.norm))
            c_in = c
        self.bottom = _block(chans[-2], chans[-1], config.dropout, config.norm)
        self.up = nn.ModuleList()
        for c_hi, c in zip(reversed(chans[1:]), reversed(chans[:-1]), strict=True):
            self.up.append(_block(c_hi + c, c, config.dropout, config.norm))
        self.head = nn.Conv2d(chans[0], config.num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"segmenter expects (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}"
            )
        m = 2**self.config.depth
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"H and W must be divisible by {m}, got {tuple(x.shape[-2:])}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


@dataclass(frozen=True)
class SegmenterTrainConfig:
    """Optimisation settings for :func:`train_segmenter`."""

    steps: int = 500
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = True
    replay_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ValueError(f"replay_fraction must be in [0, 1), got {self.replay_fraction}")


def _augment(images: Tensor, labels: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random flips and 90-degree rotations, the same for image and label (per batch)."""
    k = int(torch.randint(0, 4, (1,), generator=g))
    images, labels = torch.rot90(images, k, (-2, -1)), torch.rot90(labels, k, (-2, -1))
    if bool(torch.randint(0, 2, (1,), generator=g)):
        images, labels = images.flip(-1), labels.flip(-1)
    return images, labels


def _check_labels(labels: Tensor, num_classes: int) -> None:
    valid = labels[labels != IGNORE_INDEX]
    if valid.numel() and int(valid.max()) >= num_classes:
        raise ValueError(
            f"labels reach class {int(valid.max())} but the model has {num_classes} classes"
        )


SEGMENTER_STATE_FORMAT = "landprior.segmenter-train-state.v1"


def training_state_path(out: str | Path) -> Path:
    """Where a run writing checkpoint ``out`` keeps its resumable state: ``out`` + ".resume"."""
    out = Path(out)
    return out.with_name(out.name + ".resume")


def _fingerprint(*tensors: Tensor | None) -> list[dict[str, object] | None]:
    """What a resumed run must see again: the fingerprint of each training tensor."""
    return [None if t is None else array_fingerprint(t) for t in tensors]


def _weights_fingerprint(model: nn.Module) -> str:
    """A hash of the starting weights (from --init, or drawn with the seed): a run resumed
    over other starting weights would continue the wrong run."""
    digest = hashlib.blake2b(digest_size=16)
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(native_bytes(value))
    return digest.hexdigest()


class SegmenterStateMismatch(ValueError):
    """A saved training state belongs to another run (other U-Net, settings, chips or
    starting weights); ``path`` is the state file."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


_RESUME_CHECKS = (("model_config", "the U-Net"), ("train_config", "the training settings"),
                  ("data", "the training chips"),
                  ("init_weights", "the starting weights (--init, or the seed)"))  # fmt: skip


def _check_resumable(state: dict, path: Path, expected: dict[str, object]) -> None:
    if state.get("format") != SEGMENTER_STATE_FORMAT:
        raise SegmenterStateMismatch(path, f"{path} is not a segmenter training state "
                                     f"(format {state.get('format')!r})")  # fmt: skip
    for key, what in _RESUME_CHECKS:
        if state.get(key) != expected[key]:
            old, new = state.get(key), expected[key]
            if isinstance(old, dict) and isinstance(new, dict):
                diff = {k: (old.get(k), new.get(k)) for k in old.keys() | new.keys()
                        if old.get(k) != new.get(k)}  # fmt: skip
                detail = f" (was, now: {diff})"
            else:
                detail = ""
            raise SegmenterStateMismatch(
                path, f"cannot resume {path}: {what} changed since it was saved{detail}; "
                "resume with the same settings and chips, or start over"
            )


def train_segmenter(
    model: SegmentationUNet,
    images: Tensor,
    labels: Tensor,
    config: SegmenterTrainConfig = SegmenterTrainConfig(),
    *,
    replay: tuple[Tensor, Tensor] | None = None,
    callback: Callable[[int, float], None] | None = None,
    progress: bool = False,
    state_path: str | Path | None = None,
    resume: bool = False,
    save_every: int = 200,
) -> list[float]:
    """Cross-entropy training (ignore index 255) on chips; returns the loss per step.

    Args:
        images: (N, C, H, W) float in [0, 1].
        labels: (N, H, W) long class indices, 255 = ignore.
        replay: optional (images, labels) of another set (the source city's labelled chips)
            mixed into every batch at ``config.replay_fraction``: fine-tuning on noisy
            pseudo-labels then adapts to the target without forgetting what the source
            labels taught.
        state_path: where to keep the resumable training state (weights, optimizer,
            schedule, random states, losses): written every ``save_every`` steps and when
            SIGINT / SIGTERM stops the run after its current step (which then raises
            :class:`~landprior.interrupt.TrainingInterrupted`). The caller deletes it once
            the final checkpoint is safe.
        resume: continue from ``state_path`` if it exists (same model configuration,
            settings, chips and starting weights, else :class:`SegmenterStateMismatch`);
            the result is the same, step for step, as an uninterrupted run.
    """
    if images.dim() != 4 or labels.dim() != 3 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images must be (N, C, H, W) and labels (N, H, W) with the same N; got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if images.shape[-2:] != labels.shape[-2:]:
        raise ValueError(
            f"image grid {tuple(images.shape[-2:])} != label grid {tuple(labels.shape[-2:])}"
        )
    if images.shape[0] == 0:
        raise ValueError("no training chips")
    if not torch.isfinite(images).all():
        raise ValueError("training images contain NaN or inf")
    if save_every < 1:
        raise ValueError(f"save_every must be >= 1, got {save_every}")
    labels = labels.long()
    _check_labels(labels, model.config.num_classes)
    n_replay = 0
    r_images = r_labels = None
    if replay is not None:
        r_images, r_labels = replay[0], replay[1].long()
        if r_images.shape[1:] != images.shape[1:] or r_labels.shape[1:] != labels.shape[1:]:
            raise ValueError(
                f"replay chips {tuple(r_images.shape)} / {tuple(r_labels.shape)} do not match "
                f"the training chips {tuple(images.shape)} / {tuple(labels.shape)}"
            )
        if r_images.shape[0] == 0 or not torch.isfinite(r_images).all():
            raise ValueError("replay chips are empty or contain NaN or inf")
        _check_labels(r_labels, model.config.num_classes)
        # at least one chip of the training set per batch
        n_replay = min(round(config.batch_size * config.replay_fraction), config.batch_size - 1)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(config.steps, 1))
    losses: list[float] = []
    start = 0
    state_file = Path(state_path) if state_path is not None else None
    expected: dict[str, object] = {}
    if state_file is not None:
        expected = {"model_config": asdict(model.config), "train_config": asdict(config),
                    "data": _fingerprint(images, labels, r_images, r_labels),
                    "init_weights": _weights_fingerprint(model)}  # fmt: skip
        if resume and state_file.exists():
            state = torch_load_checked(state_file, "segmenter training state")
            if not isinstance(state, dict):
                raise SegmenterStateMismatch(state_file,
                                             f"{state_file} is not a segmenter training state")
            _check_resumable(state, state_file, expected)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            rng = dict(state["rng"])
            if "batches" in rng:  # states saved before rng_state.py named the generator's
                rng["generator"] = rng.pop("batches")  # stream "generator"
            restore_rng_state(rng, g, device)
            start, losses = int(state["step"]), list(state["losses"])
            log.info("resumed %s at step %d of %d", state_file, start, config.steps)
        elif resume:
            log.info("no training state %s to resume; starting from step 0", state_file)
        elif state_file.exists():
            log.warning("%s holds an interrupted run; starting over (resume to continue it)",
                        state_file)

    def save_state(done: int) -> None:
        assert state_file is not None
        payload = {"format": SEGMENTER_STATE_FORMAT, "step": done, **expected,
                   "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                   "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                   "rng": capture_rng_state(g, device), "losses": losses}  # fmt: skip
        torch_save_atomic(payload, state_file)

    model.train()
    bar = tqdm(total=config.steps, initial=start, desc="segmenter", disable=not progress,
               leave=False)  # fmt: skip
    with StopOnSignal() as stop, bar:
        log.info("segmenter training: steps %d..%d, %d chips (+%d replayed), batch %d",
                 start + 1, config.steps, images.shape[0],
                 0 if r_images is None else r_images.shape[0], config.batch_size)
        for step in range(start, config.steps):
            idx = torch.randint(0, images.shape[0], (config.batch_size - n_replay,), generator=g)
            x, y = images[idx], labels[idx]
            if n_replay:
                assert r_images is not None and r_labels is not None
                ridx = torch.randint(0, r_images.shape[0], (n_replay,), generator=g)
                x, y = torch.cat([x, r_images[ridx]]), torch.cat([y, r_labels[ridx]])
            x, y = x.to(device), y.to(device)
            if config.augment:
                x, y = _augment(x, y, g)
            logits = model(x)
            loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
            if torch.isfinite(loss):
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                if callback is not None:
                    callback(step, losses[-1])
                if progress and step % 10 == 0:
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            elif not (y == IGNORE_INDEX).all():  # a fully ignored batch carries no signal
                raise FloatingPointError(f"segmenter loss became {loss.item()} at step {step}")
            bar.update(1)
            done = step + 1
            if state_file is not None and done < config.steps:
                if done % save_every == 0 or stop.signum is not None:
                    save_state(done)
            if stop.signum is not None and done < config.steps:
                if state_file is None:
                    raise KeyboardInterrupt
                raise TrainingInterrupted(stop.signum, done, state_file)
    model.eval()
    return losses


def save_segmenter(path: str | Path, model: SegmentationUNet, meta: dict | None = None) -> Path:
    """Atomic checkpoint: config, weights and free-form metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # loads anywhere
    payload = {"config": asdict(model.config), "state_dict": state, "meta": meta or {}}
    return torch_save_atomic(payload, path)


def load_segmenter(path: str | Path) -> tuple[SegmentationUNet, dict]:
    """Load a checkpoint written by :func:`save_segmenter` in eval mode."""
    path = Path(path)
    payload = torch_load_checked(path, "segmenter checkpoint")
    if not (isinstance(payload, dict) and {"config", "state_dict"} <= payload.keys()):
        kind = (
            "a diffusion prior checkpoint (use it as --prior)"
            if isinstance(payload, dict) and "landprior" in str(payload.get("format", ""))
            else f"a {type(payload).__name__} without 'config' and 'state_dict'"
        )
        raise ValueError(f"{path} is not a segmenter checkpoint (landcover train-segmenter): "
                         f"it is {kind}")
    try:
        model = SegmenterConfig(**payload["config"]).build()
        model.load_state_dict(payload["state_dict"])
    except Exception as err:  # report which file is broken
        raise ValueError(f"cannot read segmenter checkpoint {path}: {err}") from err
    model.eval()
    return model, payload.get("meta", {})


def _blend_weights(size: int, overlap: int) -> np.ndarray:
    """Separable (size, size) weights that ramp linearly over ``overlap`` at each edge."""
    ramp = np.ones(size, dtype=np.float32)
    if overlap > 0:
        edge = (np.arange(overlap, dtype=np.float32) + 1) / (overlap + 1)
        ramp[:overlap] = edge
        ramp[-overlap:] = edge[::-1]
    return ramp[:, None] * ramp[None, :]


def _starts(length: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, max(length - window, 0) + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


@torch.no_grad()
def iter_strip_predictions(
    model: SegmentationUNet,
    read_window: Callable[[int, int, int, int], np.ndarray],
    height: int,
    width: int,
    *,
    window: int = 64,
    overlap: int = 16,
    downsample: int = 1,
    batch_size: int = 16,
    upsample: UpsampleMode = "guided",
    guide_bands: int = 4,
    sigma_range: float = DEFAULT_SIGMA_RANGE,
) -> Iterator[tuple[int, np.ndarray]]:
    """Predict a (height, width) raster window by window; yield finished strips.

    ``read_window(row, col, h, w)`` returns the model input (C, h, w) float32 in [0, 1]
    at the full (e.g. 1 m) resolution. The model runs on ``window`` x ``window`` pixels at
    ``1 / downsample`` of that resolution (inputs average-pooled); probabilities are
    upsampled (``upsample``: "guided" = joint bilateral upsampling guided by the first
    ``guide_bands`` input bands, the imagery - :mod:`landprior.landcover.upsample`; or
    "bilinear"), blended with linear ramps over the overlap, and yielded as
    ``(row0, probs)`` with probs (K, rows, width) float32, in row order. Peak memory is
    about two strips of ``window * downsample`` rows. The model runs on the device of its
    parameters; blending and the strips stay on the CPU.
    """
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsampling {upsample!r}; expected one of {UPSAMPLE_MODES}")
    if not 1 <= guide_bands <= model.config.in_channels:
        raise ValueError(
            f"guide_bands must be in 1..{model.config.in_channels} (the model's input "
            f"channels), got {guide_bands}"
        )
    full = window * downsample
    ov = overlap * downsample
    if height < full or width < full:
        raise ValueError(
            f"raster of {height}x{width} px is smaller than one prediction window "
            f"({full}x{full} px = {window} model px x downsample {downsample})"
        )
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got {overlap} with window {window}")
    stride = full - ov
    rows, cols = _starts(height, full, stride), _starts(width, full, stride)
    weights = _blend_weights(full, ov)
    k = model.config.num_classes
    device = next(model.parameters()).device
    buf_rows = 2 * full
    acc = np.zeros((k, buf_rows, width), dtype=np.float32)
    wsum = np.zeros((buf_rows, width), dtype=np.float32)
    base = 0  # raster row of acc[:, 0]
    for i, r in enumerate(rows):
        patches = np.stack([read_window(r, c, full, full) for c in cols]).astype(np.float32)
        if not np.isfinite(patches).all():
            raise ValueError(f"input imagery has NaN or inf in rows {r}..{r + full}")
        x_full = torch.from_numpy(patches).to(device)
        x = F.avg_pool2d(x_full, downsample) if downsample > 1 else x_full
        probs = []
        for j in range(0, x.shape[0], batch_size):
            p = torch.softmax(model(x[j : j + batch_size]), dim=1)
            probs.append(
                upsample_probabilities(
                    p, x_full[j : j + batch_size, :guide_bands], downsample, upsample,
                    sigma_range=sigma_range,
                )
            )  # fmt: skip
        probs_np = torch.cat(probs).cpu().numpy()
        off = r - base
        for c, p in zip(cols, probs_np, strict=True):
            acc[:, off : off + full, c : c + full] += p * weights
            wsum[off : off + full, c : c + full] += weights
        done = rows[i + 1] - base if i + 1 < len(rows) else height - base
        if done > 0:
            yield base, acc[:, :done] / wsum[None, :done]
            acc = np.concatenate([acc[:, done:], np.zeros_like(acc[:, :done])], axis=1)
            wsum = np.concatenate([wsum[done:], np.zeros_like(wsum[:done])], axis=0)
            base += done


def predict_array(
    model: SegmentationUNet,
    image: np.ndarray,
    *,
    window: int = 64,
    overlap: int = 16,
    downsample: int = 1,
    batch_size: int = 16,
    upsample: UpsampleMode = "guided",
) -> np.ndarray:
    """Probabilities (K, H, W) for an in-memory image (C, H, W) in [0, 1]."""
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    _, h, w = image.shape
    out = np.empty((model.config.num_classes, h, w), dtype=np.float32)
    for row0, strip in iter_strip_predictions(
        model,
        lambda r, c, hh, ww: image[:, r : r + hh, c : c + ww],
        h,
        w,
        window=window,
        overlap=overlap,
        downsample=downsample,
        batch_size=batch_size,
        upsample=upsample,
    ):
        out[:, row0 : row0 + strip.shape[1]] = strip
    return out
