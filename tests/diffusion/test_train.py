"""DDPM training: loss goes down, runs are bitwise reproducible, resume == uninterrupted."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from landprior.cli import main
from landprior.diffusion.denoiser import EpsDenoiser
from landprior.diffusion.train import (
    CHECKPOINT_NAME,
    LOSS_LOG_NAME,
    TrainConfig,
    export_inference_checkpoint,
    load_checkpoint,
    load_denoiser,
    train,
)
from landprior.diffusion.unet import UNetConfig


def _toy_images(n: int = 24, size: int = 16, channels: int = 1) -> torch.Tensor:
    """Seeded images in [-1, 1]: vertical bars at random positions (strong structure)."""
    g = torch.Generator().manual_seed(123)
    x = -torch.ones(n, channels, size, size)
    starts = torch.randint(0, size - 4, (n,), generator=g)
    for i, s in enumerate(starts.tolist()):
        x[i, :, :, s : s + 4] = 1.0
    return x


def _config(**changes) -> TrainConfig:
    base = {"steps": 6, "batch_size": 4, "lr": 1e-3, "ema_rate": 0.9, "checkpoint_every": 3,
            "hflip": True, "vflip": True, "seed": 7, "device": "cpu"}
    base.update(changes)
    return TrainConfig(**base)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_lowers_the_loss(tmp_path) -> None:
    data = _toy_images()
    cfg = _config(steps=40, batch_size=8, lr=5e-3, checkpoint_every=1000, grad_clip=1.0)
    result = train(data, "tiny", cfg, tmp_path, progress=False)
    assert result.step == 40 and len(result.losses) == 40
    first, last = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert last < 0.6 * first, (first, last)
    lines = (tmp_path / LOSS_LOG_NAME).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 41))
    assert "grad_norm" in json.loads(lines[0])
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["step"] == 40
    assert ckpt["schedule"] == {"name": "linear", "num_timesteps": 1000}
    assert UNetConfig.from_dict(ckpt["unet_config"]) == UNetConfig.preset("tiny")


def test_same_seed_same_run_bitwise(tmp_path) -> None:
    data = _toy_images()
    a = train(data, "tiny", _config(), tmp_path / "a", progress=False)
    b = train(data, "tiny", _config(), tmp_path / "b", progress=False)
    assert a.losses == b.losses
    assert _states_equal(a.model.state_dict(), b.model.state_dict())
    c = train(data, "tiny", _config(seed=8), tmp_path / "c", progress=False)
    assert c.losses != a.losses
    # the caller's global RNG is left alone
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    train(data, "tiny", _config(steps=2), tmp_path / "d", progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path) -> None:
    data = _toy_images()
    cfg = _config(steps=8, checkpoint_every=4)
    unet = UNetConfig.preset("tiny").replace(dropout=0.1)  # dropout draws from the global RNG
    full = train(data, unet, cfg, tmp_path / "full", progress=False)

    def crash(step: int, loss: float) -> None:
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, unet, cfg, tmp_path / "cut", progress=False, callback=crash)
    assert load_checkpoint(tmp_path / "cut")["step"] == 4
    assert not list((tmp_path / "cut").glob("*.tmp"))  # atomic writes leave no debris
    with pytest.raises(FileExistsError, match="resume=True"):
        train(data, unet, cfg, tmp_path / "cut", progress=False)
    resumed = train(data, unet, cfg, tmp_path / "cut", progress=False, resume=True)
    assert resumed.step == 8 and len(resumed.losses) == 4
    assert resumed.losses == full.losses[4:]
    assert _states_equal(resumed.model.state_dict(), full.model.state_dict())
    assert _states_equal(resumed.ema.state_dict(), full.ema.state_dict())
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
    cut_log = [json.loads(x) for x in (tmp_path / "cut" / LOSS_LOG_NAME).read_text().splitlines()]
    full_log = [json.loads(x) for x in (tmp_path / "full" / LOSS_LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in cut_log] == list(range(1, 9))
    assert [r["loss"] for r in cut_log] == [r["loss"] for r in full_log]
    # extending a finished run continues from its checkpoint
    more = train(data, unet, _config(steps=10, checkpoint_every=4), tmp_path / "full",
                 progress=False, resume=True)
    assert more.step == 10 and len(more.losses) == 2
    with pytest.raises(ValueError, match="cannot resume"):
        train(data, "tiny", _config(steps=12), tmp_path / "full", progress=False, resume=True)


def test_load_denoiser_gives_a_frozen_eps_predictor(tmp_path, caplog) -> None:
    data = _toy_images()
    result = train(data, "tiny", _config(), tmp_path / "ema", progress=False)
    den, schedule, meta = load_denoiser(tmp_path / "ema" / CHECKPOINT_NAME)
    assert isinstance(den, EpsDenoiser) and not den.training
    assert all(not p.requires_grad for p in den.parameters())
    assert meta["step"] == 6 and meta["weights"] == "ema"
    assert schedule.num_timesteps == 1000 and schedule.name == "linear"
    x = torch.randn(2, 1, 16, 16)
    t = torch.tensor([1, 1000])
    with torch.no_grad():
        torch.testing.assert_close(den(x, t), result.ema.eval()(x, t - 1))
    raw, _, meta_raw = load_denoiser(tmp_path / "ema" / CHECKPOINT_NAME, use_ema=False)
    assert meta_raw["weights"] == "model"
    with torch.no_grad():
        torch.testing.assert_close(raw(x, t), result.model.eval()(x, t - 1))
    # guided inference: gradients w.r.t. the input only
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(den(xg, t).square().sum(), xg)
    assert grad.shape == x.shape

    train(data, "tiny", _config(ema_rate=0.0), tmp_path / "noema", progress=False)
    with caplog.at_level(logging.WARNING):
        _, _, meta0 = load_denoiser(tmp_path / "noema")
    assert meta0["weights"] == "model" and "no EMA" in caplog.text


def test_class_conditional_training(tmp_path) -> None:
    data = _toy_images(n=12)
    labels = torch.arange(12) % 3
    unet = UNetConfig.preset("tiny").replace(num_classes=3)
    result = train(data, unet, _config(steps=3), tmp_path, labels=labels, progress=False)
    assert len(result.losses) == 3
    den, _, _ = load_denoiser(tmp_path, labels=torch.tensor([0, 2]))
    assert den(torch.randn(2, 1, 16, 16), torch.tensor([5, 5])).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="pass labels"):
        load_denoiser(tmp_path)
    with pytest.raises(ValueError, match="give labels"):
        train(data, unet, _config(steps=1), tmp_path / "nolabels", progress=False)


def test_dataset_and_uint8_sources(tmp_path) -> None:
    images = ((_toy_images(n=8) + 1) * 127.5).to(torch.uint8).numpy()
    dataset = [torch.as_tensor(img) for img in images]
    a = train(images, "tiny", _config(steps=2), tmp_path / "a", progress=False)
    b = train(dataset, "tiny", _config(steps=2), tmp_path / "b", progress=False)
    assert a.losses == b.losses


def test_bad_training_input(tmp_path) -> None:
    with pytest.raises(ValueError, match="3 channels, the U-Net expects in_channels=1"):
        train(torch.zeros(4, 3, 16, 16), "tiny", _config(), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\].*image 1 holds .*\[5, 5\]"):
        train(torch.full((4, 1, 16, 16), 5.0).index_fill_(0, torch.tensor([0]), 0.0), "tiny",
              _config(), tmp_path / "b", progress=False)
    # every image is checked before the first step (not when a batch happens to draw it),
    # chunk by chunk, and a refused run leaves no run folder behind
    images = np.zeros((2500, 1, 16, 16), np.float32)
    images[2100, 0, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or inf \\(image 2100 is the first\\)"):
        train(images, "tiny", _config(steps=1000), tmp_path / "nan", progress=False)
    with pytest.raises(ValueError, match="real numbers"):
        train(np.zeros((2, 1, 16, 16), np.complex64), "tiny", _config(), tmp_path / "cx",
              progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not (tmp_path / "nan").exists() and not (tmp_path / "cx").exists()
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        train(torch.zeros(4, 16, 16), "tiny", _config(), tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="not divisible by 2"):
        train(torch.zeros(4, 1, 15, 15), "tiny", _config(), tmp_path / "d", progress=False)
    with pytest.raises(ValueError, match="unknown U-Net preset"):
        train(torch.zeros(4, 1, 16, 16), "huge", _config(), tmp_path / "e", progress=False)
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'"):
        _config(schedule="quadratic")
    with pytest.raises(ValueError, match="ema_rate"):
        _config(ema_rate=1.0)
    with pytest.raises(ValueError, match="not a landprior training checkpoint"):
        torch.save({"a": torch.zeros(1)}, tmp_path / "x.pt")
        load_checkpoint(tmp_path / "x.pt")


def test_cli_train_and_sample(tmp_path) -> None:
    data = tmp_path / "data.npy"
    np.save(data, _toy_images(n=8)[:, 0].numpy())  # (N, H, W) gets a channel axis
    out = tmp_path / "run"
    runner = CliRunner()
    args = ["diffusion", "train", "--data", str(data), "--preset", "tiny", "--steps", "2",
            "--batch-size", "2", "--out", str(out), "--no-progress", "--ema-rate", "0.5"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (out / CHECKPOINT_NAME).exists()
    again = runner.invoke(main, args)
    assert again.exit_code != 0 and "--resume" in again.output
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 3, 16, 16), dtype=np.float32))
    wrong = runner.invoke(main, ["diffusion", "train", "--data", str(bad), "--preset", "tiny",
                                 "--steps", "1", "--out", str(tmp_path / "w")])
    assert wrong.exit_code != 0 and "expects 1" in wrong.output

    grid = tmp_path / "grid.png"
    result = runner.invoke(main, ["diffusion", "sample", "--checkpoint", str(out), "--n", "3",
                                  "--out", str(grid), "--steps", "3", "--npy",
                                  str(tmp_path / "s.npy")])
    assert result.exit_code == 0, result.output
    assert grid.exists() and np.load(tmp_path / "s.npy").shape == (3, 1, 16, 16)
    assert "it/s" in result.output or "%|" in result.output  # the progress bar (on stderr)
    quiet = runner.invoke(main, ["diffusion", "sample", "--checkpoint", str(out), "--n", "1",
                                 "--out", str(grid), "--steps", "3", "--no-progress"])
    assert quiet.exit_code == 0 and "%|" not in quiet.output, quiet.output
    bad_device = runner.invoke(main, ["diffusion", "sample", "--checkpoint", str(out), "--n",
                                      "1", "--out", str(tmp_path / "g.png"), "--device", "gpu0"])
    assert bad_device.exit_code != 0 and "unknown device 'gpu0'" in bad_device.output
    assert not (tmp_path / "g.png").exists()
    broken = tmp_path / "broken.pt"
    broken.write_bytes((out / CHECKPOINT_NAME).read_bytes()[:1000])  # a copy cut short
    cut = runner.invoke(main, ["diffusion", "sample", "--checkpoint", str(broken), "--n", "1",
                               "--out", str(tmp_path / "c.png")])
    assert cut.exit_code == 1 and "cannot read checkpoint" in cut.output, cut.output
    assert "broken.pt" in cut.output and "Traceback" not in cut.output
    assert not (tmp_path / "c.png").exists()

    slim = tmp_path / "slim.pt"
    result = runner.invoke(main, ["diffusion", "export", "--checkpoint", str(out),
                                  "--out", str(slim)])
    assert result.exit_code == 0, result.output
    full, small = load_checkpoint(out), load_checkpoint(slim)
    assert small["ema"] is None and small["exported_from"]["weights"] == "ema"
    assert _states_equal(small["model"], full["ema"])
    assert slim.stat().st_size < (out / CHECKPOINT_NAME).stat().st_size
    _, _, meta = load_denoiser(slim)  # the exported EMA weights, without a warning
    assert meta["weights"] == "ema" and meta["step"] == full["step"]
    missing = runner.invoke(main, ["diffusion", "export", "--checkpoint", str(tmp_path / "w2"),
                                   "--out", str(tmp_path / "x.pt")])
    assert missing.exit_code != 0

    # --init-from: a fine-tuning run starts from the exported weights
    tuned = tmp_path / "tuned"
    result = runner.invoke(main, ["diffusion", "train", "--data", str(data), "--preset", "tiny",
                                  "--steps", "1", "--batch-size", "2", "--out", str(tuned),
                                  "--no-progress", "--init-from", str(slim)])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tuned)["init_from"] == str(slim)
    other = runner.invoke(main, ["diffusion", "train", "--data", str(data), "--preset", "mnist32",
                                 "--steps", "1", "--out", str(tmp_path / "o"), "--no-progress",
                                 "--init-from", str(slim)])
    assert other.exit_code != 0 and "cannot initialise from" in other.output


def test_ema_warm_up_tracks_a_short_run(tmp_path) -> None:
    """After a short run the EMA is close to the trained weights, not to the random init."""
    from landprior.diffusion.train import ema_decay

    assert ema_decay(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.999, 10**6) == 0.999
    data = _toy_images()
    # The same seed builds the same initial network; one step at lr 1e-12 leaves it as is.
    init = load_checkpoint(
        train(data, "tiny", _config(steps=1, lr=1e-12, checkpoint_every=1000),
              tmp_path / "init", progress=False).checkpoint
    )["model"]
    cfg = _config(steps=60, batch_size=8, lr=5e-3, ema_rate=0.999, checkpoint_every=1000)
    ckpt = load_checkpoint(train(data, "tiny", cfg, tmp_path / "run", progress=False).checkpoint)
    model, ema = ckpt["model"], ckpt["ema"]

    def dist(a: dict, b: dict) -> float:
        return sum(float((a[k].float() - b[k].float()).square().sum()) for k in a) ** 0.5

    # Without warm-up 0.999**60 = 94 % of the EMA would still be the initial weights.
    assert dist(ema, model) < 0.5 * dist(init, model)


def test_init_from_warm_starts_from_another_runs_weights(tmp_path) -> None:
    data = _toy_images()
    base = train(data, "tiny", _config(steps=20, lr=5e-3), tmp_path / "base", progress=False)
    export_inference_checkpoint(tmp_path / "base", tmp_path / "slim.pt")
    for source in (tmp_path / "base", tmp_path / "slim.pt"):
        out = tmp_path / f"ft-{source.name}"
        ft = train(data, "tiny", _config(steps=1, lr=1e-12, ema_rate=0.0), out,
                   progress=False, init_from=source)  # fmt: skip
        # one step at a vanishing lr: the weights are the base run's EMA weights
        for key, value in base.ema.state_dict().items():
            torch.testing.assert_close(ft.model.state_dict()[key], value, rtol=1e-6, atol=1e-9)
        assert load_checkpoint(out)["init_from"] == str(source)
    scratch = train(data, "tiny", _config(steps=4), tmp_path / "scratch", progress=False)
    warm = train(data, "tiny", _config(steps=4), tmp_path / "warm", progress=False,
                 init_from=tmp_path / "base")  # fmt: skip
    assert np.mean(warm.losses) < np.mean(scratch.losses)
    # resuming keeps the record; the run's own checkpoint wins over init_from
    more = train(data, "tiny", _config(steps=6), tmp_path / "warm", progress=False, resume=True)
    assert more.step == 6 and load_checkpoint(tmp_path / "warm")["init_from"] == str(
        tmp_path / "base"
    )
    export_inference_checkpoint(tmp_path / "warm", tmp_path / "warm.pt")  # keeps the record
    assert load_checkpoint(tmp_path / "warm.pt")["init_from"] == str(tmp_path / "base")
    other = UNetConfig.preset("tiny").replace(model_channels=16)
    with pytest.raises(ValueError, match="cannot initialise from"):
        train(data, other, _config(steps=1), tmp_path / "bad", progress=False,
              init_from=tmp_path / "base")  # fmt: skip


def test_resume_without_a_checkpoint_warns_and_a_unet_mismatch_names_the_keys(
    tmp_path, caplog
) -> None:
    with caplog.at_level("WARNING", logger="landprior.diffusion.train"):
        train(_toy_images(n=4), "tiny", _config(steps=1), tmp_path / "typo", resume=True,
              progress=False)  # fmt: skip
    assert "holds no checkpoint: starting a new run" in caplog.text
    assert (tmp_path / "typo" / CHECKPOINT_NAME).exists()
    other = UNetConfig.preset("tiny").replace(model_channels=16)
    with pytest.raises(ValueError, match=r"model_channels \d+ vs 16") as err:
        train(_toy_images(n=4), other, _config(steps=2), tmp_path / "typo", resume=True,
              progress=False)  # fmt: skip
    assert "in_channels" not in str(err.value)  # only what differs


def test_cli_train_refuses_unreadable_or_non_numeric_data_in_one_line(tmp_path) -> None:
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    np.save(tmp_path / "flags.npy", np.zeros((4, 1, 16, 16), bool))
    nan = np.zeros((40, 1, 16, 16), np.float32)
    nan[33, 0, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    expected = {"empty": "not a readable numeric .npy array (EOFError",
                "objects": "not a readable numeric .npy array", "flags": "holds bool data",
                "nan": "nan.npy: training data contain NaN or inf (image 33 is the first)"}
    for name, message in expected.items():
        out = tmp_path / f"run-{name}"
        result = CliRunner().invoke(main, ["diffusion", "train", "--data",
                                           str(tmp_path / f"{name}.npy"), "--preset", "tiny",
                                           "--steps", "50", "--out", str(out), "--no-progress"])
        assert result.exit_code in (1, 2) and message in result.output, (name, result.output)
        assert "Traceback" not in result.output and not out.exists(), name


def test_an_export_keeps_its_weights_label_and_warns_when_raw_weights_are_asked_for(
    tmp_path, caplog
) -> None:
    from landprior.diffusion.train import load_model

    train(_toy_images(n=4), "tiny", _config(steps=2), tmp_path / "run", progress=False)
    export_inference_checkpoint(tmp_path / "run", tmp_path / "slim.pt")
    export_inference_checkpoint(tmp_path / "slim.pt", tmp_path / "again.pt")  # re-exported
    for path in (tmp_path / "slim.pt", tmp_path / "again.pt"):
        assert load_model(path)[2]["weights"] == "ema"
    with caplog.at_level("WARNING", logger="landprior.diffusion.train"):
        _, _, meta = load_model(tmp_path / "slim.pt", use_ema=False)
    assert meta["weights"] == "ema" and "holding only its EMA weights" in caplog.text


def test_cli_train_refuses_key_with_a_npy_file(tmp_path) -> None:
    data = tmp_path / "data.npy"
    np.save(data, _toy_images(n=4).numpy())
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["diffusion", "train", "--data", str(data), "--key", "x",
                                       "--preset", "tiny", "--steps", "1", "--out", str(out),
                                       "--no-progress"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--key" in result.output and "applies to .npz files only" in result.output
    assert "holds one array" in result.output and not out.exists()


def test_cli_train_names_the_option_of_a_bad_setting(tmp_path) -> None:
    data = tmp_path / "data.npy"
    np.save(data, _toy_images(n=4).numpy())
    runner = CliRunner()
    cases = {("--ema-rate", "1.0"): "1.0 is not in the range 0.0<=x<1.0",
             ("--lr", "0"): "0.0 is not in the range x>0.0", ("--grad-clip", "-1"): "x>0.0",
             ("--lr", "nan"): "must be a positive number, got nan",
             ("--grad-clip", "inf"): "must be None or > 0, got inf"}
    for (option, value), message in cases.items():
        out = tmp_path / f"run{option}{value}"
        result = runner.invoke(main, ["diffusion", "train", "--data", str(data), "--preset",
                                      "tiny", "--steps", "1", "--out", str(out), "--no-progress",
                                      option, value])  # fmt: skip
        assert result.exit_code == 2, (option, value, result.output)
        assert f"Invalid value for '{option}'" in result.output, (option, value, result.output)
        assert message in result.output and "TrainConfig" not in result.output, result.output
        assert not out.exists()
    help_text = runner.invoke(main, ["diffusion", "train", "--help"]).output
    assert "0.0<=x<1.0" in help_text and "x>0.0" in help_text


def test_image_size_other_than_the_unets_warns_and_an_unusable_one_is_refused_up_front(
    tmp_path, caplog
) -> None:
    with caplog.at_level("WARNING", logger="landprior.diffusion.train"):
        train(_toy_images(n=4), "tiny", _config(steps=1), tmp_path / "same", progress=False)
    assert "image_size" not in caplog.text
    with caplog.at_level("WARNING", logger="landprior.diffusion.train"):
        train(_toy_images(n=4, size=32), "tiny", _config(steps=1), tmp_path / "big",
              progress=False)  # fmt: skip
    assert "training images are 32x32 but the U-Net's image_size is 16" in caplog.text
    assert "diffusion sample" in caplog.text and "--size 32" in caplog.text
    with pytest.raises(ValueError, match=r"15x15 images, not divisible by 2"):
        train(torch.zeros(4, 1, 15, 15), "tiny", _config(), tmp_path / "odd", progress=False)
    assert not (tmp_path / "odd").exists()  # refused before the run folder is made


def test_resume_refuses_other_training_data_unless_allowed(tmp_path, caplog) -> None:
    data = _toy_images(n=8)
    train(data, "tiny", _config(steps=2), tmp_path / "run", progress=False)
    record = load_checkpoint(tmp_path / "run")["data_fingerprint"]
    assert record["images"]["shape"] == [8, 1, 16, 16] and record["labels"] is None
    other = data.clone()
    other[3, 0, 0, 0] = 0.5  # one value
    with pytest.raises(ValueError, match=r"cannot resume .*run.checkpoint\.pt: the training data "
                       r"differ .*images content \(same shape and dtype, other values\)") as err:
        train(other, "tiny", _config(steps=3), tmp_path / "run", progress=False, resume=True)
    assert "new output folder" in str(err.value) and "allow_data_change=True" in str(err.value)
    with pytest.raises(ValueError, match=r"images shape \(8, 1, 16, 16\) vs \(6, 1, 16, 16\)"):
        train(data[:6], "tiny", _config(steps=3), tmp_path / "run", progress=False, resume=True)
    with pytest.raises(ValueError, match="images dtype float32 vs uint8"):
        train(((data + 1) * 127.5).to(torch.uint8), "tiny", _config(steps=3), tmp_path / "run",
              progress=False, resume=True)  # fmt: skip
    assert load_checkpoint(tmp_path / "run")["step"] == 2  # refused runs wrote nothing
    # the same data as a numpy array (or a memmap) are the same data
    np.save(tmp_path / "data.npy", data.numpy())
    same = np.load(tmp_path / "data.npy", mmap_mode="r")
    assert train(same, "tiny", _config(steps=3), tmp_path / "run", progress=False,
                 resume=True).step == 3  # fmt: skip
    with caplog.at_level("WARNING", logger="landprior.diffusion.train"):
        more = train(other, "tiny", _config(steps=4), tmp_path / "run", progress=False,
                     resume=True, allow_data_change=True)  # fmt: skip
    assert more.step == 4 and "on other training data" in caplog.text
    assert load_checkpoint(tmp_path / "run")["data_fingerprint"]["images"] != record["images"]


def test_resume_checks_labels_and_dataset_objects_and_old_checkpoints_resume_unchecked(
    tmp_path, caplog
) -> None:
    data = _toy_images(n=12)
    labels = torch.arange(12) % 3
    unet = UNetConfig.preset("tiny").replace(num_classes=3)
    train(data, unet, _config(steps=1), tmp_path / "cond", labels=labels, progress=False)
    with pytest.raises(ValueError, match=r"labels content"):
        train(data, unet, _config(steps=2), tmp_path / "cond", labels=labels.flip(0),
              progress=False, resume=True)  # fmt: skip
    # a dataset object: its type, length and a hash of a few items
    items = list(data)
    train(items, "tiny", _config(steps=1), tmp_path / "set", progress=False)
    record = load_checkpoint(tmp_path / "set")["data_fingerprint"]["images"]
    assert record["type"] == "builtins.list" and record["len"] == 12 and record["blake2b"]
    with pytest.raises(ValueError, match="images length 12 vs 11"):
        train(items[:11], "tiny", _config(steps=2), tmp_path / "set", progress=False,
              resume=True)  # fmt: skip
    with pytest.raises(ValueError, match="other values in the sampled items"):
        train(items[::-1], "tiny", _config(steps=2), tmp_path / "set", progress=False,
              resume=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"builtins\.list of 12 items before, float32 array"):
        train(data, "tiny", _config(steps=2), tmp_path / "set", progress=False, resume=True)
    # a checkpoint written before fingerprints resumes on any data, as it did
    path = tmp_path / "set" / CHECKPOINT_NAME
    ckpt = torch.load(path, weights_only=False)
    del ckpt["data_fingerprint"]
    torch.save(ckpt, path)
    with caplog.at_level("INFO", logger="landprior.diffusion.train"):
        resumed = train(data[:5], "tiny", _config(steps=2), tmp_path / "set", progress=False,
                        resume=True)  # fmt: skip
    assert resumed.step == 2 and "records no fingerprint" in caplog.text
    assert load_checkpoint(tmp_path / "set")["data_fingerprint"]["images"]["shape"][0] == 5


def test_cli_resume_on_another_data_file_is_refused_unless_allowed(tmp_path) -> None:
    first, second = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(first, _toy_images(n=8).numpy())
    np.save(second, -_toy_images(n=8).numpy())
    out = tmp_path / "run"
    runner = CliRunner()

    def run(data, steps: str, *extra: str):
        return runner.invoke(main, ["diffusion", "train", "--data", str(data), "--preset", "tiny",
                                    "--steps", steps, "--batch-size", "2", "--out", str(out),
                                    "--no-progress", *extra])  # fmt: skip

    assert run(first, "1").exit_code == 0
    refused = run(second, "2", "--resume")
    assert refused.exit_code == 1 and "Traceback" not in refused.output, refused.output
    assert f"cannot resume {out / CHECKPOINT_NAME}: the images of {second} differ" in refused.output
    assert "images content" in refused.output and "--allow-data-change" in refused.output
    assert "new --out" in refused.output and len(refused.output.strip().splitlines()) == 1
    assert run(first, "2", "--resume").exit_code == 0
    allowed = run(second, "3", "--resume", "--allow-data-change")
    assert allowed.exit_code == 0, allowed.output
    assert load_checkpoint(out)["step"] == 3
