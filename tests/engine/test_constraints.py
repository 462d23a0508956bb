"""Constraint protocol: composition (product = sum of log c), weights, wrappers, checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from landprior.engine.constraints import (
    Constraint,
    ConstraintError,
    LogC,
    as_weight,
    check_log_c,
    compose,
    constraint,
    evaluate,
    linear_weight,
    paper_weight,
    weighted,
)


def _x() -> Tensor:
    return torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))


def thin(x: Tensor) -> Tensor:
    return -x.flatten(1).mean(dim=1)


def energy(x: Tensor, progress: float) -> Tensor:
    return -(1.0 + progress) * x.square().flatten(1).mean(dim=1)


def test_protocol_and_wrapping() -> None:
    c = constraint(thin)
    assert isinstance(c, Constraint) and c.name == "thin"
    torch.testing.assert_close(c(_x(), 0.3), thin(_x()))
    e = constraint(energy, name="energy", uses_progress=True)
    torch.testing.assert_close(e(_x(), 0.5), energy(_x(), 0.5))

    @constraint(name="decorated")
    def thick(x: Tensor) -> Tensor:
        return x.flatten(1).mean(dim=1)

    assert isinstance(thick, LogC) and thick.name == "decorated"


def test_product_is_a_sum_of_log_c() -> None:
    a, b = constraint(thin), LogC(energy)
    x = _x()
    expected = thin(x) + energy(x, 0.25)
    torch.testing.assert_close((a * b)(x, 0.25), expected)
    torch.testing.assert_close(compose(a, b)(x, 0.25), expected)
    torch.testing.assert_close(compose(a, energy, a)(x, 0.25), expected + thin(x))
    # a plain callable on the left also composes
    torch.testing.assert_close((energy * a)(x, 0.25), expected)  # type: ignore[operator]
    assert (a * b).name == "thin * energy"
    with pytest.raises(ValueError):
        compose()


def test_weights() -> None:
    x = _x()
    c = constraint(thin)
    torch.testing.assert_close((c**2.5)(x, 0.0), 2.5 * thin(x))
    torch.testing.assert_close(weighted(c, linear_weight(1.0, 3.0))(x, 0.5), 2.0 * thin(x))
    assert paper_weight(0.01)(0.0) == pytest.approx(0.01)
    assert paper_weight(0.01)(0.75) == pytest.approx(0.0025)
    assert as_weight(2)(0.9) == 2.0
    with pytest.raises(ValueError, match="finite"):
        as_weight(math.inf)
    with pytest.raises(TypeError):
        as_weight("heavy")  # type: ignore[arg-type]


def test_wrong_shape_names_the_constraint() -> None:
    bad = constraint(lambda x: x.flatten(1), name="per_pixel")
    with pytest.raises(ConstraintError, match=r"'per_pixel'.*shape \(3, 32\).*expected \(3,\)"):
        evaluate(bad, _x(), 0.0)
    with pytest.raises(ConstraintError, match="must return a tensor"):
        check_log_c(1.0, _x(), "scalar")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_log_c_names_the_constraint(value: float) -> None:
    def broken(x: Tensor) -> Tensor:
        out = thin(x).clone()
        out[1] = value
        return out

    with pytest.raises(ConstraintError, match=r"'broken'.*non-finite.*1 of 3.*\[1\]"):
        evaluate(constraint(broken), _x(), 0.0)
    # inside a product the failing factor is named
    with pytest.raises(ConstraintError, match="'broken'"):
        (constraint(thin) * constraint(broken))(_x(), 0.0)
