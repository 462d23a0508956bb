"""The eps-prediction U-Net of Dhariwal & Nichol ("Diffusion models beat GANs", 2021).

Written from the paper (section 3: residual blocks with a timestep embedding, adaptive group
norm ``GroupNorm(h) * (1 + scale) + shift``, self-attention at low resolutions with a fixed
number of channels per head, BigGAN-style up/down-sampling residual blocks, learned variance)
and from the module layout of the released guided-diffusion checkpoints, so that such a
``state_dict`` (for example the FFHQ-256 model of the ddpm-segmentation release used by
Graikos et al. 2022, section 3.2) loads with ``strict=True``:

``time_embed.{0,2}``, ``label_emb``, ``input_blocks.N.M``, ``middle_block.M``,
``output_blocks.N.M``, ``out.{0,2}``; inside a residual block ``in_layers.{0,2}``,
``emb_layers.1``, ``out_layers.{0,3}``, ``skip_connection``; inside an attention block
``norm``, ``qkv`` (a 1x1 Conv1d to 3C channels) and ``proj_out`` (a 1x1 Conv1d);
``op`` / ``conv`` for plain down/up-sampling.

Timesteps given to :meth:`UNetModel.forward` are the network's 0-based index ``t - 1``;
:class:`landprior.diffusion.denoiser.EpsDenoiser` does that shift. Attention uses
``torch.nn.functional.scaled_dot_product_attention`` and never gradient checkpointing, so
gradients with respect to the input (guided inference) are exact and cheap.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landprior.diffusion.nn import count_parameters, group_norm, timestep_embedding, zero_init
from landprior.fileio import torch_load_checked

log = logging.getLogger(__name__)

__all__ = [
    "PRESETS",
    "AttentionBlock",
    "Downsample",
    "ResBlock",
    "UNetConfig",
    "UNetModel",
    "Upsample",
    "attention_ds_from_pixels",
    "check_state_dict",
    "load_guided_diffusion_checkpoint",
]


# ---------------------------------------------------------------------------------- layers
class EmbedBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second argument."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class EmbedSequential(nn.Sequential):
    """``nn.Sequential`` that hands ``emb`` (B, E) to the children that take it."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, EmbedBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling, optionally followed by a 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        elif self.out_channels != channels:
            raise ValueError("Upsample without a conv cannot change the channel count")

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """x2 downsampling: a strided 3x3 conv or a 2x2 average pool (key ``op`` either way)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError("Downsample without a conv cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class ResBlock(EmbedBlock):
    """Residual block conditioned on the timestep embedding.

    ``h = conv(SiLU(GN(x)))``; the embedding enters either additively (``h + W e``) or, with
    ``use_scale_shift_norm``, as adaptive group norm ``GN(h) * (1 + s) + b`` with
    ``(s, b) = W e`` (Dhariwal & Nichol, section 3, "AdaGN"); then
    ``h = conv(Dropout(SiLU(.)))`` with a zero-initialised last conv, and the output is
    ``skip(x) + h``. With ``up`` / ``down`` the block also resamples (BigGAN, Brock et al.),
    applying the resampling to both branches after the first norm + activation.

    Shapes: ``x`` (B, C_in, H, W), ``emb`` (B, E) -> (B, C_out, H', W').
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        *,
        use_conv_skip: bool = False,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("a ResBlock resamples up or down, not both")
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.updown = up or down

        self.in_layers = nn.Sequential(
            group_norm(channels, norm_groups),
            nn.SiLU(),
            nn.Conv2d(channels, self.out_channels, 3, padding=1),
        )
        if up:
            self.h_upd: nn.Module = Upsample(channels, use_conv=False)
            self.x_upd: nn.Module = Upsample(channels, use_conv=False)
        elif down:
            self.h_upd = Downsample(channels, use_conv=False)
            self.x_upd = Downsample(channels, use_conv=False)
        else:
            self.h_upd = nn.Identity()
            self.x_upd = nn.Identity()

        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            group_norm(self.out_channels, norm_groups),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_init(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        elif use_conv_skip:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            norm, act, conv = self.in_layers
            h = self.h_upd(act(norm(x)))
            x = self.x_upd(x)
            h = conv(h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        norm, act, drop, conv = self.out_layers
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = norm(h) * (1 + scale) + shift
        else:
            h = norm(h + e)
        h = conv(drop(act(h)))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions, with a residual connection.

    ``qkv`` is a 1x1 Conv1d from C to 3C channels. In the legacy head order of the released
    checkpoints (``new_order=False``) the 3C channels are grouped per head as
    ``[q_h, k_h, v_h]``; in the new order they are ``[q (all heads), k, v]``.
    ``softmax(q k^T / sqrt(d)) v`` per head, then ``proj_out`` (zero-initialised).

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        *,
        new_order: bool = False,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        if num_head_channels == -1:
            if num_heads < 1 or channels % num_heads != 0:
                raise ValueError(
                    f"attention channels {channels} not divisible by num_heads {num_heads}"
                )
            self.num_heads = num_heads
        else:
            if num_head_channels < 1 or channels % num_head_channels != 0:
                raise ValueError(
                    f"attention channels {channels} not divisible by num_head_channels "
                    f"{num_head_channels}"
                )
            self.num_heads = channels // num_head_channels
        self.channels = channels
        self.new_order = new_order
        self.norm = group_norm(channels, norm_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_init(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))  # (B, 3C, L)
        heads, d, length = self.num_heads, c // self.num_heads, flat.shape[-1]
        if self.new_order:
            q, k, v = qkv.reshape(b, 3, heads, d, length).unbind(1)
        else:
            q, k, v = qkv.reshape(b, heads, 3 * d, length).split(d, dim=2)
        # (B, heads, d, L) -> (B, heads, L, d) for scaled_dot_product_attention.
        out = F.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )
        out = out.transpose(-1, -2).reshape(b, c, length)
        return (flat + self.proj_out(out)).reshape(b, c, *spatial)


# ---------------------------------------------------------------------------------- config
_DEFAULT_MULT_BY_SIZE: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}

