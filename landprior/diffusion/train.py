"""DDPM training of the U-Net prior with the simple eps loss (Ho et al. 2020, eq. 14).

Each step draws a batch x0 (B, C, H, W) in [-1, 1], t uniform in {1..T}, eps ~ N(0, I), forms
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (Graikos et al. 2022, eq. 2) and minimises
``mean ||eps - eps_theta(x_t, t)||^2`` with Adam (lr 1e-4 as the authors). An exponential
moving average of the weights is kept (rate 0.9999 by default, 0 disables it).

Everything is resumable and reproducible: one checkpoint file per run directory holds the
model, the EMA, the optimizer, the step, the U-Net and training configs, the schedule, all
random states and a fingerprint of the training data (a resumed run must train on the same
data); it is written atomically (temporary file, then ``os.replace``). With the same
seed on the same machine the loss curve is bitwise identical, and a run stopped and resumed
gives the same weights as an uninterrupted one. Losses are appended to ``loss.jsonl``.

Learned-sigma networks are trained on the eps half only (no hybrid L_vlb term), so their
variance channels stay at initialisation; sample them with fixed variances.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landprior.devices import resolve_device
from landprior.diffusion.denoiser import EpsDenoiser, freeze
from landprior.diffusion.schedule import SCHEDULE_NAMES, NoiseSchedule
from landprior.diffusion.unet import UNetConfig, UNetModel
from landprior.fileio import torch_load_checked, torch_save_atomic
from landprior.fingerprint import array_fingerprint, dtype_name, native_bytes
from landprior.interrupt import StopOnSignal, TrainingInterrupted
from landprior.rng_state import capture_rng_state, restore_rng_state

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "LOSS_LOG_NAME",
    "LabelledNet",
    "TrainConfig",
    "TrainResult",
    "TrainSettingError",
    "TrainingDataChanged",
    "TrainingDataError",
    "TrainingInterrupted",
    "load_checkpoint",
    "load_denoiser",
    "load_model",
    "train",
]

CHECKPOINT_FORMAT = "landprior.ddpm.v1"
CHECKPOINT_NAME = "checkpoint.pt"
LOSS_LOG_NAME = "loss.jsonl"
_RANGE_TOL = 1e-3
_SAMPLED_ITEMS = 32  # items of a dataset object hashed for its fingerprint


# ---------------------------------------------------------------------------------- config
class TrainSettingError(ValueError):
    """A :class:`TrainConfig` value out of range; ``field`` names the setting (the CLI maps it
    to its option), ``reason`` says what was expected."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"TrainConfig.{field} {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (all JSON-serialisable; stored in every checkpoint).

    ``steps`` is the total number of optimizer steps of the run (a resumed run continues up to
    it). ``grad_clip`` is a max global gradient norm (None: no clipping). ``hflip`` /
    ``vflip`` flip each sample left-right / up-down with probability 1/2. ``device`` None picks
    CUDA when available, else CPU.
    """

    steps: int = 10_000
    batch_size: int = 16
    lr: float = 1e-4
    ema_rate: float = 0.9999
    grad_clip: float | None = None
    schedule: str = "linear"
    num_timesteps: int = 1000
    seed: int = 0
    hflip: bool = False
    vflip: bool = False
    checkpoint_every: int = 1000
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "num_timesteps", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainSettingError(name, f"must be a positive integer, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise TrainSettingError("lr", f"must be a positive number, got {self.lr!r}")
        if not 0.0 <= self.ema_rate < 1.0:
            raise TrainSettingError("ema_rate", f"must lie in [0, 1), got {self.ema_rate!r}")
        if self.grad_clip is not None and not (
            math.isfinite(self.grad_clip) and self.grad_clip > 0
        ):
            raise TrainSettingError("grad_clip", f"must be None or > 0, got {self.grad_clip!r}")
        if self.schedule not in SCHEDULE_NAMES:
            raise TrainSettingError(
                "schedule", f"must be one of {SCHEDULE_NAMES}: unknown noise schedule "
                f"{self.schedule!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (stored in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**dict(data))

    def make_schedule(self) -> NoiseSchedule:
        """The noise schedule named by ``schedule`` with ``num_timesteps`` steps."""
        return NoiseSchedule.from_name(self.schedule, self.num_timesteps)


@dataclass
class TrainResult:
    """What :func:`train` did: steps done in total, this session's per-step losses."""

    step: int
    losses: list[float]
    checkpoint: Path
    out_dir: Path
    model: UNetModel = field(repr=False)
    ema: UNetModel | None = field(repr=False)


# ---------------------------------------------------------------------------------- data
class TrainingDataError(ValueError):
    """Training data that cannot be trained on (shape, dtype, range, NaN, channels, size);
    the message starts with "training data" (the CLI puts the file's name before it)."""


class _BatchSource:
    """Random batches from a tensor / array (N, C, H, W), optional labels, or a Dataset.

    uint8 data are mapped from [0, 255] to [-1, 1]; floating data must already lie in
    [-1, 1]. Indices are drawn with replacement from the run's generator. A dataset with a
    ``batch(indices) -> (B, C, H, W)`` method is asked for whole batches (one call, no
    per-item loop): e.g. label patches kept as uint8 and one-hot encoded per batch.
    """

    def __init__(self, data: Any, labels: Any = None) -> None:
        if isinstance(data, tuple) and len(data) == 2 and labels is None:
            data, labels = data
        self.dataset = None
        self.array = None
        if isinstance(data, (Tensor, np.ndarray)):
            if data.ndim != 4:
                raise TrainingDataError(
                    f"training data must have shape (N, C, H, W), got {tuple(data.shape)}"
                )
            self.array = data
            self.n = int(data.shape[0])
            self._check_all(data)
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            self.dataset = data
            self.n = len(data)
        else:
            raise TypeError(
                "training data must be a tensor or array (N, C, H, W), a (images, labels) pair "
                f"or a torch Dataset, got {type(data).__name__}"
            )
        if self.n < 1:
            raise TrainingDataError("training data is empty")
        self.labels = None
        if labels is not None:
            self.labels = torch.as_tensor(np.asarray(labels)).long()
            if self.labels.shape != (self.n,):
                raise ValueError(
                    f"labels must have shape ({self.n},) to match the images, got "
                    f"{tuple(self.labels.shape)}"
                )

    @staticmethod
    def _check_all(data: Tensor | np.ndarray, chunk: int = 1024) -> None:
        """Check every image once, before training (a bad image found by a batch draw would
        stop a long run part-way): finite, and in [-1, 1] unless uint8. Chunked, so a memmap
        is not read into memory whole."""
        if data.dtype in (torch.uint8, np.uint8):
            return
        for lo in range(0, int(data.shape[0]), chunk):
            part = data[lo : lo + chunk]
            rows = part if isinstance(part, Tensor) else torch.from_numpy(np.array(part))
            if rows.is_complex() or rows.dtype == torch.bool:
                raise TrainingDataError(
                    f"training data must be real numbers, got dtype {rows.dtype}"
                )
            rows = rows.float()
            bad = ~torch.isfinite(rows).flatten(1).all(dim=1)
            if bad.any():
                first = lo + int(bad.nonzero()[0])
                raise TrainingDataError(
                    f"training data contain NaN or inf (image {first} is the first)"
                )
            out = (rows.abs() > 1 + _RANGE_TOL).flatten(1).any(dim=1)
            if out.any():
                first = lo + int(out.nonzero()[0])
                lo_v, hi_v = torch.aminmax(rows[first - lo])
                raise TrainingDataError(
                    f"training data must lie in [-1, 1] (or be uint8 in [0, 255]); image {first} "
                    f"holds values in [{float(lo_v):.4g}, {float(hi_v):.4g}]"
                )

    @staticmethod
    def _to_float(x: Tensor | np.ndarray, check: bool = True) -> Tensor:
        """Float32 in [-1, 1]; ``check=False`` for arrays :meth:`_check_all` has checked."""
        x = torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x
        if x.dtype == torch.uint8:
            return x.float() / 127.5 - 1.0
        x = x.float()
        if not check:
            return x
        lo, hi = torch.aminmax(x)
        if not torch.isfinite(lo) or not torch.isfinite(hi):
            raise TrainingDataError("training data contain NaN or inf")
        if lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL:
            raise TrainingDataError(
                f"training data must lie in [-1, 1] (or be uint8 in [0, 255]); found values in "
                f"[{float(lo):.4g}, {float(hi):.4g}]"
            )
        return x

    def get(self, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        """Batch (B, C, H, W) float32 and labels (B,) or None, for indices ``idx`` (B,)."""
        if self.array is not None:
            rows = self.array[idx] if isinstance(self.array, Tensor) else self.array[idx.numpy()]
            x = self._to_float(rows, check=False)  # every image was checked up front
            y = self.labels[idx] if self.labels is not None else None
            return x, y
        if callable(getattr(self.dataset, "batch", None)):
            x = self._to_float(self.dataset.batch(idx.numpy()))
            if x.dim() != 4:
                raise ValueError(f"dataset batches must be (B, C, H, W), got {tuple(x.shape)}")
            return x, self.labels[idx] if self.labels is not None else None
        images, labels = [], []
        for i in idx.tolist():
            item = self.dataset[i]
            if isinstance(item, (tuple, list)):
                images.append(torch.as_tensor(np.asarray(item[0])))
                labels.append(int(item[1]) if len(item) > 1 else None)
            else:
                images.append(torch.as_tensor(np.asarray(item)))
                labels.append(None)
        x = self._to_float(torch.stack(images))
        if x.dim() != 4:
            raise ValueError(f"dataset items must have shape (C, H, W), got {tuple(x.shape[1:])}")
        if self.labels is not None:
            return x, self.labels[idx]
        if all(lab is not None for lab in labels):
            return x, torch.tensor(labels, dtype=torch.long)
        return x, None


# ---------------------------------------------------------------------------------- fingerprint
def _hash_item(digest: Any, item: Any) -> None:
    """Feed a dataset item (array, tensor, number, or a tuple / list of them) to ``digest``."""
    if isinstance(item, (tuple, list)):
        for part in item:
            _hash_item(digest, part)
        return
    arr = item if isinstance(item, Tensor) else np.asarray(item)
    digest.update(repr((list(arr.shape), dtype_name(arr))).encode())
    digest.update(native_bytes(arr))


def _dataset_fingerprint(dataset: Any, n: int) -> dict[str, Any]:
    """Type, length and a hash of a few evenly spaced items (not all: a dataset object may
    compute its items, and reading them all would cost as much as an epoch)."""
    kind = type(dataset)
    record: dict[str, Any] = {"kind": "dataset", "type": f"{kind.__module__}.{kind.__qualname__}",
                              "len": n, "blake2b": None}  # fmt: skip
    idx = np.unique(np.linspace(0, n - 1, min(n, _SAMPLED_ITEMS)).round().astype(np.int64))
    digest = hashlib.blake2b(repr(idx.tolist()).encode(), digest_size=16)
    try:
        if callable(getattr(dataset, "batch", None)):
            _hash_item(digest, dataset.batch(idx))
        else:
            for i in idx.tolist():
                _hash_item(digest, dataset[i])
    except (TypeError, ValueError) as err:  # items numpy cannot take: type and length only
        log.debug("no content hash of the training dataset (%s)", err)
        return record
    record["blake2b"] = digest.hexdigest()
    return record


def _data_fingerprint(source: _BatchSource) -> dict[str, Any]:
    """What a checkpoint records of its training data, to refuse resuming on other data."""
    started = time.perf_counter()
    if source.array is not None:
        images = array_fingerprint(source.array)
    else:
        images = _dataset_fingerprint(source.dataset, source.n)
    labels = array_fingerprint(source.labels) if source.labels is not None else None
    log.debug("fingerprinted the training data in %.2f s", time.perf_counter() - started)
    return {"images": images, "labels": labels}


def _describe(record: Mapping[str, Any]) -> str:
    if record["kind"] == "array":
        return f"{record['dtype']} array {tuple(record['shape'])}"
    return f"{record['type']} of {record['len']} items"


def _data_changes(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """How the training data ``now`` differ from the ``saved`` fingerprint (empty: same)."""
    changes = []
    for part in ("images", "labels"):
        old, new = saved.get(part), now.get(part)
        if old == new:
            continue
        if old is None or new is None:
            changes.append(f"{part}: {'none' if old is None else 'given'} before, "
                           f"{'none' if new is None else 'given'} now")  # fmt: skip
        elif old["kind"] != new["kind"] or old.get("type") != new.get("type"):
            changes.append(f"{part}: {_describe(old)} before, {_describe(new)} now")
        elif old["kind"] == "array":
            layout = [f"{part} shape {tuple(old['shape'])} vs {tuple(new['shape'])}"]
            layout = layout if old["shape"] != new["shape"] else []
            if old["dtype"] != new["dtype"]:
                layout.append(f"{part} dtype {old['dtype']} vs {new['dtype']}")
            changes.extend(layout or [f"{part} content (same shape and dtype, other values)"])
        elif old["len"] != new["len"]:
            changes.append(f"{part} length {old['len']} vs {new['len']}")
        elif None not in (old["blake2b"], new["blake2b"]):
            changes.append(f"{part} content (other values in the sampled items)")
    return changes


class TrainingDataChanged(ValueError):
    """Resuming a run on training data other than those its checkpoint records.

    ``checkpoint`` is the run's checkpoint, ``changes`` says what differs (checkpoint vs now).
    """

    def __init__(self, checkpoint: Path, changes: list[str]) -> None:
        self.checkpoint = checkpoint
        self.changes = changes
        super().__init__(
            f"cannot resume {checkpoint}: the training data differ from the run's (checkpoint "
            f"vs now: {'; '.join(changes)}); train into a new output folder to start afresh, "
            "or pass allow_data_change=True to continue this run on these data"
        )


def _check_same_data(
    ckpt: Mapping[str, Any], fingerprint: Mapping[str, Any], ckpt_path: Path, allow: bool
) -> None:
    """Refuse (or with ``allow`` warn about) resuming a run on other training data."""
    saved = ckpt.get("data_fingerprint")
    if saved is None:
        log.info("%s records no fingerprint of its training data (an older checkpoint); "
                 "resuming without checking them", ckpt_path)  # fmt: skip
        return
    changes = _data_changes(saved, fingerprint)
    if not changes:
        return
    if allow:
        log.warning("resuming %s on other training data (checkpoint vs now: %s)", ckpt_path,
                    "; ".join(changes))  # fmt: skip
        return
    raise TrainingDataChanged(ckpt_path, changes)


class LabelledNet(nn.Module):
    """Bind class labels ``y`` (B,) to a class-conditional U-Net: ``(x, t) -> net(x, t, y)``.

    Lets :class:`EpsDenoiser` (and with it the single ``t -> t - 1`` shift) serve
    class-conditional networks too.
    """

    def __init__(self, net: nn.Module, y: Tensor) -> None:
        super().__init__()
        self.net = net
        self.y = y
        self.learn_sigma = bool(getattr(net, "learn_sigma", False))

    def forward(self, x: Tensor, timesteps: Tensor) -> Tensor:
        return self.net(x, timesteps, self.y)


# ---------------------------------------------------------------------------------- checkpoints
def ema_decay(rate: float, step: int) -> float:
    """EMA decay at a 1-based ``step``: ``min(rate, (1 + step) / (10 + step))``."""
    return min(rate, (1.0 + step) / (10.0 + step))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (tensors on CPU) and check its format."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    ckpt = torch_load_checked(path, "checkpoint")
    if isinstance(ckpt, dict) and {"config", "state_dict", "meta"} <= ckpt.keys():
        raise ValueError(
            f"{path} is a segmenter checkpoint (landcover train-segmenter), not a diffusion "
            "prior: pass a prior's checkpoint.pt (landcover train-prior / install-prior)"
        )
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{path} is not a landprior training checkpoint (format {got!r}, expected "
            f"{CHECKPOINT_FORMAT!r}); for released guided-diffusion weights use "
            "landprior.diffusion.unet.load_guided_diffusion_checkpoint"
        )
    return ckpt


def export_inference_checkpoint(
    checkpoint: str | Path, out: str | Path, *, use_ema: bool = True
) -> Path:
    """Write a slim copy of a training checkpoint: one set of inference weights (a few MB).

    The copy keeps the checkpoint format (:func:`load_model` / :func:`load_denoiser` read it)
    with the EMA weights (or the raw ones) as ``model`` and no EMA, optimizer or random
    states, so it cannot be resumed. Written atomically.
    """
    out = Path(out)
    ckpt = load_checkpoint(checkpoint)
    weights = "model"
    state = ckpt["model"]
    if ckpt.get("exported_from") is not None:  # re-exporting an export: keep its label
        weights = str(ckpt["exported_from"].get("weights", "model"))
    elif use_ema and ckpt.get("ema") is not None:
        state, weights = ckpt["ema"], "ema"
    elif use_ema:
        log.warning("%s has no EMA weights; exporting the raw weights", checkpoint)
    slim = {
        "format": ckpt["format"],
        "step": ckpt["step"],
        "model": {k: v.contiguous().clone() for k, v in state.items()},
        "ema": None,
        "unet_config": ckpt["unet_config"],
        "train_config": ckpt["train_config"],
        "schedule": ckpt.get("schedule"),
        "torch_version": ckpt.get("torch_version"),
        "exported_from": {"path": str(checkpoint), "weights": weights},
        "init_from": ckpt.get("init_from"),
        "data_fingerprint": ckpt.get("data_fingerprint"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(slim, out)
    log.info("exported the %s weights of %s (step %d) to %s", weights, checkpoint,
             slim["step"], out)  # fmt: skip
    return out


def load_model(
    path: str | Path,
    *,
    use_ema: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[UNetModel, NoiseSchedule, dict[str, Any]]:
    """Rebuild the trained U-Net (frozen, eval mode), its schedule and metadata.

    ``use_ema`` picks the EMA weights when the run kept them (otherwise the raw weights, with
    a warning). ``meta`` holds ``step``, ``unet_config`` (a :class:`UNetConfig`),
    ``train_config`` (a :class:`TrainConfig`) and ``weights`` ("ema" or "model").
    """
    ckpt = load_checkpoint(path)
    unet_config = UNetConfig.from_dict(ckpt["unet_config"])
    train_config = TrainConfig.from_dict(ckpt["train_config"])
    weights = "model"
    state = ckpt["model"]
    exported = ckpt.get("exported_from")
    if exported is not None:
        weights = str(exported.get("weights", "model"))  # the one set an export keeps
        if not use_ema and weights == "ema":
            log.warning("%s is an export holding only its EMA weights; the raw weights asked "
                        "for are not in it, so the EMA weights are used", path)
    elif use_ema:
        if ckpt.get("ema") is not None:
            state, weights = ckpt["ema"], "ema"
        else:
            log.warning("%s has no EMA weights (ema_rate was 0); using the raw weights", path)
    model = unet_config.build()
    model.load_state_dict(state, strict=True)
    model = freeze(model.to(device))
    meta = {
        "step": int(ckpt["step"]),
        "unet_config": unet_config,
        "train_config": train_config,
        "weights": weights,
        "path": str(path),
    }
    return model, train_config.make_schedule(), meta  # type: ignore[return-value]


def load_denoiser(
    path: str | Path,
    use_ema: bool = True,
    *,
    device: torch.device | str = "cpu",
    labels: Tensor | None = None,
) -> tuple[EpsDenoiser, NoiseSchedule, dict[str, Any]]:
    """A trained checkpoint as a frozen eval-mode :class:`EpsDenoiser` ``(x_t, t) -> eps``.

    ``t`` follows the papers' convention {1..T}. Class-conditional networks need ``labels``
    (B,) bound to them (see :class:`LabelledNet`). Returns ``(denoiser, schedule, meta)``.
    """
    model, schedule, meta = load_model(path, use_ema=use_ema, device=device)
    net: nn.Module = model
    if model.num_classes is not None:
        if labels is None:
            raise ValueError(
                f"{path} holds a class-conditional network ({model.num_classes} classes); "
                "pass labels=(B,) class indices"
            )
        net = LabelledNet(model, labels.to(device))
    elif labels is not None:
        raise ValueError(f"{path} holds an unconditional network; labels must be None")
    return freeze(EpsDenoiser(net)), schedule, meta  # type: ignore[return-value]


# ---------------------------------------------------------------------------------- helpers
def _rewrite_loss_log(path: Path, keep_until: int) -> None:
    """Drop log lines past ``keep_until`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        if line.strip() and json.loads(line)["step"] <= keep_until:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)


def _resolve_unet(unet: UNetConfig | str) -> UNetConfig:
    return UNetConfig.preset(unet) if isinstance(unet, str) else unet


def _check_same_unet(ckpt: Mapping[str, Any], unet_config: UNetConfig, what: str) -> None:
    saved = UNetConfig.from_dict(ckpt["unet_config"])
    if saved != unet_config:
        old, now = saved.to_dict(), unet_config.to_dict()
        keys = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
        diff = ", ".join(f"{k} {old.get(k)!r} vs {now.get(k)!r}" for k in keys)
        raise ValueError(
            f"{what}: its U-Net differs from this run's (checkpoint vs this run: {diff})"
        )


def check_init_from(source: str | Path, unet: UNetConfig | str) -> dict[str, Any]:
    """Read checkpoint ``source`` and check it can warm-start a ``unet`` run (ValueError if not).

    Call it before expensive preparation (rendering a data set) to fail early.
    """
    ckpt = load_checkpoint(source)
    _check_same_unet(ckpt, _resolve_unet(unet), f"cannot initialise from {source}")
    return ckpt


def _warm_start(
    model: nn.Module, ema: nn.Module | None, unet_config: UNetConfig, source: str | Path
) -> None:
    """Load the inference weights of checkpoint ``source`` into ``model`` (and ``ema``)."""
    ckpt = check_init_from(source, unet_config)
    state = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state, strict=True)
    if ema is not None:
        ema.load_state_dict(state, strict=True)
    log.info("initialised the weights from %s (its step %d)", source, int(ckpt["step"]))


def _check_image_size(height: int, width: int, unet_config: UNetConfig) -> None:
    """Refuse images the U-Net cannot halve down; warn when they differ from its image_size.

    The network is convolutional, so it trains at any size its levels divide, but sampling
    (``diffusion sample``, the tasks) draws ``image_size`` squares unless told otherwise.
    """
    factor = unet_config.downsample_factor
    if height % factor or width % factor:
        raise TrainingDataError(
            f"training data are {height}x{width} images, not divisible by {factor}: the U-Net "
            f"({unet_config.name}) needs height and width multiples of {factor} (one halving "
            f"per level of channel_mult {unet_config.channel_mult} after the first)"
        )
    size = unet_config.image_size
    if (height, width) != (size, size):
        hint = f"unless given --size {height}" if height == width else "(--size: squares only)"
        log.warning(
            "training images are %dx%d but the U-Net's image_size is %d (%s): the network "
            "trains at %dx%d, while `diffusion sample` draws %dx%d samples %s",
            height, width, size, unet_config.name, height, width, size, size, hint,
        )  # fmt: skip


# ---------------------------------------------------------------------------------- training
def train(
    data: Any,
    unet: UNetConfig | str,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    labels: Sequence[int] | Tensor | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
    allow_data_change: bool = False,
) -> TrainResult:
    """Train a DDPM eps-predictor (Ho et al. eq. 14) and checkpoint it in ``out_dir``.

    Args:
        data: images (N, C, H, W) as a tensor or numpy array (memmaps work), a pair
            ``(images, labels)``, or a Dataset whose items are (C, H, W) or ``(image, label)``.
            Floating data in [-1, 1]; uint8 data are mapped from [0, 255].
        unet: a :class:`UNetConfig` or a preset name.
        config: the run's :class:`TrainConfig`.
        out_dir: run folder; holds ``checkpoint.pt`` and ``loss.jsonl``.
        labels: class labels (N,) for a class-conditional network.
        resume: continue from ``out_dir/checkpoint.pt`` if present (up to ``config.steps``).
            Without it an existing checkpoint is an error, never overwritten silently.
            Every checkpoint records a fingerprint of its training data (shape, dtype and a
            hash of the bytes of an array; type, length and a few sampled items of a dataset
            object; the labels): resuming on data that differ raises
            :class:`TrainingDataChanged` (a ``ValueError``) unless ``allow_data_change``.
            Checkpoints without one (older runs) resume unchecked.
        init_from: warm start (fine-tuning): a landprior checkpoint whose weights (its EMA
            when it kept one) initialise the network and its EMA; same U-Net config required.
            Optimizer and step start afresh. Ignored when resuming (the run's own checkpoint
            wins).
        callback: called as ``callback(step, loss)`` after every step.
        allow_data_change: resume even though the training data differ from the
            checkpoint's (a warning; the checkpoint then records the new data).

    Returns:
        A :class:`TrainResult` with this session's per-step losses.
    """
    unet_config = _resolve_unet(unet)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    log_path = out_dir / LOSS_LOG_NAME
    if ckpt_path.exists() and not resume:
        raise FileExistsError(
            f"{ckpt_path} already exists; pass resume=True (--resume) to continue that run or "
            "choose another output folder"
        )
    if resume and not ckpt_path.exists():
        log.warning("resume asked for, but %s holds no checkpoint: starting a new run", out_dir)
    # every input is checked before the run folder is made: a refused run leaves nothing
    source = _BatchSource(data, labels)
    conditional = unet_config.num_classes is not None
    if conditional and source.labels is None and source.dataset is None:
        raise ValueError(
            f"the network is class-conditional ({unet_config.num_classes} classes); give labels"
        )
    first, _ = source.get(torch.zeros(1, dtype=torch.long))
    if first.shape[1] != unet_config.in_channels:
        raise TrainingDataError(
            f"training data have {first.shape[1]} channels, the U-Net expects "
            f"in_channels={unet_config.in_channels} (image shape {tuple(first.shape[1:])})"
        )
    _check_image_size(int(first.shape[-2]), int(first.shape[-1]), unet_config)
    fingerprint = _data_fingerprint(source)
    device = resolve_device(config.device)
    if init_from is not None and not (resume and ckpt_path.exists()):
        check_init_from(init_from, unet_config)
    out_dir.mkdir(parents=True, exist_ok=True)
    schedule = config.make_schedule()
    T = schedule.num_timesteps
    if unet_config.learn_sigma:
        log.warning("learned-sigma network: training the eps half only (no hybrid loss)")

    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(config.seed)
        model = unet_config.build().to(device)
        generator = torch.Generator().manual_seed(config.seed)
        ema = None
        if config.ema_rate > 0:
            ema = copy.deepcopy(model).requires_grad_(False).eval()
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        start = 0
        init_record: str | None = None  # the warm-start checkpoint, kept in every save

        if resume and ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path)
            _check_same_unet(ckpt, unet_config, f"cannot resume {ckpt_path}")
            _check_same_data(ckpt, fingerprint, ckpt_path, allow_data_change)
            saved = TrainConfig.from_dict(ckpt["train_config"])
            for key in ("schedule", "num_timesteps"):
                if getattr(saved, key) != getattr(config, key):
                    raise ValueError(
                        f"cannot resume {ckpt_path}: {key} was {getattr(saved, key)!r}, now "
                        f"{getattr(config, key)!r}"
                    )
            changed = {
                k: (v, getattr(config, k))
                for k, v in saved.to_dict().items()
                if k != "steps" and v != getattr(config, k)
            }
            if changed:
                log.warning("resuming with changed training settings (old, new): %s", changed)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if ema is not None:
                if ckpt.get("ema") is not None:
                    ema.load_state_dict(ckpt["ema"])
                else:
                    ema.load_state_dict(model.state_dict())
            start = int(ckpt["step"])
            init_record = ckpt.get("init_from")
            if init_from is not None:
                log.warning("resuming %s: --init-from %s is ignored", ckpt_path, init_from)
            restore_rng_state(ckpt["rng"], generator, device)
            _rewrite_loss_log(log_path, start)
            log.info("resumed %s at step %d", ckpt_path, start)
        else:
            if init_from is not None:
                _warm_start(model, ema, unet_config, init_from)
                init_record = str(init_from)
            if log_path.exists():
                log_path.unlink()

        def save(step: int) -> None:
            torch_save_atomic(
                {
                    "format": CHECKPOINT_FORMAT,
                    "step": step,
                    "model": model.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "unet_config": unet_config.to_dict(),
                    "train_config": config.to_dict(),
                    "schedule": {"name": schedule.name, "num_timesteps": T},
                    "rng": capture_rng_state(generator, device),
                    "torch_version": str(torch.__version__),
                    "init_from": init_record,
                    "data_fingerprint": fingerprint,
                },
                ckpt_path,
            )

        losses: list[float] = []
        model.train()
        bar = tqdm(total=config.steps, initial=start, disable=not progress, desc="train")
        started = time.perf_counter()
        step = start
        with StopOnSignal() as stop, bar, open(log_path, "a", encoding="utf-8") as log_file:
            for step in range(start + 1, config.steps + 1):
                idx = torch.randint(source.n, (config.batch_size,), generator=generator)
                x0, y = source.get(idx)
                if x0.shape[1] != unet_config.in_channels:
                    raise TrainingDataError(
                        f"training data have {x0.shape[1]} channels, the U-Net expects "
                        f"in_channels={unet_config.in_channels} (batch shape {tuple(x0.shape)})"
                    )
                if config.hflip:
                    flip = torch.rand(x0.shape[0], generator=generator) < 0.5
                    x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
                if config.vflip:
                    flip = torch.rand(x0.shape[0], generator=generator) < 0.5
                    x0 = torch.where(flip[:, None, None, None], x0.flip(-2), x0)
                t = torch.randint(1, T + 1, (x0.shape[0],), generator=generator)
                noise = torch.randn(x0.shape, generator=generator)
                x0, t, noise = x0.to(device), t.to(device), noise.to(device)

                x_t = schedule.q_sample(x0, t, noise)
                if conditional:
                    if y is None:
                        raise ValueError("class-conditional training needs a label per sample")
                    net: nn.Module = LabelledNet(model, y.to(device))
                else:
                    net = model
                eps = EpsDenoiser(net)(x_t, t)
                loss = torch.mean((eps - noise) ** 2)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss is {float(loss)} at step {step}")

                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = None
                if config.grad_clip is not None:
                    grad_norm = float(
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    )
                optimizer.step()
                if ema is not None:
                    # Warm-up (decay = min(rate, (1 + step) / (10 + step))): without it an
                    # EMA of a short run keeps rate**steps of the random initialisation
                    # (0.999**1500 = 22 %), which breaks the CPU-scale priors.
                    decay = ema_decay(config.ema_rate, step)
                    with torch.no_grad():
                        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                            e.lerp_(p, 1.0 - decay)

                value = float(loss.detach())
                losses.append(value)
                record = {"step": step, "loss": value, "time": time.perf_counter() - started}
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                log_file.write(json.dumps(record) + "\n")
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
                if callback is not None:
                    callback(step, value)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    log_file.flush()
                    save(step)
                elif stop.signum is not None:
                    log_file.flush()
                    save(step)
                if stop.signum is not None and step < config.steps:
                    raise TrainingInterrupted(stop.signum, step, ckpt_path)
        if step == start and start > 0:
            log.info("%s is at step %d >= %d; nothing to do", ckpt_path, start, config.steps)
        if not ckpt_path.exists():
            save(step)
    model.eval()
    return TrainResult(step, losses, ckpt_path, out_dir, model, ema)
