"""The guided-diffusion U-Net: shapes, configs, presets and the released checkpoint layout."""

from __future__ import annotations

import math

import pytest
import torch

from landprior.diffusion.denoiser import EpsDenoiser
from landprior.diffusion.nn import count_parameters, redraw_zero_init, timestep_embedding
from landprior.diffusion.unet import (
    PRESETS,
    AttentionBlock,
    UNetConfig,
    UNetModel,
    attention_ds_from_pixels,
    check_state_dict,
    load_guided_diffusion_checkpoint,
)

# A small config that still exercises every block type.
SMALL = UNetConfig(
    image_size=16,
    in_channels=3,
    model_channels=8,
    num_res_blocks=1,
    attention_resolutions=(2, 4),
    channel_mult=(1, 2, 2),
    num_heads=2,
    norm_groups=4,
)


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Zero-initialised output convs make every model output 0; give all weights noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"learn_sigma": True},
        {"num_classes": 7},
        {"resblock_updown": True},
        {"use_scale_shift_norm": False, "conv_resample": False},
        {"use_new_attention_order": True, "num_head_channels": 4},
        {"out_channels": 2, "learn_sigma": True, "dropout": 0.1},
    ],
    ids=lambda c: ",".join(c) or "default",
)
def test_output_shapes(changes: dict) -> None:
    cfg = SMALL.replace(**changes)
    model = cfg.build()
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([0, 999])
    y = torch.tensor([1, 6]) if cfg.num_classes else None
    out = model(x, t, y)
    assert out.shape == (2, cfg.output_channels, 16, 16)
    assert model.learn_sigma is cfg.learn_sigma
    # fully convolutional: other sizes divisible by 4 work too
    assert model(torch.randn(1, 3, 8, 12), torch.tensor([5]), y[:1] if y is not None else None
                 ).shape[-2:] == (8, 12)


def test_learned_sigma_through_eps_denoiser() -> None:
    model = _randomise(SMALL.replace(learn_sigma=True).build())
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([1, 1000])
    eps = EpsDenoiser(model)(x, t)
    assert eps.shape == x.shape
    torch.testing.assert_close(eps, model(x, t - 1)[:, :3])


def test_class_conditioning_changes_output() -> None:
    model = _randomise(SMALL.replace(num_classes=3).build())
    x = torch.randn(1, 3, 16, 16)
    t = torch.tensor([10])
    a = model(x, t, torch.tensor([0]))
    b = model(x, t, torch.tensor([2]))
    assert not torch.allclose(a, b)
    assert "label_emb.weight" in model.state_dict()


def test_state_dict_round_trip(tmp_path) -> None:
    model = _randomise(SMALL.replace(learn_sigma=True, resblock_updown=True).build()).eval()
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    fresh = SMALL.replace(learn_sigma=True, resblock_updown=True).build().eval()
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 400])
    torch.testing.assert_close(fresh(x, t), model(x, t), rtol=0, atol=0)
    # and through the guided-diffusion loader (strict, meta-device build, assign)
    loaded = load_guided_diffusion_checkpoint(path, SMALL.replace(learn_sigma=True,
                                                                  resblock_updown=True)).eval()
    torch.testing.assert_close(loaded(x, t), model(x, t), rtol=0, atol=0)


def test_loader_lists_missing_unexpected_and_shape_mismatches(tmp_path) -> None:
    state = SMALL.build().state_dict()
    state.pop("out.2.weight")
    state["bogus.weight"] = torch.zeros(1)
    state["time_embed.0.weight"] = torch.zeros(3, 3)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_guided_diffusion_checkpoint(path, SMALL)
    msg = str(err.value)
    assert "missing keys: out.2.weight" in msg
    assert "unexpected keys: bogus.weight" in msg
    assert "time_embed.0.weight: checkpoint (3, 3) vs model (32, 8)" in msg
    with pytest.raises(FileNotFoundError):
        load_guided_diffusion_checkpoint(tmp_path / "nope.pt", SMALL)


