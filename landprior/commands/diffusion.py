"""`landprior diffusion`: Train and sample the DDPM prior."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from landprior.commands import device_option, train_device_option

if TYPE_CHECKING:
    import torch

    from landprior.diffusion.train import TrainConfig

_PRESET_NAMES = ("ffhq256", "mnist32", "tsp64", "landcover64", "landcover-cpu", "tsp-cpu", "tiny")


@click.group(name="diffusion")
def group() -> None:
    """Train and sample the DDPM prior."""


def _load_array(path: Path, key: str | None) -> Any:
    """(N, C, H, W) or (N, H, W) array from .npy (memory-mapped) or .npz."""
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise click.BadParameter(f"expected a .npy or .npz file, got {path.name}",
                                 param_hint="--data")
    if suffix == ".npy" and key is not None:
        raise click.BadParameter(
            f"{path.name} is a .npy file, which holds one array; --key {key!r} applies to .npz "
            "files only (drop --key)",
            param_hint="--key",
        )
    try:
        return _read_array(path, suffix, key)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise click.BadParameter(
            f"{path} is not a readable numeric {suffix} array ({type(err).__name__}: {err})",
            param_hint="--data",
        ) from err


def _read_array(path: Path, suffix: str, key: str | None) -> Any:
    import numpy as np

    if suffix == ".npy":
        arr = np.load(path, mmap_mode="r")  # object arrays cannot be memory-mapped: refused
    else:
        with np.load(path) as archive:
            names = list(archive.files)
            if key is None:
                preferred = [n for n in ("x", "images", "data", "arr_0") if n in names]
                if len(names) == 1:
                    key = names[0]
                elif preferred:
                    key = preferred[0]
                else:
                    raise click.BadParameter(
                        f"{path} holds arrays {names}; choose one with --key", param_hint="--data"
                    )
            if key not in names:
                raise click.BadParameter(f"{path} has no array {key!r}; it holds {names}",
                                         param_hint="--key")
            arr = archive[key]
    if arr.dtype.kind not in "uif":
        raise click.BadParameter(
            f"{path} holds {arr.dtype} data; expected numbers (uint8 in [0, 255] or float in "
            "[-1, 1])",
            param_hint="--data",
        )
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise click.BadParameter(
            f"{path} holds an array of shape {arr.shape}; expected (N, C, H, W) or (N, H, W)",
            param_hint="--data",
        )
    return arr


# TrainConfig fields whose `diffusion train` option has another name (others: the same name)
_OPTION_OF_FIELD = {"num_timesteps": "timesteps"}


def build_train_config(**settings: Any) -> TrainConfig:
    """TrainConfig of a training command's settings; a value it refuses is reported under
    the command's option name (every command that trains a DDPM prior uses this).

    The click ranges catch most bad values first; this covers the rest (nan, inf).
    """
    from landprior.diffusion.train import TrainConfig, TrainSettingError

    try:
        return TrainConfig(**settings)
    except TrainSettingError as err:
        ctx = click.get_current_context()
        name = _OPTION_OF_FIELD.get(err.field, err.field)
        param = next((p for p in ctx.command.params if p.name == name), None)
        if param is None:
            raise click.ClickException(str(err)) from err
        raise click.BadParameter(err.reason, ctx=ctx, param=param) from err


def resume_options(func: Any) -> Any:
    """--resume, --allow-data-change and --init-from, shared by every training command of a
    DDPM prior."""
    func = click.option(
        "--init-from",
        type=click.Path(exists=True, path_type=Path),
        default=None,
        help="Warm start (fine-tune): take the weights of this landprior checkpoint (same "
        "U-Net preset); optimizer and step count start afresh.",
    )(func)
    func = click.option(
        "--allow-data-change", is_flag=True,
        help="With --resume: continue even if the training data differ from those the "
        "checkpoint was trained on (refused by default).",
    )(func)  # fmt: skip
    return click.option(
        "--resume", is_flag=True, help="Continue the run in --out from its checkpoint."
    )(func)


def data_changed_error(err: Any, data: str, option: str = "--allow-data-change"
                       ) -> click.ClickException:
    """The CLI's one line for a :class:`~landprior.diffusion.train.TrainingDataChanged`:
    ``data`` names what the user gave, ``option`` how to continue anyway."""
    return click.ClickException(
        f"cannot resume {err.checkpoint}: {data} differ from the data the run was trained on "
        f"(checkpoint vs now: {'; '.join(err.changes)}); choose a new --out to start afresh, "
        f"or pass {option} to continue the run on these data"
    )


@group.command(name="train")
@click.option("--data", "data_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training images: .npy or .npz, (N, C, H, W) or (N, H, W); float in [-1, 1] "
              "or uint8 in [0, 255].")
@click.option("--key", default=None,
              help="Array name inside an .npz file (a .npy holds one array).")
@click.option("--preset", required=True, type=click.Choice(_PRESET_NAMES),
              help="U-Net configuration.")
@click.option("--steps", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="Total optimizer steps of the run.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Images per optimizer step.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (checkpoint.pt, loss.jsonl).")
@resume_options
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the initial weights, batches, timesteps, noise and flips.")
@click.option("--lr", default=1e-4, show_default=True,
              type=click.FloatRange(min=0.0, min_open=True), help="Adam learning rate.")
@click.option("--ema-rate", default=0.9999, show_default=True,
              type=click.FloatRange(min=0.0, max=1.0, max_open=True),
              help="EMA rate of the weights; 0 disables the EMA.")
@click.option("--grad-clip", default=None, type=click.FloatRange(min=0.0, min_open=True),
              help="Max global gradient norm.")
@click.option("--checkpoint-every", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Write OUT/checkpoint.pt every this many steps (and at the end).")
@click.option("--schedule", default="linear", show_default=True,
              type=click.Choice(["linear", "cosine"]), help="Noise schedule.")
@click.option("--timesteps", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Diffusion steps T.")
@click.option("--hflip", is_flag=True, help="Random left-right flips.")
@click.option("--vflip", is_flag=True, help="Random up-down flips.")
@train_device_option
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch CPU threads (default: torch's choice).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train_cmd(
    data_path: Path,
    key: str | None,
    preset: str,
    steps: int,
    batch_size: int,
    out_dir: Path,
    resume: bool,
    init_from: Path | None,
    allow_data_change: bool,
    seed: int,
    lr: float,
    ema_rate: float,
    grad_clip: float | None,
    checkpoint_every: int,
    schedule: str,
    timesteps: int,
    hflip: bool,
    vflip: bool,
    device: str | None,
    threads: int | None,
    no_progress: bool,
) -> None:
    """Train a DDPM prior on an array of images (simple eps loss, Adam, EMA).

    Writes OUT/checkpoint.pt (atomically, every --checkpoint-every steps and at the end) and
    OUT/loss.jsonl. With --resume it continues an interrupted run up to --steps, on the same
    data (the checkpoint records a fingerprint of them).
    """
    import torch

    from landprior.diffusion.train import TrainingDataChanged, TrainingDataError, train
    from landprior.diffusion.unet import UNetConfig

    if threads is not None:
        torch.set_num_threads(threads)
    config = build_train_config(
        steps=steps, batch_size=batch_size, lr=lr, ema_rate=ema_rate, grad_clip=grad_clip,
        schedule=schedule, num_timesteps=timesteps, seed=seed, hflip=hflip, vflip=vflip,
        checkpoint_every=checkpoint_every, device=device,
    )  # fmt: skip
    unet = UNetConfig.preset(preset)
    data = _load_array(data_path, key)
    if data.shape[1] != unet.in_channels:
        raise click.BadParameter(
            f"{data_path} has {data.shape[1]} channels (shape {tuple(data.shape)}); preset "
            f"{preset!r} expects {unet.in_channels}",
            param_hint="--data",
        )
    try:
        result = train(
            data, unet, config, out_dir,
            resume=resume, init_from=init_from, progress=not no_progress,
            allow_data_change=allow_data_change,
        )  # fmt: skip
    except TrainingDataChanged as err:
        raise data_changed_error(err, f"the images of {data_path}") from err
    except TrainingDataError as err:  # name the file the user gave
        raise click.ClickException(f"{data_path}: {err}") from err
    except (ValueError, FileExistsError) as err:
        raise click.ClickException(str(err)) from err
    last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
    click.echo(f"step {result.step}: last loss {last}; checkpoint {result.checkpoint}")


@group.command(name="sample")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, path_type=Path),
              help="checkpoint.pt of a run (or the run folder).")
@click.option("--n", "n", default=16, show_default=True, type=click.IntRange(min=1),
              help="Number of samples.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="PNG image grid to write.")
@click.option("--sampler", default="ddim", show_default=True, type=click.Choice(["ddpm", "ddim"]),
              help="ddpm: ancestral, all T steps; ddim: --steps steps with --eta.")
@click.option("--steps", default=50, show_default=True, type=click.IntRange(min=1),
              help="DDIM steps (DDPM always uses all T).")
@click.option("--eta", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="DDIM eta (0 deterministic, 1 DDPM-like).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the sampling noise.")
@click.option("--size", default=None, type=click.IntRange(min=1),
              help="Sample height and width (default: the U-Net's image_size).")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA.")
@click.option("--no-clip", is_flag=True, help="Do not clip x0_hat to [-1, 1] during sampling.")
@click.option("--npy", "npy_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also save the samples (N, C, H, W), in [-1, 1], as .npy.")
@click.option("--nrow", default=None, type=click.IntRange(min=1), help="Images per grid row.")
@click.option("--scale", default=2, show_default=True, type=click.IntRange(min=1),
              help="Pixel repeat factor of the PNG.")
@device_option("cpu")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch CPU threads (default: torch's choice).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def sample_cmd(
    checkpoint: Path,
    n: int,
    out_path: Path,
    sampler: str,
    steps: int,
    eta: float,
    seed: int,
    size: int | None,
    no_ema: bool,
    no_clip: bool,
    npy_path: Path | None,
    nrow: int | None,
    scale: int,
    device: torch.device,
    threads: int | None,
    no_progress: bool,
) -> None:
    """Draw samples from a trained prior (DDPM or DDIM) and save them as an image grid."""
    import torch

    from landprior.diffusion.images import save_grid
    from landprior.diffusion.sample import ddim_sample, ddpm_sample
    from landprior.diffusion.train import load_denoiser
    from landprior.fileio import ensure_writable, save_npy_atomic

    if threads is not None:
        torch.set_num_threads(threads)
    for path in (out_path, npy_path):  # before the sampling, not after it
        if path is not None:
            ensure_writable(path)
    try:
        denoiser, schedule, meta = load_denoiser(checkpoint, use_ema=not no_ema, device=device)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    cfg = meta["unet_config"]
    side = size or cfg.image_size
    if side % cfg.downsample_factor:
        raise click.BadParameter(
            f"size {side} is not divisible by {cfg.downsample_factor}", param_hint="--size"
        )
    shape = (n, cfg.in_channels, side, side)
    generator = torch.Generator().manual_seed(seed)
    clip = None if no_clip else 1.0
    try:
        if sampler == "ddpm":
            x = ddpm_sample(denoiser, schedule, shape, generator=generator, clip_x0=clip,
                            progress=not no_progress, device=device)
        else:
            x = ddim_sample(denoiser, schedule, shape, steps=min(steps, schedule.num_timesteps),
                            eta=eta, generator=generator, clip_x0=clip,
                            progress=not no_progress, device=device)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    x = x.clamp(-1, 1).cpu()
    save_grid(x, out_path, nrow=nrow, scale=scale)
    if npy_path is not None:
        save_npy_atomic(x.numpy(), npy_path)
    click.echo(
        f"{n} samples ({sampler}, step {meta['step']}, {meta['weights']} weights) -> {out_path}"
    )


@group.command(name="export")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, path_type=Path),
              help="checkpoint.pt of a training run (or the run folder).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Slim checkpoint to write (inference weights only).")
@click.option("--no-ema", is_flag=True, help="Export the raw weights instead of the EMA.")
def export_cmd(checkpoint: Path, out: Path, no_ema: bool) -> None:
    """Keep one set of weights of a training run: a few MB that sampling and inference read.

    The copy cannot be resumed (no optimizer, EMA or random states).
    """
    from landprior.diffusion.train import export_inference_checkpoint

    try:
        path = export_inference_checkpoint(checkpoint, out, use_ema=not no_ema)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"exported {checkpoint} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
