import numpy as np
import pytest
import torch

from landprior.landcover.segmenter import (
    SegmenterConfig,
    SegmenterStateMismatch,
    SegmenterTrainConfig,
    iter_strip_predictions,
    load_segmenter,
    predict_array,
    save_segmenter,
    train_segmenter,
)


def _toy_chips(n: int = 32, size: int = 16, seed: int = 0, classes: tuple[int, ...] = (0, 1, 2)):
    """Images whose first band decides the class: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(classes), (n, size // 4, size // 4), generator=g)
    labels = torch.tensor(classes)[pick]
    labels = labels.repeat_interleave(4, 1).repeat_interleave(4, 2)
    images = torch.rand(n, 4, size, size, generator=g) * 0.1
    images[:, 0] += labels.float() / 3
    return images, labels


def test_shapes_and_weak_label_channels() -> None:
    model = SegmenterConfig(in_channels=9, base_channels=8, depth=2).build()
    out = model(torch.rand(2, 9, 16, 16))
    assert out.shape == (2, 5, 16, 16)
    with pytest.raises(ValueError, match="expects"):
        model(torch.rand(2, 4, 16, 16))
    with pytest.raises(ValueError, match="divisible"):
        model(torch.rand(2, 9, 18, 18))


def test_training_learns_and_is_deterministic() -> None:
    images, labels = _toy_chips()
    cfg = SegmenterTrainConfig(steps=60, batch_size=8, lr=1e-2, seed=1)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = SegmenterConfig(num_classes=3, base_channels=8, depth=2).build()
        runs.append((model, train_segmenter(model, images, labels, cfg)))
    (model, losses), (_, losses2) = runs
    assert losses == losses2
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    acc = (model(images).argmax(1) == labels).float().mean()
    assert acc > 0.9


def test_training_rejects_bad_inputs() -> None:
    model = SegmenterConfig(num_classes=3, base_channels=8, depth=2).build()
    images, labels = _toy_chips(4)
    with pytest.raises(ValueError, match="same N"):
        train_segmenter(model, images, labels[:2])
    with pytest.raises(ValueError, match="NaN"):
        train_segmenter(model, images * float("nan"), labels)
    with pytest.raises(ValueError, match="classes"):
        train_segmenter(model, images, labels + 3)


def test_replay_chips_are_mixed_into_every_batch() -> None:
    """Class 2 appears only in the replay set: the model learns it only with replay."""
    main, replay = _toy_chips(32, classes=(0, 1)), _toy_chips(16, seed=1, classes=(0, 2))
    cfg = SegmenterTrainConfig(steps=80, batch_size=8, lr=1e-2, seed=1, replay_fraction=0.5)
    predicted_two = []
    for use_replay in (False, True):
        torch.manual_seed(0)
        model = SegmenterConfig(num_classes=3, base_channels=8, depth=2).build()
        train_segmenter(model, *main, cfg, replay=replay if use_replay else None)
        with torch.no_grad():
            pred = model(replay[0]).argmax(1)
        predicted_two.append(float(((pred == 2) & (replay[1] == 2)).sum() / (replay[1] == 2).sum()))
    assert predicted_two[0] < 0.05 and predicted_two[1] > 0.3

    model = SegmenterConfig(num_classes=3, base_channels=8, depth=2).build()
    with pytest.raises(ValueError, match="replay chips"):
        train_segmenter(model, *main, cfg, replay=(replay[0][:, :2], replay[1]))
    with pytest.raises(ValueError, match="replay_fraction"):
        SegmenterTrainConfig(replay_fraction=1.0)


def test_sliding_window_equals_single_window_and_blends_smoothly() -> None:
    torch.manual_seed(0)
    model = SegmenterConfig(base_channels=8, depth=2).build().eval()
    rng = np.random.default_rng(0)
    image = rng.random((4, 16, 16), dtype=np.float32)
    one = predict_array(model, image, window=16, overlap=0)
    with torch.no_grad():
        direct = torch.softmax(model(torch.from_numpy(image)[None]), 1)[0].numpy()
    np.testing.assert_allclose(one, direct, atol=1e-5)
    big = rng.random((4, 50, 70), dtype=np.float32)
    probs = predict_array(model, big, window=16, overlap=4)
    assert probs.shape == (5, 50, 70)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_strips_cover_the_raster_once_in_order_with_downsampling() -> None:
    torch.manual_seed(0)
    model = SegmenterConfig(base_channels=8, depth=2).build().eval()
    image = np.random.default_rng(1).random((4, 100, 72), dtype=np.float32)
    seen = []
    for row0, strip in iter_strip_predictions(
        model, lambda r, c, h, w: image[:, r : r + h, c : c + w], 100, 72,
        window=8, overlap=2, downsample=4,
    ):
        assert strip.shape[0] == 5 and strip.shape[2] == 72
        seen.extend(range(row0, row0 + strip.shape[1]))
    assert seen == list(range(100))
    with pytest.raises(ValueError, match="smaller than one prediction window"):
        next(iter_strip_predictions(model, lambda *a: None, 20, 20, window=8, downsample=4))


def test_checkpoint_round_trip(tmp_path) -> None:
    model = SegmenterConfig(in_channels=9, base_channels=8, depth=2).build().eval()
    path = save_segmenter(tmp_path / "seg.pt", model, {"city": "x"})
    loaded, meta = load_segmenter(path)
    x = torch.rand(1, 9, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))
    assert meta == {"city": "x"}
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad\.pt"):
        load_segmenter(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        load_segmenter(tmp_path / "missing.pt")
    # the other kind of checkpoint, each way round: say what it is
    from landprior.diffusion.train import CHECKPOINT_FORMAT, load_checkpoint

    torch.save({"format": CHECKPOINT_FORMAT, "model": {}}, tmp_path / "prior.pt")
    with pytest.raises(ValueError, match=r"prior\.pt is not a segmenter checkpoint.*--prior"):
        load_segmenter(tmp_path / "prior.pt")
    with pytest.raises(ValueError, match=r"seg\.pt is a segmenter checkpoint.*not a diffusion"):
        load_checkpoint(path)


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_batch_norm_makes_a_pixel_independent_of_far_away_pixels(norm: str) -> None:
    """With BatchNorm (eval) a pixel depends only on its receptive field; GroupNorm normalises
    over the whole input window, so changing pixels far away moves it too."""
    images, labels = _toy_chips(n=16, size=16)
    model = SegmenterConfig(base_channels=8, depth=2, norm=norm).build()
    train_segmenter(model, images, labels, SegmenterTrainConfig(steps=5, batch_size=8))
    g = torch.Generator().manual_seed(1)
    near = torch.rand(1, 4, 96, 96, generator=g)
    far = near.clone()
    far[..., 64:, 64:] = torch.rand(1, 4, 32, 32, generator=g)  # > receptive field from (0, 0)
    with torch.no_grad():
        a, b = model(near)[..., :8, :8], model(far)[..., :8, :8]
    if norm == "batch":
        torch.testing.assert_close(a, b)
    else:
        assert not torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="unknown segmenter norm 'layer'"):
        SegmenterConfig(norm="layer")


class _Crash(RuntimeError):
    pass


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path) -> None:
    """A run killed after step 5 (state saved every 2 steps) and resumed ends exactly where
    an uninterrupted run does: weights, losses, the cosine schedule, the batch and dropout
    random streams (dropout on, replayed chips mixed in)."""
    images, labels = _toy_chips(16)
    replay = _toy_chips(8, seed=3)
    cfg = SegmenterTrainConfig(steps=9, batch_size=4, lr=1e-2, seed=2)
    net = SegmenterConfig(num_classes=3, base_channels=8, depth=2, dropout=0.2)

    def fresh():
        torch.manual_seed(0)
        return net.build()

    whole = fresh()
    losses = train_segmenter(whole, images, labels, cfg, replay=replay)

    def crash(step: int, loss: float) -> None:
        if step == 4:  # the 5th step: after the state of step 4, before that of step 6
            raise _Crash

    state = tmp_path / "seg.pt.resume"
    with pytest.raises(_Crash):
        train_segmenter(fresh(), images, labels, cfg, replay=replay, state_path=state,
                        save_every=2, callback=crash)
    saved = torch.load(state, weights_only=False)
    assert saved["step"] == 4
    # the same state as the first release wrote it (the batch stream under "batches")
    legacy = tmp_path / "legacy.pt.resume"
    rng = dict(saved["rng"])
    rng["batches"] = rng.pop("generator")
    torch.save({**saved, "rng": rng}, legacy)
    for path in (state, legacy):
        resumed = fresh()
        torch.manual_seed(123)  # the resumed run restores the dropout stream itself
        again = train_segmenter(resumed, images, labels, cfg, replay=replay, state_path=path,
                                resume=True, save_every=2)
        assert again == losses, path
        for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(),
                                strict=True):
            assert torch.equal(a, b), (path, name)


def test_resume_refuses_other_chips_or_settings(tmp_path) -> None:
    images, labels = _toy_chips(8)
    cfg = SegmenterTrainConfig(steps=4, batch_size=2, seed=0)
    net = SegmenterConfig(num_classes=3, base_channels=8, depth=2)
    state = tmp_path / "seg.pt.resume"

    def stop_at_3(step: int, loss: float) -> None:
        if step == 2:
            raise _Crash

    torch.manual_seed(0)
    with pytest.raises(_Crash):
        train_segmenter(net.build(), images, labels, cfg, state_path=state, save_every=1,
                        callback=stop_at_3)
    other = images.clone()
    other[0, 0, 0, 0] += 0.01
    def same_start():
        torch.manual_seed(0)
        return net.build()

    with pytest.raises(SegmenterStateMismatch, match="training chips changed"):
        train_segmenter(same_start(), other, labels, cfg, state_path=state, resume=True)
    with pytest.raises(ValueError, match=r"training settings changed.*'steps': \(4, 5\)"):
        train_segmenter(same_start(), images, labels, SegmenterTrainConfig(steps=5, batch_size=2),
                        state_path=state, resume=True)
    ran: list[int] = []
    losses = train_segmenter(same_start(), images, labels, cfg, state_path=state, resume=True,
                             callback=lambda step, loss: ran.append(step))
    assert ran == [2, 3] and len(losses) == 4  # the same run, resumed after its 2nd step
    with pytest.raises(SegmenterStateMismatch, match="U-Net changed"):
        train_segmenter(SegmenterConfig(num_classes=3, base_channels=4, depth=2).build(), images,
                        labels, cfg, state_path=state, resume=True)
    other_start = net.build()  # e.g. another --init: the state belongs to another run
    with pytest.raises(SegmenterStateMismatch, match=r"starting weights \(--init"):
        train_segmenter(other_start, images, labels, cfg, state_path=state, resume=True)
    # without --resume the old state is overwritten by the new run's, not an error
    train_segmenter(net.build(), images, labels, cfg, state_path=state, save_every=1)