def test_attention_matches_reference_legacy_and_new_order() -> None:
    """Per-head softmax(q k^T / sqrt(d)) v with guided-diffusion's channel grouping of qkv."""
    for new_order in (False, True):
        block = AttentionBlock(8, num_heads=2, new_order=new_order, norm_groups=4)
        _randomise(block, seed=1)
        x = torch.randn(3, 8, 4, 4)
        out = block(x)
        flat = x.reshape(3, 8, 16)
        qkv = block.qkv(block.norm(flat))
        heads, d = 2, 4
        if new_order:
            q, k, v = (c.reshape(3 * heads, d, 16) for c in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(3 * heads, 3 * d, 16).split(d, dim=1)
        w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d), dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(3, 8, 16)
        ref = (flat + block.proj_out(a)).reshape(3, 8, 4, 4)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_input_gradient_matches_finite_differences() -> None:
    """Guided inference differentiates w.r.t. x: the gradient must be exact (float64)."""
    model = _randomise(SMALL.build()).double().eval().requires_grad_(False)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=g).requires_grad_(True)
    t = torch.tensor([50])
    weights = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=g)

    def f(inp: torch.Tensor) -> torch.Tensor:
        return (model(inp, t) * weights).sum()

    (grad,) = torch.autograd.grad(f(x), x)
    h = 1e-6
    with torch.no_grad():
        for _ in range(3):
            d = torch.randn(x.shape, dtype=torch.float64, generator=g)
            numeric = (f(x + h * d) - f(x - h * d)) / (2 * h)
            torch.testing.assert_close((grad * d).sum(), numeric, rtol=1e-6, atol=1e-8)


def test_redraw_zero_init_gives_an_input_dependent_output_and_keeps_other_layers() -> None:
    torch.manual_seed(0)
    model = SMALL.build()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    assert not model(x, t).any()  # zero-initialised output conv
    before = {k: v.clone() for k, v in model.state_dict().items()}
    redraw_zero_init(model)
    out = model(x, t)
    assert out.abs().min() > 0 and not torch.allclose(out[0], out[1])
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(not before[k].any() for k in changed)  # only zero layers moved


def test_timestep_embedding_cos_then_sin() -> None:
    emb = timestep_embedding(torch.tensor([0.0, 3.0]), 6)
    assert emb.shape == (2, 6)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    freqs = torch.exp(-math.log(10000) * torch.arange(3) / 3)
    torch.testing.assert_close(emb[1, :3], torch.cos(3 * freqs))
    assert timestep_embedding(torch.tensor([1.0]), 5).shape == (1, 5)


# ------------------------------------------------------------------------------ configs
def test_config_dict_round_trip() -> None:
    for cfg in PRESETS.values():
        assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown UNetConfig keys"):
        UNetConfig.from_dict({"num_chanels": 3})


def test_guided_diffusion_flags_ffhq() -> None:
    flags = {
        "attention_resolutions": "32,16,8",
        "class_cond": "False",
        "diffusion_steps": 1000,
        "image_size": 256,
        "learn_sigma": "True",
        "noise_schedule": "linear",
        "num_channels": 256,
        "num_head_channels": 64,
        "num_res_blocks": 2,
        "resblock_updown": "True",
        "use_fp16": "True",
        "use_scale_shift_norm": "True",
    }
    cfg = UNetConfig.from_guided_diffusion_flags(flags)
    assert cfg == UNetConfig.preset("ffhq256")
    assert cfg.attention_pixels == (32, 16, 8)
    # defaults of model_and_diffusion_defaults at 64 px
    d = UNetConfig.from_guided_diffusion_flags({})
    assert (d.model_channels, d.channel_mult, d.attention_resolutions) == (128, (1, 2, 3, 4),
                                                                          (4, 8))
    cond = UNetConfig.from_guided_diffusion_flags(
        {"class_cond": True, "channel_mult": "1,2", "attention_resolutions": "32"}
    )
    assert cond.num_classes == 1000 and cond.channel_mult == (1, 2)
    assert cond.attention_resolutions == (2,)
    with pytest.raises(ValueError, match="unknown guided-diffusion flags"):
        UNetConfig.from_guided_diffusion_flags({"num_chanels": 3})
    with pytest.raises(ValueError, match="no default channel_mult"):
        UNetConfig.from_guided_diffusion_flags({"image_size": 32, "attention_resolutions": "8"})


def test_attention_pixels_helper() -> None:
    assert attention_ds_from_pixels(256, "32,16,8") == (8, 16, 32)
    assert attention_ds_from_pixels(64, [16, 8]) == (4, 8)
    cfg = UNetConfig.preset("tsp64").with_attention_pixels("16,8")
    assert cfg.attention_resolutions == (4, 8)
    with pytest.raises(ValueError, match="does not divide"):
        attention_ds_from_pixels(64, "24")


