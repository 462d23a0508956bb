"""Annealed t schedules of Algorithm 1: presets, ranges, jitter and bad input."""

from __future__ import annotations

import pytest
import torch

from landprior.engine.schedules import (
    PRESET_NAMES,
    LinearCosine,
    check_t_schedule,
    linear_cosine_schedule,
    linear_schedule,
    paper_schedule,
    resolve_t_schedule,
)

# name -> (steps, first t, last t) from the PAPER_NOTES table
EXPECTED = {
    "mnist": (1000, 1000, 1),
    "tsp": (256, 1000, 4),
    "landcover": (200, 433, 2),  # the notes' "~430 -> 1": k = 1 gives 1.9 -> 2
}


def _smoothed(ts: torch.Tensor, window: int) -> torch.Tensor:
    return ts.double().unfold(0, window, window).mean(dim=1)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_are_in_range_and_anneal(name: str) -> None:
    ts = paper_schedule(name, generator=torch.Generator().manual_seed(0))
    assert ts.dtype == torch.long and ts.dim() == 1
    assert int(ts.min()) >= 1 and int(ts.max()) <= 1000
    # monotone-ish: thirds decrease, the least-squares slope is negative, the end is low
    thirds = _smoothed(ts, len(ts) // 3)
    assert torch.all(thirds[1:] < thirds[:-1])
    i = torch.arange(len(ts), dtype=torch.float64)
    slope = ((i - i.mean()) * (ts - ts.double().mean())).sum() / ((i - i.mean()) ** 2).sum()
    assert slope < 0
    assert ts[:10].double().mean() > ts[-10:].double().mean() + 100


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_presets_match_the_paper_table(name: str) -> None:
    steps, first, last = EXPECTED[name]
    ts = paper_schedule(name)
    assert len(ts) == steps
    assert int(ts[0]) == first
    assert int(ts[-1]) == last


def test_ffhq_jitter_is_seeded_and_bounded() -> None:
    plain = paper_schedule("ffhq", jitter=0)
    assert len(plain) == 200 and int(plain[0]) == 1000 and 200 <= int(plain[-1]) <= 205
    a = paper_schedule("ffhq", generator=torch.Generator().manual_seed(1))
    b = paper_schedule("ffhq", generator=torch.Generator().manual_seed(1))
    c = paper_schedule("ffhq", generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    inside = plain < 1000  # where clipping does not interfere
    assert int((a - plain)[inside].abs().max()) <= 50
    assert int(a.max()) <= 1000


def test_steps_override_and_other_T() -> None:
    ts = paper_schedule("landcover", steps=20)
    assert len(ts) == 20 and int(ts[0]) == 433 and int(ts[-1]) >= 1
    small = paper_schedule("mnist", num_timesteps=100)
    assert int(small.max()) <= 100 and int(small[0]) == 100 and int(small.min()) >= 1


def test_integer_wobble_uses_floor_division() -> None:
    params = LinearCosine(steps=10, wobble_div=4, period=1e9, integer_wobble=True)
    ts = linear_cosine_schedule(params, num_timesteps=10_000)
    k = torch.arange(10, 0, -1)
    expected = ((k + k // 4).double() / 10 * 10_000).round().long().clamp(1, 10_000)
    assert torch.equal(ts, expected)


def test_linear_schedule() -> None:
    ts = linear_schedule(5, 400, 1)
    assert ts.tolist() == [400, 300, 200, 101, 1] or ts.tolist() == [400, 300, 200, 100, 1]
    assert torch.all(ts[1:] < ts[:-1])
    assert linear_schedule(1, 7).tolist() == [7]
    with pytest.raises(ValueError, match=r"t_max = 1001 outside \[1, 1000\]"):
        linear_schedule(5, 1001)
    with pytest.raises(ValueError, match="t_min"):
        linear_schedule(5, 10, 20)


def test_unknown_preset_lists_the_allowed_names() -> None:
    allowed = r"unknown t schedule 'cifar'.*mnist.*tsp.*ffhq.*landcover"
    with pytest.raises(ValueError, match=allowed):
        paper_schedule("cifar")
    with pytest.raises(ValueError, match="unknown t schedule"):
        resolve_t_schedule("cifar", 1000)


@pytest.mark.parametrize("bad", [[0, 5], [1001, 3], [-1], [2.5]])
def test_t_outside_range_is_an_error(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="t schedule"):
        resolve_t_schedule(bad, 1000)  # type: ignore[arg-type]


def test_check_t_schedule_shape() -> None:
    with pytest.raises(ValueError, match="1-D"):
        check_t_schedule(torch.ones(2, 2, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="non-empty"):
        check_t_schedule(torch.ones(0, dtype=torch.long), 10)
    assert resolve_t_schedule(torch.tensor([5.0, 1.0]), 10).dtype == torch.long
