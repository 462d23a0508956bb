"""`landprior landcover`: the land-cover method, one subcommand per pipeline stage.

train-prior -> chips -> cluster -> pseudolabel -> train-segmenter -> predict -> evaluate
-> report. Each command is a thin shell over tested library functions; heavy imports stay
inside the functions so that ``--help`` is fast. Library errors (bad paths, grids, CRS,
values) are shown as one clear line, without a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from landprior.commands import clustering_em_options, device_option
from landprior.commands.diffusion import _PRESET_NAMES

if TYPE_CHECKING:  # torch is imported inside the commands: `--help` stays fast
    import torch

log = logging.getLogger(__name__)

_DATA = click.Path(exists=True, file_okay=False, path_type=Path)
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUT = click.Path(dir_okay=False, path_type=Path)


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's ValueError / FileNotFoundError into a one-line CLI error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, FileExistsError) as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def _threads(n: int | None) -> None:
    import torch

    if n is not None:
        torch.set_num_threads(n)


_threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="torch CPU threads (default: torch's choice).",
)


_device_option = device_option("auto")


_patch_size_option = click.option(
    "--patch-size", type=click.IntRange(min=8), default=128, show_default=True,
    help="Patch size in 1 m pixels (paper: 256).",
)
_factor_option = click.option(
    "--factor", type=click.IntRange(min=1), default=4, show_default=True,
    help="Mode-downsampling of the 1 m labels to the prior's grid (paper: 4, i.e. 4 m).",
)
_MAPPING_HELP = ("Label codes to classes: prior (every labelled pixel) or strict (ignores "
                 "shrub, agriculture, wetlands).")
_mapping_option = click.option(
    "--mapping", type=click.Choice(["prior", "strict"]), default="prior", show_default=True,
    help=_MAPPING_HELP,
)
_NO_PROGRESS_HELP = "No progress bar."
_no_progress_option = click.option("--no-progress", is_flag=True, help=_NO_PROGRESS_HELP)
_samples_png_option = click.option(
    "--samples-png", type=_OUT, default=None,
    help="Also save a PNG: real label patches (top) and prior samples (bottom).",
)


@click.group(name="landcover")
def group() -> None:
    """The land-cover method: prior, pseudo-labels, segmenter, evaluation."""


@group.command(name="train-prior")
@click.option("--data", "root", required=True, type=_DATA, help="Dataset root (EnviroAtlas).")
@click.option("--city", required=True, help="Source city id (its labels train the prior).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: checkpoint.pt, loss.jsonl, patches.npy.")
@click.option("--patches", type=click.IntRange(min=1), default=8000, show_default=True,
              help="Number of random label patches.")
@_patch_size_option
@_factor_option
@click.option("--preset", type=click.Choice(_PRESET_NAMES), default="landcover-cpu",
              show_default=True,
              help="U-Net preset (landcover-cpu on CPU; landcover64 is the paper's 85M net).")
@click.option("--steps", type=click.IntRange(min=1), default=3000, show_default=True,
              help="Optimizer steps (defaults: the CPU recipe, ~17 min on one thread).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Label patches per optimizer step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Adam learning rate.")
@click.option("--ema-rate", type=click.FloatRange(0, 1, max_open=True), default=0.995,
              show_default=True,
              help="EMA rate of the weights (the prior uses the EMA); 0 disables the EMA.")
@_mapping_option
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the patch sampling, the training and the --samples-png samples.")
@click.option("--on-data-change", type=click.Choice(["error", "continue", "restart"]),
              default="error", show_default=True,
              help="When OUT holds a run trained on other label patches (another city, "
              "--patches, --patch-size, --factor, --mapping or --seed): stop, continue that "
              "run on the new patches, or start a new run over it.")
@_samples_png_option
@_threads_option
@_device_option
@_no_progress_option
@_friendly
def train_prior(root: Path, city: str, out: Path, patches: int, patch_size: int, factor: int,
                preset: str, steps: int, batch_size: int, lr: float, ema_rate: float,
                mapping: str, seed: int, on_data_change: str, samples_png: Path | None,
                threads: int | None, device: torch.device, no_progress: bool) -> None:
    """Train the label DDPM prior on one-hot label patches of the source city.

    A run already in OUT continues from its checkpoint up to --steps (more --steps extend
    it), provided it was trained on the same label patches (see --on-data-change).
    """
    from landprior.commands.diffusion import build_train_config, data_changed_error
    from landprior.diffusion.train import TrainingDataChanged
    from landprior.fileio import save_npy_atomic
    from landprior.landcover.enviroatlas import EnviroAtlas
    from landprior.landcover.prior import (
        sample_label_grid,
        source_label_patches,
        train_label_prior,
    )

    _threads(threads)
    config = build_train_config(steps=steps, batch_size=batch_size, lr=lr, ema_rate=ema_rate,
                                seed=seed, hflip=True, vflip=True,
                                checkpoint_every=max(steps // 5, 1), device=str(device))
    out.mkdir(parents=True, exist_ok=True)
    labels = source_label_patches(
        EnviroAtlas(root), city, patches, size=patch_size, factor=factor,
        mapping=mapping, seed=seed,  # type: ignore[arg-type]
    )
    try:
        result = train_label_prior(labels, out, preset=preset, config=config, resume=True,
                                   progress=not no_progress,
                                   allow_data_change=on_data_change == "continue")
    except TrainingDataChanged as err:
        if on_data_change != "restart":
            raise data_changed_error(err, "the label patches",
                                     "--on-data-change continue (or restart)") from err
        log.warning("%s was trained on other label patches (%s); deleting it and starting a "
                    "new run", err.checkpoint, "; ".join(err.changes))
        err.checkpoint.unlink()
        result = train_label_prior(labels, out, preset=preset, config=config, resume=False,
                                   progress=not no_progress)
    save_npy_atomic(labels, out / "patches.npy")  # the patches of the run now in OUT
    if samples_png is not None:
        sample_label_grid(result.checkpoint, samples_png, size=patch_size // factor, seed=seed,
                          real_patches=labels, device=device)
    click.echo(f"prior trained to step {result.step}: {result.checkpoint}")


@group.command(name="install-prior")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, path_type=Path),
              help="A trained label prior (training run folder, checkpoint.pt or an export).")
@click.option("--data", "root", required=True, type=_DATA, help="Dataset root (EnviroAtlas).")
@click.option("--city", required=True, help="Source city id (real patches for the PNG).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder to write checkpoint.pt into.")
@_patch_size_option
@_factor_option
@_mapping_option
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the real patches and prior samples in --samples-png.")
@_samples_png_option
@_threads_option
@_device_option
@_friendly
def install_prior(checkpoint: Path, root: Path, city: str, out: Path, patch_size: int,
                  factor: int, mapping: str, seed: int, samples_png: Path | None,
                  threads: int | None, device: torch.device) -> None:
    """Use an already trained label prior (e.g. the shipped one) instead of training one.

    Checks the prior's class count against the class table, copies its EMA weights to
    OUT/checkpoint.pt and draws the same sample grid as train-prior.
    """
    from landprior.landcover.enviroatlas import EnviroAtlas
    from landprior.landcover.prior import (
        install_label_prior,
        sample_label_grid,
        source_label_patches,
    )

    _threads(threads)
    path = install_label_prior(checkpoint, out)
    if samples_png is not None:
        real = source_label_patches(
            EnviroAtlas(root), city, 64, size=patch_size, factor=factor,
            mapping=mapping, seed=seed,  # type: ignore[arg-type]
        )
        sample_label_grid(path, samples_png, size=patch_size // factor, seed=seed,
                          real_patches=real, device=device)
    click.echo(f"label prior {checkpoint} installed as {path}")


@group.command(name="prior-quality")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, path_type=Path),
              help="A trained label prior (run folder, checkpoint.pt or an export).")
@click.option("--data", "root", required=True, type=_DATA, help="Dataset root (EnviroAtlas).")
@click.option("--city", required=True, help="Source city id (its held-out labels are used).")
@click.option("--split", default="test", show_default=True,
              help="Tile split to draw the held-out label patches from.")
@click.option("--train-split", default="train", show_default=True,
              help="Split the prior was trained on: the samples' class mix is also compared "
                   "with --patches patches of it (skipped when the city has no such tiles).")
@click.option("--patches", type=click.IntRange(min=1), default=256, show_default=True,
              help="Held-out label patches for the denoising accuracy.")
@click.option("--samples", type=click.IntRange(min=1), default=64, show_default=True,
              help="Unconditional samples for the class and layout statistics.")
@_patch_size_option
@_factor_option
@_mapping_option
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the held-out patches, the denoising noise and the samples.")
@_samples_png_option
@_threads_option
@_device_option
@_friendly
def prior_quality_cmd(checkpoint: Path, root: Path, city: str, split: str, train_split: str,
                      patches: int, samples: int, patch_size: int, factor: int, mapping: str,
                      seed: int, samples_png: Path | None, threads: int | None,
                      device: torch.device) -> None:
    """How well a label prior knows the source city's layouts (one JSON object).

    Denoising accuracy of held-out label patches from t = 400 and 700, and class
    frequencies and layout smoothness of unconditional samples next to the data's.
    """
    import json

    from landprior.landcover.enviroatlas import EnviroAtlas
    from landprior.landcover.prior import prior_quality, source_label_patches

    _threads(threads)
    dataset = EnviroAtlas(root)
    held_out = source_label_patches(
        dataset, city, patches, splits=(split,), size=patch_size, factor=factor,
        mapping=mapping, seed=seed,  # type: ignore[arg-type]
    )
    train = None
    if train_split in dataset.splits(city):
        train = source_label_patches(
            dataset, city, patches, splits=(train_split,), size=patch_size, factor=factor,
            mapping=mapping, seed=seed,  # type: ignore[arg-type]
        )
    else:
        log.warning("%s has no %r tiles: the samples are compared with the held-out patches "
                    "only", city, train_split)
    result = prior_quality(checkpoint, held_out, n_samples=samples, seed=seed,
                           samples_png=samples_png, device=device,
                           train_patches=train)  # fmt: skip
    result.update(city=city, split=split, train_split=train_split if train is not None else None)
    click.echo(json.dumps(result, indent=2))


@group.command(name="chips")
@click.option("--data", "root", required=True, type=_DATA, help="Dataset root.")
@click.option("--city", required=True, help="City to sample chips from (an id `data info` lists).")
@click.option("--split", default="test", show_default=True,
              help="Tile split of --city to sample chips from.")
@click.option("--n", "n_chips", type=click.IntRange(min=1), default=128, show_default=True,
              help="Number of random chips.")
@click.option("--size", type=click.IntRange(min=8), default=128, show_default=True,
              help="Chip size in 1 m pixels.")
@click.option("--factor", type=click.IntRange(min=1), default=4, show_default=True,
              help="Pooling to the model grid: imagery and weak labels averaged, truth by mode "
              "(paper: 4); divides --size.")
@click.option("--weak-layer", default="prior", show_default=True,
              help="Weak labels: a prior layer name or a `data weak-labels` folder.")
@_mapping_option
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the chip positions.")
@click.option("--out", required=True, type=_OUT, help="Output chip set (.npz).")
@_friendly
def chips(root: Path, city: str, split: str, n_chips: int, size: int, factor: int,
          weak_layer: str, mapping: str, seed: int, out: Path) -> None:
    """Sample random georeferenced chips (imagery, weak labels, truth if any) of a city."""
    from landprior.landcover.chips import sample_city_chips
    from landprior.landcover.enviroatlas import EnviroAtlas

    cs = sample_city_chips(EnviroAtlas(root), city, split, n_chips, size=size, factor=factor,
                           seed=seed, weak_layer=weak_layer, mapping=mapping)  # type: ignore[arg-type]
    cs.save(out)
    click.echo(f"{len(cs)} chips of {city}/{split} -> {out}")


@group.command(name="cluster")
@click.option("--chips", "chips_path", required=True, type=_FILE, help="Input chip set.")
@click.option("--out", required=True, type=_OUT, help="Output chip set with clusters.")
@click.option("--k", type=click.IntRange(min=2), default=5, show_default=True,
              help="Colour clusters K per chip (paper: 5).")
@clustering_em_options
@_threads_option
@_friendly
def cluster(chips_path: Path, out: Path, k: int, radius: int, iterations: int,
            warmup_iterations: int, warmup_radius: int, seed: int, threads: int | None) -> None:
    """Local colour clustering (local Gaussian-mixture EM) of every chip."""
    import torch

    from landprior.landcover.chips import ChipSet
    from landprior.landcover.clustering import local_colour_clustering

    _threads(threads)
    cs = ChipSet.load(chips_path)
    if len(cs) == 0:
        raise ValueError(f"{chips_path} holds no chips to cluster")
    z = local_colour_clustering(
        torch.from_numpy(cs.image), n_components=k, radius=radius, iterations=iterations,
        warmup_iterations=warmup_iterations, warmup_radius=warmup_radius,
        generator=torch.Generator().manual_seed(seed),
    )
    cs.with_(clusters=z.numpy().astype("float32")).save(out)
    click.echo(f"clustered {len(cs)} chips (K = {k}) -> {out}")


@group.command(name="pseudolabel")
@click.option("--prior", "prior_path", required=True, type=_FILE, help="Prior checkpoint.pt.")
@click.option("--chips", "chips_path", required=True, type=_FILE,
              help="Chip set with clusters (from `landcover cluster`).")
@click.option("--out", required=True, type=_OUT, help="Output chip set with pseudo-labels.")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="Algorithm 1 steps per chip (paper: 200).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=5e-3,
              show_default=True,
              help="Adam learning rate on x at the first step, decaying linearly to 1e-3 of it "
              "(paper: 5e-3).")
@click.option("--window-radius", type=click.IntRange(min=0), default=15, show_default=True,
              help="MI and KL window radius at the label resolution (15 -> 31x31).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Chips optimised together (independent problems; memory vs speed).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the noise of Algorithm 1 (one stream per batch of chips).")
@click.option("--mi-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Weight of the MI term of log c (eq. 15).")
@click.option("--kl-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Weight of the KL term of log c (eq. 15).")
@click.option("--kl-direction", type=click.Choice(["forward", "reverse", "symmetric"]),
              default="forward", show_default=True,
              help="forward: KL(weak || p), the paper; reverse: KL(p || weak) also penalises "
              "classes the weak labels rule out; symmetric: their mean.")
@click.option("--init", "init", type=click.Choice(["weak", "weak_argmax"]), default="weak",
              show_default=True, help="Start x from the weak labels (paper) or their argmax.")
@click.option("--summary", type=_OUT, default=None,
              help="JSON with pseudo-label and weak-label agreement with the truth.")
@_threads_option
@_device_option
@_no_progress_option
@_friendly
def pseudolabel(prior_path: Path, chips_path: Path, out: Path, steps: int, lr: float,
                window_radius: int, batch_size: int, seed: int, mi_weight: float,
                kl_weight: float, kl_direction: str, init: str, summary: Path | None,
                threads: int | None, device: torch.device, no_progress: bool) -> None:
    """Pseudo-label chips with the prior under the MI - KL constraint (Algorithm 1)."""
    import torch

    from landprior.diffusion.train import load_denoiser
    from landprior.fileio import write_text_atomic
    from landprior.landcover.chips import ChipSet
    from landprior.landcover.pseudolabel import PseudoLabelConfig, agreement, pseudolabel_chips

    _threads(threads)
    cs = ChipSet.load(chips_path)
    if cs.clusters is None:
        raise click.ClickException(f"{chips_path} has no clusters; run `landcover cluster`")
    denoiser, schedule, meta = load_denoiser(prior_path, device=device)
    config = PseudoLabelConfig(steps=steps, lr=lr, mi_radius=window_radius,
                               kl_radius=window_radius, batch_size=batch_size, seed=seed,
                               mi_weight=mi_weight, kl_weight=kl_weight,
                               kl_direction=kl_direction, init=init)
    started = time.perf_counter()
    labels, probs = pseudolabel_chips(
        denoiser, schedule, torch.from_numpy(cs.weak), torch.from_numpy(cs.clusters), config,
        num_classes=meta["unet_config"].in_channels, progress=not no_progress,
        device=device,
    )
    seconds = time.perf_counter() - started
    cs.with_(pseudo=labels.numpy(), pseudo_probs=probs.numpy().astype("float16")).save(out)
    info: dict[str, Any] = {"city": cs.city, "chips": len(cs), "seconds": round(seconds, 2),
                            "chips_per_second": round(len(cs) / seconds, 3),
                            "device": str(device)}
    if cs.truth is not None:
        info["pseudo_label_accuracy"] = round(100 * agreement(labels.numpy(), cs.truth), 2)
        info["weak_label_accuracy"] = round(100 * agreement(cs.weak.argmax(1), cs.truth), 2)
    if summary is not None:
        write_text_atomic(json.dumps(info, indent=2) + "\n", summary)
    click.echo(json.dumps(info))


@group.command(name="export-chips")
@click.option("--chips", "chips_path", required=True, type=_FILE,
              help="Chip set (.npz), e.g. the output of `landcover pseudolabel`.")
@click.option("--out-dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder to create with one GeoTIFF per chip and layer plus chips.gpkg.")
@click.option("--layer", "layers", multiple=True, type=click.Choice(["pseudo", "weak", "truth"]),
              help="Layers to write (repeatable; default: every one the chip set has).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out-dir.")
@_friendly
def export_chips(chips_path: Path, out_dir: Path, layers: tuple[str, ...],
                 overwrite: bool) -> None:
    """Write chips as georeferenced class-map GeoTIFFs and a footprint GeoPackage.

    Open chips.gpkg and the *_pseudo.tif files in QGIS over the city's tiles to check the
    pseudo-labels where they were made; with truth, the index carries each chip's
    pseudo-label and weak-label accuracy.
    """
    from landprior.landcover.chip_export import CHIP_LAYERS, export_chip_set
    from landprior.landcover.chips import ChipSet

    result = export_chip_set(ChipSet.load(chips_path), out_dir,
                             layers=layers or CHIP_LAYERS, overwrite=overwrite)
    click.echo(json.dumps({"out_dir": str(result.out_dir), "index": str(result.index),
                           "files": result.files, "layers": list(result.layers)}))


@group.command(name="train-segmenter")
@click.option("--chips", "chips_paths", required=True, multiple=True, type=_FILE,
              help="Chip set(s) to train on (repeat the option for several).")
@click.option("--target", type=click.Choice(["truth", "pseudo"]), default="truth",
              show_default=True, help="truth: source labels; pseudo: pseudo-labels.")
@click.option("--inputs", type=click.Choice(["image", "image+weak"]), default="image",
              show_default=True, help="Imagery only, or imagery plus the weak labels.")
@click.option("--init", "init_path", type=_FILE, default=None,
              help="Start from this checkpoint (fine-tuning) instead of from scratch.")
@click.option("--out", required=True, type=_OUT, help="Output checkpoint (.pt).")
@click.option("--steps", type=click.IntRange(min=1), default=500, show_default=True,
              help="Optimizer (AdamW) steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Chips per step (replayed chips included, see --replay-fraction).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3,
              show_default=True, help="AdamW learning rate (weight decay 1e-4).")
@click.option("--base-channels", type=click.IntRange(min=4), default=32, show_default=True,
              help="Channels of the first U-Net level, doubled per level (ignored with --init).")
@click.option("--depth", type=click.IntRange(min=1), default=3, show_default=True,
              help="U-Net levels; 2**depth must divide the chip side (ignored with --init).")
@click.option("--norm", type=click.Choice(["group", "batch"]), default="group",
              show_default=True,
              help="Normalisation of a new U-Net: group (statistics of each window, so maps "
              "depend on the prediction window) or batch (running statistics: they do not). "
              "With --init the checkpoint's is kept.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the initial weights, batches and flips/rotations.")
@click.option("--replay-chips", "replay_paths", multiple=True, type=_FILE,
              help="Labelled chip set(s) (the source city's, truth labels) mixed into every "
              "batch while training on --chips; repeatable.")
@click.option("--replay-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.5,
              show_default=True, help="Share of each batch drawn from --replay-chips.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from OUT.resume (same chips, settings and "
              "starting weights).")
@click.option("--on-change", type=click.Choice(["error", "restart"]), default="error",
              show_default=True,
              help="With --resume, when OUT.resume belongs to another run (other chips, "
              "settings or --init weights): stop, or start over.")
@click.option("--save-every", type=click.IntRange(min=1), default=200, show_default=True,
              help="Steps between saves of the resumable state OUT.resume.")
@_threads_option
@_device_option
@_no_progress_option
@_friendly
def train_segmenter_cmd(chips_paths: tuple[Path, ...], target: str, inputs: str,
                        init_path: Path | None, out: Path, steps: int, batch_size: int,
                        lr: float, base_channels: int, depth: int, norm: str, seed: int,
                        replay_paths: tuple[Path, ...], replay_fraction: float, resume: bool,
                        on_change: str, save_every: int, threads: int | None, device: torch.device,
                        no_progress: bool) -> None:
    """Train (or fine-tune) the U-Net p(labels | image) on chip sets.

    While training, OUT.resume holds the run's state (every --save-every steps, and when
    Ctrl-C or SIGTERM stops it after the current step); --resume continues from there with
    the same result as an uninterrupted run. It is removed once OUT is written.
    """
    import torch

    from landprior.fileio import ensure_writable
    from landprior.landcover.chips import ChipSet
    from landprior.landcover.segmenter import (
        SegmenterConfig,
        SegmenterStateMismatch,
        SegmenterTrainConfig,
        load_segmenter,
        save_segmenter,
        train_segmenter,
        training_state_path,
    )

    source = click.get_current_context().get_parameter_source("replay_fraction")
    if not replay_paths and source is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--replay-fraction needs --replay-chips (the chips to replay)")
    _threads(threads)
    sets = [ChipSet.load(p) for p in chips_paths]
    factors = {cs.factor for cs in sets}
    if len(factors) != 1:
        raise click.ClickException(f"chip sets mix pooling factors {sorted(factors)}")
    pairs = [cs.training_tensors(target=target, inputs=inputs) for cs in sets]
    images = torch.cat([p[0] for p in pairs])
    labels = torch.cat([p[1] for p in pairs])
    replay = None
    if replay_paths:
        replay_sets = [ChipSet.load(p) for p in replay_paths]
        if {cs.factor for cs in replay_sets} != {sets[0].factor}:
            raise click.ClickException("replay chips and training chips differ in pooling factor")
        replay_pairs = [cs.training_tensors(target="truth", inputs=inputs) for cs in replay_sets]
        replay = (torch.cat([p[0] for p in replay_pairs]), torch.cat([p[1] for p in replay_pairs]))
    ensure_writable(out)  # before minutes of training, not after
    torch.manual_seed(seed)
    if init_path is not None:
        model, meta = load_segmenter(init_path)
        norm_source = click.get_current_context().get_parameter_source("norm")
        if norm_source is click.core.ParameterSource.COMMANDLINE and norm != model.config.norm:
            raise click.ClickException(
                f"{init_path} uses norm {model.config.norm!r}; --norm {norm} cannot change it "
                "when fine-tuning (drop --norm)"
            )
        if meta.get("inputs", "image") != inputs:
            raise click.ClickException(
                f"{init_path} takes inputs {meta.get('inputs')!r}, not {inputs!r}"
            )
    else:
        model = SegmenterConfig(in_channels=images.shape[1], base_channels=base_channels,
                                depth=depth, norm=norm).build()
    model = model.to(device)
    train_config = SegmenterTrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                        replay_fraction=replay_fraction)
    state_path = training_state_path(out)

    def run(resume_run: bool) -> list[float]:
        return train_segmenter(model, images, labels, train_config, replay=replay,
                               progress=not no_progress, state_path=state_path,
                               resume=resume_run, save_every=save_every)

    try:
        losses = run(resume)
    except SegmenterStateMismatch as err:
        if on_change != "restart":
            raise click.ClickException(f"{err} (--on-change restart starts over)") from err
        log.warning("%s; starting over", err)  # a refused resume has not touched the model
        losses = run(False)
    meta = {"inputs": inputs, "downsample": factors.pop(), "target": target,
            "chip_size": int(images.shape[-1]),  # model px; predict's default --window
            "chips": [str(p) for p in chips_paths], "init": str(init_path) if init_path else None,
            "replay_chips": [str(p) for p in replay_paths],
            "replay_fraction": replay_fraction if replay_paths else 0.0,
            "final_loss": losses[-1] if losses else None}
    save_segmenter(out, model, meta)
    training_state_path(out).unlink(missing_ok=True)
    click.echo(f"segmenter ({inputs}, {target}, {steps} steps) -> {out}")


def _prediction_window(window: int | None, model: Any, meta: dict, model_path: Path) -> int:
    """--window: the size of the model's training chips unless given (warned when it differs
    for a GroupNorm model, whose maps change with the window)."""
    trained = meta.get("chip_size")
    if window is None:
        return int(trained) if trained else 32
    if trained and window != trained and model.config.norm == "group":
        click.echo(
            f"Warning: --window {window} differs from the {trained}-pixel chips {model_path} "
            "was trained on; its GroupNorm normalises over the window, so the maps change "
            "with it (README: up to 8 points on the demo).", err=True,
        )  # fmt: skip
    return window


_WINDOW_HELP = ("Prediction window in model pixels [default: the size of the chips the model "
                "was trained on, else 32]. A GroupNorm U-Net (train-segmenter --norm group) "
                "normalises over the window, so other sizes change its maps (warned).")
_OVERLAP_HELP = ("Overlap of neighbouring windows in model pixels (x1/factor grid), blended "
                 "linearly; less than --window.")
_UPSAMPLE_HELP = ("From the model's coarse grid to the imagery's: guided by the image (joint "
                  "bilateral upsampling; maps follow its edges) or plain bilinear.")


def _prediction_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--window, --overlap, --upsample and --guide-sigma of `predict` and `map`."""
    for option in reversed((
        click.option("--window", type=click.IntRange(min=8), default=None, help=_WINDOW_HELP),
        click.option("--overlap", type=click.IntRange(min=0), default=8, show_default=True,
                     help=_OVERLAP_HELP),
        click.option("--upsample", type=click.Choice(["guided", "bilinear"]),
                     default="guided", show_default=True, help=_UPSAMPLE_HELP),
        click.option("--guide-sigma", type=click.FloatRange(min=0, max=1, min_open=True),
                     default=0.05, show_default=True,
                     help="Range sigma of --upsample guided, in [0, 1] band units."),
    )):  # fmt: skip
        func = option(func)
    return func