# guided-diffusion's model_and_diffusion_defaults(): the model part, and the flags that
# concern only the diffusion or the training loop (accepted and ignored here).
_GD_MODEL_DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 128,
    "num_res_blocks": 2,
    "num_heads": 4,
    "num_heads_upsample": -1,
    "num_head_channels": -1,
    "attention_resolutions": "16,8",
    "channel_mult": "",
    "dropout": 0.0,
    "class_cond": False,
    "use_checkpoint": False,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "use_fp16": False,
    "use_new_attention_order": False,
    "learn_sigma": False,
    # not guided-diffusion flags, but useful for non-RGB models
    "in_channels": 3,
    "num_classes": 1000,
}
_GD_IGNORED_FLAGS = frozenset(
    {
        "diffusion_steps",
        "noise_schedule",
        "timestep_respacing",
        "use_kl",
        "predict_xstart",
        "rescale_timesteps",
        "rescale_learned_sigmas",
        "sigma_small",
        "use_checkpoint",
        "use_fp16",
    }
)


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "t", "yes", "y"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "f", "no", "n"):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"flag {name!r} must be a boolean, got {value!r}")


def _int_list(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    elif isinstance(value, Iterable):
        parts = list(value)
    else:
        parts = [value]
    try:
        return tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a comma-separated list of integers, got {value!r}"
        ) from None