def test_bad_inputs_give_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown U-Net preset 'nope'.*'tiny'"):
        UNetConfig.preset("nope")
    with pytest.raises(ValueError, match="image_size 18 is not divisible by 4"):
        SMALL.replace(image_size=18)
    with pytest.raises(ValueError, match="downsample rates; 16 is not one"):
        SMALL.replace(attention_resolutions=(16,))
    with pytest.raises(ValueError, match="not divisible by norm_groups 32"):
        SMALL.replace(norm_groups=32)
    with pytest.raises(ValueError, match="cannot be split into heads"):
        SMALL.replace(num_heads=3)
    model = SMALL.build()
    with pytest.raises(ValueError, match="has 1 channels, expected in_channels=3"):
        model(torch.randn(1, 1, 16, 16), torch.tensor([0]))
    with pytest.raises(ValueError, match="18x16 is not divisible by 4"):
        model(torch.randn(1, 3, 18, 16), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"timesteps must have shape \(2,\)"):
        model(torch.randn(2, 3, 16, 16), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="if and only if the model is class-conditional"):
        model(torch.randn(1, 3, 16, 16), torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(TypeError, match="UNetConfig"):
        UNetModel({"image_size": 16})  # type: ignore[arg-type]


def test_cli_preset_names_match() -> None:
    from landprior.commands.diffusion import _PRESET_NAMES

    assert set(_PRESET_NAMES) == set(PRESETS)


# ------------------------------------------------------------------------------ presets
# Parameter counts of the authors' networks (Graikos et al. 2022: MNIST 22M, TSP 21M, land
# cover 85M; FFHQ-256 of ddpm-segmentation / guided-diffusion 256x256: 552.8M).
PAPER_COUNTS = {
    "ffhq256": 552_814_086,
    "mnist32": 22_078_017,
    "tsp64": 21_334_977,
    "landcover64": 85_261_189,
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts(name: str) -> None:
    n = count_parameters(UNetConfig.preset(name).build(device="meta"))
    if name in PAPER_COUNTS:
        assert n == PAPER_COUNTS[name]
    elif name == "tiny":
        assert n < 20_000
    else:
        assert 1_000_000 <= n <= 3_000_000


@pytest.mark.parametrize("name", ["tiny", "landcover-cpu", "tsp-cpu"])
def test_cpu_presets_run(name: str) -> None:
    cfg = UNetConfig.preset(name)
    model = cfg.build().eval()
    x = torch.randn(1, cfg.in_channels, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        assert model(x, torch.tensor([10])).shape == x.shape


# ------------------------------------------------------------------------------ layout
# Keys and shapes of the released FFHQ-256 checkpoint (ddpm-segmentation "ffhq.pt",
# guided-diffusion flags --num_channels 256 --channel_mult "" (1,1,2,2,4,4) --num_res_blocks 2
# --attention_resolutions 32,16,8 --num_head_channels 64 --resblock_updown True
# --use_scale_shift_norm True --learn_sigma True). Written out by hand from the construction
# order of guided-diffusion's UNetModel: input block 0 is the stem conv; per level two
# residual blocks (attention from 32 px down), then a down-sampling residual block; the
# decoder has three blocks per level, the last of each (but the top) an up-sampling block.
FFHQ_KEYS = {
    "time_embed.0.weight": (1024, 256),
    "time_embed.0.bias": (1024,),
    "time_embed.2.weight": (1024, 1024),
    "input_blocks.0.0.weight": (256, 3, 3, 3),
    "input_blocks.0.0.bias": (256,),
    "input_blocks.1.0.in_layers.0.weight": (256,),
    "input_blocks.1.0.in_layers.2.weight": (256, 256, 3, 3),
    "input_blocks.1.0.emb_layers.1.weight": (512, 1024),
    "input_blocks.1.0.out_layers.0.bias": (256,),
    "input_blocks.1.0.out_layers.3.weight": (256, 256, 3, 3),
    "input_blocks.3.0.in_layers.2.weight": (256, 256, 3, 3),  # down-sampling ResBlock
    "input_blocks.7.0.in_layers.2.weight": (512, 256, 3, 3),
    "input_blocks.7.0.skip_connection.weight": (512, 256, 1, 1),
    "input_blocks.7.0.skip_connection.bias": (512,),
    "input_blocks.10.0.emb_layers.1.weight": (1024, 1024),
    "input_blocks.10.1.norm.weight": (512,),
    "input_blocks.10.1.qkv.weight": (1536, 512, 1),
    "input_blocks.10.1.qkv.bias": (1536,),
    "input_blocks.10.1.proj_out.weight": (512, 512, 1),
    "input_blocks.13.0.skip_connection.weight": (1024, 512, 1, 1),
    "input_blocks.13.1.qkv.weight": (3072, 1024, 1),
    "input_blocks.15.0.in_layers.2.weight": (1024, 1024, 3, 3),
    "input_blocks.17.1.proj_out.bias": (1024,),
    "middle_block.0.in_layers.2.weight": (1024, 1024, 3, 3),
    "middle_block.1.qkv.weight": (3072, 1024, 1),
    "middle_block.2.out_layers.3.weight": (1024, 1024, 3, 3),
    "output_blocks.0.0.in_layers.0.weight": (2048,),
    "output_blocks.0.0.in_layers.2.weight": (1024, 2048, 3, 3),
    "output_blocks.0.0.skip_connection.weight": (1024, 2048, 1, 1),
    "output_blocks.0.1.qkv.weight": (3072, 1024, 1),
    "output_blocks.2.2.in_layers.2.weight": (1024, 1024, 3, 3),  # up-sampling ResBlock
    "output_blocks.3.0.in_layers.2.weight": (1024, 2048, 3, 3),
    "output_blocks.5.0.in_layers.0.weight": (1536,),
    "output_blocks.6.0.skip_connection.weight": (512, 1536, 1, 1),
    "output_blocks.8.0.skip_connection.weight": (512, 1024, 1, 1),
    "output_blocks.8.1.qkv.weight": (1536, 512, 1),
    "output_blocks.8.2.emb_layers.1.weight": (1024, 1024),
    "output_blocks.11.0.in_layers.2.weight": (512, 768, 3, 3),
    "output_blocks.11.1.out_layers.3.weight": (512, 512, 3, 3),  # no attention at 64 px
    "output_blocks.12.0.in_layers.2.weight": (256, 768, 3, 3),
    "output_blocks.14.0.in_layers.2.weight": (256, 512, 3, 3),
    "output_blocks.17.0.skip_connection.weight": (256, 512, 1, 1),
    "out.0.weight": (256,),
    "out.0.bias": (256,),
    "out.2.weight": (6, 256, 3, 3),
    "out.2.bias": (6,),
}
# Keys the layout must NOT have: attention above 32 px, a second up-sampler at the top,
# plain Downsample/Upsample convs (resblock_updown replaces them), a class embedding.
FFHQ_ABSENT = [
    "input_blocks.4.1.qkv.weight",
    "input_blocks.3.0.op.weight",
    "output_blocks.17.1.qkv.weight",
    "output_blocks.17.1.in_layers.0.weight",
    "output_blocks.2.2.conv.weight",
    "output_blocks.11.2.in_layers.0.weight",
    "label_emb.weight",
    "input_blocks.1.0.skip_connection.weight",
]


def test_ffhq256_checkpoint_layout() -> None:
    model = UNetConfig.preset("ffhq256").build(device="meta")
    state = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for key, shape in FFHQ_KEYS.items():
        assert key in shapes, key
        assert shapes[key] == shape, (key, shapes[key], shape)
    for key in FFHQ_ABSENT:
        assert key not in shapes, key
    assert len(model.input_blocks) == 18 and len(model.output_blocks) == 18
    assert sum(math.prod(s) for s in shapes.values()) == 552_814_086
    # every attention block uses 64-channel heads; GroupNorm everywhere has 32 groups
    heads = {m.channels: m.num_heads for m in model.modules() if isinstance(m, AttentionBlock)}
    assert heads == {512: 8, 1024: 16}
    assert all(m.num_groups == 32 for m in model.modules() if isinstance(m, torch.nn.GroupNorm))
    assert check_state_dict(model, state) == []


def test_plain_resampling_layout_keys() -> None:
    """Without resblock_updown: ``op`` (strided conv) and ``conv`` (after nearest upsampling)."""
    keys = UNetConfig.preset("mnist32").build(device="meta").state_dict().keys()
    assert "input_blocks.3.0.op.weight" in keys
    assert "output_blocks.2.2.conv.weight" in keys  # after the attention at rate 8
    assert "output_blocks.8.1.conv.weight" in keys  # rate 2: no attention
    assert "input_blocks.7.1.qkv.weight" in keys  # rate 4 (8 px) has attention
    assert "input_blocks.4.1.qkv.weight" not in keys  # rate 2 has none