@group.command(name="predict")
@click.option("--data", "root", required=True, type=_DATA, help="Dataset root.")
@click.option("--city", required=True,
              help="City whose tiles to predict (an id `data info` lists).")
@click.option("--split", default="test", show_default=True, help="Tile split of --city to predict.")
@click.option("--model", "model_path", required=True, type=_FILE, help="Segmenter checkpoint.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for {tile}_landcover.tif class maps.")
@click.option("--tile", "tile_ids", multiple=True, help="Only these tile ids (repeatable).")
@_prediction_options
@click.option("--weak-layer", default="prior", show_default=True,
              help="Weak labels: a prior layer name or a `data weak-labels` folder.")
@click.option("--probabilities", is_flag=True, help="Also write {tile}_probabilities.tif.")
@_threads_option
@_device_option
@_friendly
def predict(root: Path, city: str, split: str, model_path: Path, out_dir: Path,
            tile_ids: tuple[str, ...], window: int | None, overlap: int, weak_layer: str,
            probabilities: bool, upsample: str, guide_sigma: float, threads: int | None,
            device: torch.device) -> None:
    """Predict whole tiles to paletted COG GeoTIFFs (memory bounded by the window).

    The model runs at its training resolution (the checkpoint's pooling, x1/4 in the
    pipeline); its probabilities are brought back to the imagery's grid guided by the
    image itself (--upsample guided), so class edges follow the 1 m imagery. For imagery
    outside a dataset (your own GeoTIFFs), use `landcover map`.
    """
    from landprior.landcover.enviroatlas import EnviroAtlas
    from landprior.landcover.predict import predict_tile
    from landprior.landcover.segmenter import load_segmenter

    _threads(threads)
    ds = EnviroAtlas(root)
    model, meta = load_segmenter(model_path)
    model = model.to(device)
    window = _prediction_window(window, model, meta, model_path)
    tiles = ds.tiles(city, split)
    if tile_ids:
        known = {t.tile_id for t in tiles}
        unknown = sorted(set(tile_ids) - known)
        if unknown:
            raise click.ClickException(f"unknown tiles {unknown} in {city}/{split}")
        tiles = [t for t in tiles if t.tile_id in tile_ids]
    for tile in tiles:
        predict_tile(
            model, ds, tile, out_dir / f"{tile.tile_id}_landcover.tif",
            inputs=meta.get("inputs", "image"), downsample=int(meta.get("downsample", 1)),
            window=window, overlap=overlap, weak_layer=weak_layer,
            probabilities_path=(out_dir / f"{tile.tile_id}_probabilities.tif")
            if probabilities else None,
            upsample=upsample, sigma_range=guide_sigma,  # type: ignore[arg-type]
        )
    click.echo(f"predicted {len(tiles)} tiles of {city}/{split} -> {out_dir}")