def attention_ds_from_pixels(image_size: int, resolutions: Sequence[int] | str) -> tuple[int, ...]:
    """Convert attention resolutions in pixels (e.g. ``"32,16,8"``) to downsample rates.

    guided-diffusion's command line takes pixels and the network takes rates
    ``ds = image_size // pixels`` (256 px with ``32,16,8`` -> ``(8, 16, 32)``).
    """
    pixels = _int_list("attention_resolutions", resolutions)
    out = []
    for px in pixels:
        if px <= 0 or image_size % px != 0:
            raise ValueError(
                f"attention resolution {px} px does not divide image_size {image_size}"
            )
        out.append(image_size // px)
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNetModel` (guided-diffusion ``UNetModel`` arguments).

    ``out_channels`` is the number of data channels the network predicts eps for (defaults to
    ``in_channels``); with ``learn_sigma`` the last conv has ``2 * out_channels`` outputs: eps,
    then the variance interpolation ``v`` (Nichol & Dhariwal 2021, eq. 15).
    ``attention_resolutions`` are downsample rates ``ds`` (1 = full resolution) as in
    guided-diffusion's network; use :meth:`with_attention_pixels` or
    :meth:`from_guided_diffusion_flags` to give them in pixels.
    ``norm_groups`` is 32 in every released model; smaller values allow tiny CPU networks.
    """

    image_size: int = 64
    in_channels: int = 3
    model_channels: int = 128
    out_channels: int | None = None
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 8)
    dropout: float = 0.0
    channel_mult: tuple[float, ...] = (1, 2, 3, 4)
    conv_resample: bool = True
    num_classes: int | None = None
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    learn_sigma: bool = False
    norm_groups: int = 32
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        # Normalise sequence fields (lists from JSON/YAML) into tuples.
        object.__setattr__(
            self, "attention_resolutions", tuple(int(d) for d in self.attention_resolutions)
        )
        object.__setattr__(
            self,
            "channel_mult",
            tuple(int(m) if float(m).is_integer() else float(m) for m in self.channel_mult),
        )
        self._validate()

    # -------------------------------------------------------------- validation
    def _validate(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive integer, got {value!r}")

        for name in ("image_size", "in_channels", "model_channels", "num_res_blocks",
                     "norm_groups"):
            positive(name)
        if self.out_channels is not None:
            positive("out_channels")
        if self.num_classes is not None:
            positive("num_classes")
        if not self.channel_mult or any(m <= 0 for m in self.channel_mult):
            raise ValueError(
                f"channel_mult must be a non-empty tuple of positive numbers, got "
                f"{self.channel_mult!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        factor = self.downsample_factor
        if self.image_size % factor != 0:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by {factor} = 2^"
                f"{len(self.channel_mult) - 1} (one halving per level of channel_mult "
                f"{self.channel_mult})"
            )
        for mult in self.channel_mult:
            ch = int(mult * self.model_channels)
            if ch < 1 or ch % self.norm_groups != 0:
                raise ValueError(
                    f"level width int({mult} * {self.model_channels}) = {ch} is not divisible "
                    f"by norm_groups {self.norm_groups}"
                )
        reachable = tuple(2**i for i in range(len(self.channel_mult)))
        for ds in self.attention_resolutions:
            if ds not in reachable:
                raise ValueError(
                    f"attention_resolutions holds downsample rates; {ds} is not one of the "
                    f"rates this network reaches {reachable} (did you give pixels? use "
                    f"UNetConfig.with_attention_pixels)"
                )
        if self.num_head_channels != -1 and self.num_head_channels < 1:
            raise ValueError(
                f"num_head_channels must be -1 or positive, got {self.num_head_channels}"
            )
        for heads_name in ("num_heads", "num_heads_upsample"):
            value = getattr(self, heads_name)
            if value != -1 and value < 1:
                raise ValueError(f"{heads_name} must be -1 or positive, got {value}")
        if self.num_heads == -1:
            raise ValueError("num_heads must be positive")
        # Every attention width must split into whole heads.
        for level, mult in enumerate(self.channel_mult):
            if 2**level in self.attention_resolutions or level == len(self.channel_mult) - 1:
                ch = int(mult * self.model_channels)
                if self.num_head_channels != -1:
                    bad = ch % self.num_head_channels != 0
                else:
                    bad = ch % self.num_heads != 0 or ch % self.heads_upsample != 0
                if bad:
                    raise ValueError(
                        f"attention at width {ch} cannot be split into heads "
                        f"(num_heads={self.num_heads}, num_head_channels="
                        f"{self.num_head_channels})"
                    )

    # -------------------------------------------------------------- derived facts
    @property
    def downsample_factor(self) -> int:
        """Total spatial reduction, 2^(levels - 1); input H and W must be multiples of it."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def eps_channels(self) -> int:
        """Channels of eps (and of the data): ``out_channels`` or ``in_channels``."""
        return self.out_channels if self.out_channels is not None else self.in_channels

    @property
    def output_channels(self) -> int:
        """Channels of the raw network output: ``2 * eps_channels`` with learned sigma."""
        return self.eps_channels * (2 if self.learn_sigma else 1)

    @property
    def heads_upsample(self) -> int:
        """Attention heads of the decoder (``num_heads`` unless set separately)."""
        return self.num_heads if self.num_heads_upsample == -1 else self.num_heads_upsample

    @property
    def attention_pixels(self) -> tuple[int, ...]:
        """The attention resolutions in pixels at ``image_size``."""
        return tuple(sorted((self.image_size // ds for ds in self.attention_resolutions),
                            reverse=True))

    # -------------------------------------------------------------- construction
    def build(self, device: torch.device | str | None = None) -> UNetModel:
        """Instantiate the network (``device="meta"`` builds it without memory)."""
        if device is None:
            return UNetModel(self)
        with torch.device(device):
            return UNetModel(self)

    def replace(self, **changes: Any) -> UNetConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_attention_pixels(self, pixels: Sequence[int] | str) -> UNetConfig:
        """A copy with attention at the given resolutions in pixels (e.g. ``"32,16,8"``)."""
        return self.replace(
            attention_resolutions=attention_ds_from_pixels(self.image_size, pixels)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists); inverse of :meth:`from_dict`."""
        out = dataclasses.asdict(self)
        out["attention_resolutions"] = list(self.attention_resolutions)
        out["channel_mult"] = list(self.channel_mult)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error that names them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown UNetConfig keys {unknown}; expected some of {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def from_guided_diffusion_flags(cls, flags: Mapping[str, Any]) -> UNetConfig:
        """Config from guided-diffusion command-line flags (``model_and_diffusion_defaults``).

        Missing flags take guided-diffusion's defaults; values may be strings as on a command
        line (``"True"``, ``"32,16,8"``). ``attention_resolutions`` are in pixels,
        ``channel_mult=""`` picks the default multipliers for the image size, ``class_cond``
        gives 1000 classes (override with ``num_classes``). Diffusion and training flags
        (``diffusion_steps``, ``noise_schedule``, ``use_fp16``, ...) are accepted and ignored.
        Example (FFHQ-256 of ddpm-segmentation): ``{"image_size": 256, "num_channels": 256,
        "attention_resolutions": "32,16,8", "num_head_channels": 64, "resblock_updown": True,
        "learn_sigma": True, ...}``.
        """
        unknown = sorted(set(flags) - set(_GD_MODEL_DEFAULTS) - _GD_IGNORED_FLAGS)
        if unknown:
            raise ValueError(
                f"unknown guided-diffusion flags {unknown}; model flags are "
                f"{sorted(_GD_MODEL_DEFAULTS)}, ignored flags {sorted(_GD_IGNORED_FLAGS)}"
            )
        f = {**_GD_MODEL_DEFAULTS, **flags}
        image_size = int(f["image_size"])
        mult_flag = f["channel_mult"]
        if mult_flag in ("", None, ()):
            if image_size not in _DEFAULT_MULT_BY_SIZE:
                raise ValueError(
                    f"no default channel_mult for image_size {image_size}; give channel_mult "
                    f"explicitly (defaults exist for {sorted(_DEFAULT_MULT_BY_SIZE)})"
                )
            mult: tuple[float, ...] = _DEFAULT_MULT_BY_SIZE[image_size]
        elif isinstance(mult_flag, str):
            mult = tuple(float(m) for m in mult_flag.split(",") if m.strip())
        else:
            mult = tuple(float(m) for m in mult_flag)
        class_cond = _as_bool("class_cond", f["class_cond"])
        return cls(
            image_size=image_size,
            in_channels=int(f["in_channels"]),
            model_channels=int(f["num_channels"]),
            num_res_blocks=int(f["num_res_blocks"]),
            attention_resolutions=attention_ds_from_pixels(
                image_size, f["attention_resolutions"]
            ),
            dropout=float(f["dropout"]),
            channel_mult=mult,
            num_classes=int(f["num_classes"]) if class_cond else None,
            num_heads=int(f["num_heads"]),
            num_head_channels=int(f["num_head_channels"]),
            num_heads_upsample=int(f["num_heads_upsample"]),
            use_scale_shift_norm=_as_bool("use_scale_shift_norm", f["use_scale_shift_norm"]),
            resblock_updown=_as_bool("resblock_updown", f["resblock_updown"]),
            use_new_attention_order=_as_bool(
                "use_new_attention_order", f["use_new_attention_order"]
            ),
            learn_sigma=_as_bool("learn_sigma", f["learn_sigma"]),
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> UNetConfig:
        """A named configuration (see :data:`PRESETS`), optionally with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown U-Net preset {name!r}; expected one of {sorted(PRESETS)}")
        base = PRESETS[name]
        return base.replace(**overrides) if overrides else base


# The authors' networks (Graikos et al. 2022 code): guided-diffusion defaults with
# use_scale_shift_norm=False, plain conv resampling and attention given as rates.
PRESETS: dict[str, UNetConfig] = {
    # Pretrained FFHQ-256 DDPM of the ddpm-segmentation release (guided-diffusion flags
    # --attention_resolutions 32,16,8 --num_channels 256 --num_head_channels 64
    # --num_res_blocks 2 --resblock_updown True --use_scale_shift_norm True
    # --learn_sigma True --image_size 256); 552,814,086 parameters.
    "ffhq256": UNetConfig(
        name="ffhq256",
        image_size=256,
        in_channels=3,
        model_channels=256,
        num_res_blocks=2,
        attention_resolutions=(8, 16, 32),
        channel_mult=(1, 1, 2, 2, 4, 4),
        num_heads=4,
        num_head_channels=64,
        use_scale_shift_norm=True,
        resblock_updown=True,
        learn_sigma=True,
    ),
    # MNIST padded to 32x32 (authors: attention_resolutions=[8, 4] as rates).
    "mnist32": UNetConfig(
        name="mnist32",
        image_size=32,
        in_channels=1,
        model_channels=64,
        num_res_blocks=2,
        attention_resolutions=(4, 8),
        channel_mult=(1, 2, 3, 4),
        num_heads=4,
        use_scale_shift_norm=False,
    ),
    # TSP tour images 64x64 (authors: attention_resolutions=[16, 8] as rates; 16 is never
    # reached with four levels, so attention runs at rate 8 and in the middle block).
    "tsp64": UNetConfig(
        name="tsp64",
        image_size=64,
        in_channels=1,
        model_channels=64,
        num_res_blocks=2,
        attention_resolutions=(8,),
        channel_mult=(1, 2, 3, 4),
        num_heads=4,
        use_scale_shift_norm=False,
    ),
    # Land-cover one-hot label patches, 5 classes at 64x64 (authors: 128 channels).
    "landcover64": UNetConfig(
        name="landcover64",
        image_size=64,
        in_channels=5,
        model_channels=128,
        num_res_blocks=2,
        attention_resolutions=(8,),
        channel_mult=(1, 2, 3, 4),
        num_heads=4,
        use_scale_shift_norm=False,
    ),
    # Small CPU networks of the same family: the cost sits at full resolution, so the first
    # level is narrow (16 channels) and the width grows below; ~0.5 s per training step at
    # batch 16, 64x64, on two cores.
    "landcover-cpu": UNetConfig(
        name="landcover-cpu",
        image_size=64,
        in_channels=5,
        model_channels=16,
        num_res_blocks=1,
        attention_resolutions=(4, 8),
        channel_mult=(1, 2, 4, 4),
        num_heads=4,
        use_scale_shift_norm=True,
        norm_groups=8,
    ),
    "tsp-cpu": UNetConfig(
        name="tsp-cpu",
        image_size=64,
        in_channels=1,
        model_channels=16,
        num_res_blocks=1,
        attention_resolutions=(4, 8),
        channel_mult=(1, 2, 4, 4),
        num_heads=4,
        use_scale_shift_norm=True,
        norm_groups=8,
    ),
    # For tests: a few thousand parameters, milliseconds per call.
    "tiny": UNetConfig(
        name="tiny",
        image_size=16,
        in_channels=1,
        model_channels=4,
        num_res_blocks=1,
        attention_resolutions=(2,),
        channel_mult=(1, 2),
        num_heads=2,
        use_scale_shift_norm=True,
        norm_groups=2,
    ),
}


# ---------------------------------------------------------------------------------- model
class UNetModel(nn.Module):
    """Dhariwal & Nichol U-Net predicting eps (and optionally the variance interpolation).

    ``forward(x, timesteps, y=None)``: ``x`` (B, C_in, H, W) with H, W multiples of
    ``config.downsample_factor``; ``timesteps`` (B,) 0-based network index (``t - 1`` in the
    papers' convention, see :class:`landprior.diffusion.denoiser.EpsDenoiser`); ``y`` (B,)
    class labels iff ``config.num_classes`` is set. Returns (B, C_out, H, W), C_out =
    ``config.output_channels`` (eps first, then ``v`` when ``learn_sigma``).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"UNetModel takes a UNetConfig, got {type(config).__name__}")
        self.config = config
        self.image_size = config.image_size
        self.in_channels = config.in_channels
        self.out_channels = config.output_channels
        self.model_channels = config.model_channels
        self.num_classes = config.num_classes
        self.learn_sigma = config.learn_sigma

        mc = config.model_channels
        emb_dim = 4 * mc
        groups = config.norm_groups

        def res(ch_in: int, ch_out: int, **kw: bool) -> ResBlock:
            return ResBlock(
                ch_in,
                emb_dim,
                config.dropout,
                ch_out,
                use_scale_shift_norm=config.use_scale_shift_norm,
                norm_groups=groups,
                **kw,
            )

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(
                ch,
                heads,
                config.num_head_channels,
                new_order=config.use_new_attention_order,
                norm_groups=groups,
            )

        self.time_embed = nn.Sequential(
            nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if config.num_classes is not None:
            self.label_emb = nn.Embedding(config.num_classes, emb_dim)

        ch = first_ch = int(config.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList(
            [EmbedSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))]
        )
        skip_channels = [ch]
        ds = 1
        last_level = len(config.channel_mult) - 1
        for level, mult in enumerate(config.channel_mult):
            width = int(mult * mc)
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [res(ch, width)]
                ch = width
                if ds in config.attention_resolutions:
                    layers.append(attn(ch, config.num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level != last_level:
                down = (
                    res(ch, ch, down=True)
                    if config.resblock_updown
                    else Downsample(ch, config.conv_resample)
                )
                self.input_blocks.append(EmbedSequential(down))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = EmbedSequential(
            res(ch, ch), attn(ch, config.num_heads), res(ch, ch)
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            width = int(mult * mc)
            for i in range(config.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), width)]
                ch = width
                if ds in config.attention_resolutions:
                    layers.append(attn(ch, config.heads_upsample))
                if level > 0 and i == config.num_res_blocks:
                    layers.append(
                        res(ch, ch, up=True)
                        if config.resblock_updown
                        else Upsample(ch, config.conv_resample)
                    )
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(
            group_norm(ch, groups),
            nn.SiLU(),
            zero_init(nn.Conv2d(first_ch, config.output_channels, 3, padding=1)),
        )

    def forward(self, x: Tensor, timesteps: Tensor, y: Tensor | None = None) -> Tensor:
        cfg = self.config
        if x.dim() != 4:
            raise ValueError(f"U-Net input must have shape (B, C, H, W), got {tuple(x.shape)}")
        b, c, h, w = x.shape
        if c != cfg.in_channels:
            raise ValueError(
                f"U-Net input has {c} channels, expected in_channels={cfg.in_channels} "
                f"(shape {tuple(x.shape)})"
            )
        f = cfg.downsample_factor
        if h % f or w % f:
            raise ValueError(
                f"U-Net input size {h}x{w} is not divisible by {f} "
                f"(2^(levels-1) for channel_mult {cfg.channel_mult})"
            )
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(b)
        if timesteps.shape != (b,):
            raise ValueError(
                f"timesteps must have shape ({b},) to match the batch, got "
                f"{tuple(timesteps.shape)}"
            )
        if (y is not None) != (cfg.num_classes is not None):
            raise ValueError(
                "class labels y must be given if and only if the model is class-conditional "
                f"(num_classes={cfg.num_classes}, y {'given' if y is not None else 'missing'})"
            )

        emb = self.time_embed(timestep_embedding(timesteps, cfg.model_channels).to(x.dtype))
        if y is not None:
            if y.shape != (b,):
                raise ValueError(f"labels y must have shape ({b},), got {tuple(y.shape)}")
            emb = emb + self.label_emb(y.to(x.device))

        skips = []
        hid = x
        for block in self.input_blocks:
            hid = block(hid, emb)
            skips.append(hid)
        hid = self.middle_block(hid, emb)
        for block in self.output_blocks:
            hid = block(torch.cat([hid, skips.pop()], dim=1), emb)
        return self.out(hid)

    def num_parameters(self) -> int:
        """Total number of parameters."""
        return count_parameters(self)


# ---------------------------------------------------------------------------------- loading
def _unwrap_state_dict(obj: Any) -> dict[str, Tensor]:
    """Accept a bare state_dict or one nested under a usual key; strip DDP's ``module.``."""
    if isinstance(obj, Mapping) and obj and not all(isinstance(v, Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "ema", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner:
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError("checkpoint is not a state_dict (a mapping of names to tensors)")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def check_state_dict(
    model: nn.Module, state: Mapping[str, Tensor], *, limit: int = 20
) -> list[str]:
    """Describe every difference between ``state`` and ``model``'s layout (empty if none).

    Lists missing keys, unexpected keys and shape mismatches, ``limit`` of each at most.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    problems = []
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    mismatched = [
        f"{k}: checkpoint {got[k]} vs model {expected[k]}"
        for k in expected
        if k in got and got[k] != expected[k]
    ]
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ):
        if items:
            shown = ", ".join(items[:limit])
            more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
            problems.append(f"{len(items)} {title}: {shown}{more}")
    return problems


def load_guided_diffusion_checkpoint(
    path: str | Path,
    config: UNetConfig | str,
    *,
    device: torch.device | str = "cpu",
) -> UNetModel:
    """Load a released guided-diffusion ``state_dict`` into a :class:`UNetModel`, strictly.

    ``config`` is a :class:`UNetConfig` or a preset name (e.g. ``"ffhq256"``). The network is
    built on the meta device and the checkpoint's tensors (cast to float32) are assigned, so
    the weights are held in memory once. Any missing or unexpected key or shape mismatch
    raises a ``ValueError`` that lists them.
    """
    if isinstance(config, str):
        config = UNetConfig.preset(config)
    path = Path(path)
    raw = torch_load_checked(path, "checkpoint")
    state = _unwrap_state_dict(raw)
    model = config.build(device="meta")
    problems = check_state_dict(model, state)
    if problems:
        raise ValueError(
            f"{path} does not match the U-Net layout of config {config.name!r}:\n  "
            + "\n  ".join(problems)
        )
    state = {
        k: (v.float() if v.is_floating_point() else v).to(device) for k, v in state.items()
    }
    model.load_state_dict(state, strict=True, assign=True)
    log.info("loaded %s (%d parameters) from %s", config.name, model.num_parameters(), path)
    return model


def _param_count_summary() -> dict[str, int]:  # pragma: no cover - documentation helper
    """Parameter count of every preset (built on the meta device)."""
    return {name: count_parameters(cfg.build(device="meta")) for name, cfg in PRESETS.items()}