@group.command(name="map")
@click.argument("images", nargs=-1, required=True, type=_FILE)
@click.option("--model", "model_path", required=True, type=_FILE,
              help="Segmenter checkpoint taking imagery only (train-segmenter --inputs image).")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <image name>_landcover.tif class maps.")
@_prediction_options
@click.option("--probabilities", is_flag=True,
              help="Also write <image name>_probabilities.tif.")
@_threads_option
@_device_option
@_friendly
def map_images(images: tuple[Path, ...], model_path: Path, out_dir: Path, window: int | None,
               overlap: int, probabilities: bool, upsample: str, guide_sigma: float,
               threads: int | None, device: torch.device) -> None:
    """Map your own imagery: 4-band (R, G, B, NIR) uint8 GeoTIFFs such as NAIP quarter quads.

    Each IMAGE gets OUT_DIR/<name>_landcover.tif on its own grid (CRS, transform, size), as
    paletted COG with the class names, like `predict` writes for dataset tiles. Expects
    ~1 m pixels on a projected CRS (warned otherwise; no CRS is an error); pixels the image
    marks as no data stay no data (255; masked in the probabilities) and are filled from
    their nearest valid pixel before the model sees them.

    A segmenter maps what it was trained on: those of `make demo` have seen only the
    synthetic cities; for real NAIP use one trained on real data (enviroatlas.yaml).
    """
    from landprior.landcover.predict import check_mappable_image, predict_image
    from landprior.landcover.segmenter import load_segmenter

    _threads(threads)
    stems = [p.stem for p in images]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise click.UsageError(f"several IMAGES are named {clashes}: their maps would overwrite "
                               "each other in --out-dir; map them into separate folders")
    model, meta = load_segmenter(model_path)
    if meta.get("inputs", "image") != "image":
        raise click.ClickException(
            f"{model_path} takes imagery + weak labels ({meta.get('inputs')!r}); `map` has no "
            "weak labels: use a model trained with --inputs image"
        )
    model = model.to(device)
    window = _prediction_window(window, model, meta, model_path)
    downsample = int(meta.get("downsample", 1))
    for image in images:  # every input checked before the first map is written
        check_mappable_image(image, window=window, downsample=downsample)
    for image, stem in zip(images, stems, strict=True):
        predict_image(
            model, image, out_dir / f"{stem}_landcover.tif",
            downsample=downsample, window=window, overlap=overlap,
            probabilities_path=(out_dir / f"{stem}_probabilities.tif") if probabilities else None,
            upsample=upsample, sigma_range=guide_sigma,  # type: ignore[arg-type]
        )  # fmt: skip
        click.echo(f"{image} -> {out_dir / f'{stem}_landcover.tif'}")


@group.command(name="evaluate")
@click.option("--data", "root", required=True, type=_DATA, help="Dataset root.")
@click.option("--city", required=True, help="City whose tiles to score (an id `data info` lists).")
@click.option("--split", default="test", show_default=True, help="Tile split of --city to score.")
@click.option("--method", required=True, help="Row name in the results table.")
@click.option("--predictions", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of {tile}_landcover.tif (omit with --weak-labels).")
@click.option("--weak-labels", is_flag=True, help="Score the weak-label argmax instead.")
@click.option("--weak-layer", default="prior", show_default=True,
              help="Weak labels: a prior layer name or a `data weak-labels` folder.")
@_mapping_option
@click.option("--out", required=True, type=_OUT, help="Output JSON with scores.")
@_friendly
def evaluate(root: Path, city: str, split: str, method: str, predictions: Path | None,
             weak_labels: bool, weak_layer: str, mapping: str, out: Path) -> None:
    """Accuracy and class-mean IoU pooled over a city's tiles."""
    from landprior.landcover.enviroatlas import EnviroAtlas
    from landprior.landcover.evaluate import (
        evaluate_class_maps,
        evaluate_weak_labels,
        metrics_row,
        write_text_atomic,
    )

    ds = EnviroAtlas(root)
    tiles = ds.tiles(city, split)
    if weak_labels == (predictions is not None):
        raise click.ClickException("give exactly one of --predictions DIR or --weak-labels")
    if weak_labels:
        scores = evaluate_weak_labels(ds, tiles, weak_layer=weak_layer, mapping=mapping)  # type: ignore[arg-type]
    else:
        assert predictions is not None
        preds = {t: predictions / f"{t.tile_id}_landcover.tif" for t in tiles}
        scores = evaluate_class_maps(ds, preds, mapping=mapping)  # type: ignore[arg-type]
    row = metrics_row(method, city, scores)
    write_text_atomic(json.dumps({"row": row, "scores": scores}, indent=2) + "\n", out)
    click.echo(json.dumps(row))
