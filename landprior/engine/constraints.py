"""Differentiable constraints c(x): the protocol, weights, composition and checks.

A constraint is any callable ``constraint(x, progress) -> log c(x)`` with ``x`` of shape
(B, ...) and a result of shape (B,): one log-value per independent problem. ``progress``
in [0, 1] is the fraction of inference done, so a constraint may anneal its own internal
parameters (the land-cover constraint anneals a sigma, paper section 4).

Algorithm 1 of Graikos et al. (2022, section 2.2) minimises
``E ||eps - eps_theta(x_t, t)||^2 - w log c(x)``; the loss-guided samplers (DPS, LGD-MC)
use ``loss = -log c``. A product of constraints ``c1 c2`` is the sum of their log-values,
and a weighted constraint ``c ** w`` has ``log c^w = w log c``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = [
    "Constraint",
    "ConstraintError",
    "LogC",
    "Weight",
    "as_weight",
    "check_log_c",
    "compose",
    "constant_weight",
    "constraint",
    "constraint_name",
    "evaluate",
    "linear_weight",
    "paper_weight",
    "weighted",
]


@runtime_checkable
class Constraint(Protocol):
    """``log c(x)``: (B, ...) -> (B,), given the fraction of inference done in [0, 1]."""

    def __call__(self, x: Tensor, progress: float) -> Tensor: ...


Weight = float | Callable[[float], float]
"""A constant weight, or a schedule ``progress -> weight`` (progress in [0, 1])."""


class ConstraintError(ValueError):
    """A constraint returned log c of the wrong shape, or NaN / inf values."""


# ---------------------------------------------------------------------------- weights
def constant_weight(value: float) -> Callable[[float], float]:
    """``w(progress) = value``."""
    value = float(value)
    return lambda progress: value


def linear_weight(start: float, end: float) -> Callable[[float], float]:
    """``w(progress) = start + (end - start) * progress``."""
    start, end = float(start), float(end)
    return lambda progress: start + (end - start) * progress


def paper_weight(scale: float = 1.0) -> Callable[[float], float]:
    """The authors' ``w = scale * k / steps``, ``k = steps - i``: ``scale * (1 - progress)``.

    MNIST uses ``scale = 0.01``, land cover ``scale = 1`` (PAPER_NOTES, Algorithm 1 table).
    """
    return linear_weight(scale, 0.0)


def as_weight(weight: Weight) -> Callable[[float], float]:
    """Normalise a float or a callable into a schedule ``progress -> weight``."""
    if callable(weight):
        return weight
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise TypeError(f"a weight must be a float or a callable of progress, got {weight!r}")
    if not math.isfinite(weight):
        raise ValueError(f"a weight must be finite, got {weight}")
    return constant_weight(weight)


# ---------------------------------------------------------------------------- checks
def constraint_name(c: object) -> str:
    """A readable name for error messages: ``.name``, the function or the class name."""
    name = getattr(c, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(c, "__name__", None)
    if isinstance(name, str) and name:
        return name
    return type(c).__name__


def check_log_c(value: object, x: Tensor, name: str) -> Tensor:
    """Check that ``value`` is a finite tensor of shape (B,) for ``x`` of shape (B, ...).

    Raises:
        ConstraintError: naming the constraint, the expected and the actual shape, or
            how many problems have a NaN / inf log c.
    """
    if not isinstance(value, Tensor):
        raise ConstraintError(
            f"constraint {name!r} must return a tensor of log c, got {type(value).__name__}"
        )
    batch = x.shape[0]
    if value.shape != (batch,):
        raise ConstraintError(
            f"constraint {name!r} returned log c of shape {tuple(value.shape)}; expected "
            f"({batch},), one value per problem for x of shape {tuple(x.shape)}"
        )
    finite = value.isfinite()
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise ConstraintError(
            f"constraint {name!r} returned non-finite log c (NaN or inf) for "
            f"{len(bad)} of {batch} problems, e.g. index {bad[:5]}"
        )
    return value


def evaluate(c: Constraint, x: Tensor, progress: float) -> Tensor:
    """``log c(x)`` (B,), checked by :func:`check_log_c`."""
    return check_log_c(c(x, progress), x, constraint_name(c))


# ---------------------------------------------------------------------------- building blocks
class LogC:
    """A named constraint; ``c1 * c2`` is the product (sum of log c), ``c ** w`` weights it.

    Wraps ``fn(x, progress) -> (B,)``; build one from a plain function with
    :func:`constraint`.
    """

    def __init__(self, fn: Callable[[Tensor, float], Tensor], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or constraint_name(fn)

    def __call__(self, x: Tensor, progress: float = 0.0) -> Tensor:
        return self.fn(x, progress)

    def __mul__(self, other: object) -> LogC:
        if not callable(other):
            return NotImplemented
        return compose(self, other)  # type: ignore[arg-type]

    def __rmul__(self, other: object) -> LogC:
        if not callable(other):
            return NotImplemented
        return compose(other, self)  # type: ignore[arg-type]

    def __pow__(self, weight: Weight) -> LogC:
        return weighted(self, weight)

    def __repr__(self) -> str:
        return f"LogC({self.name})"


@dataclass(frozen=True)
class _Product:
    parts: tuple[Constraint, ...]

    def __call__(self, x: Tensor, progress: float) -> Tensor:
        total = evaluate(self.parts[0], x, progress)
        for part in self.parts[1:]:
            total = total + evaluate(part, x, progress)
        return total


@dataclass(frozen=True)
class _Weighted:
    inner: Constraint
    weight: Callable[[float], float]

    def __call__(self, x: Tensor, progress: float) -> Tensor:
        return self.weight(progress) * evaluate(self.inner, x, progress)


def compose(*constraints: Constraint) -> LogC:
    """The product ``c_1 c_2 ... c_n``: ``log c = sum_k log c_k``, each term checked."""
    if not constraints:
        raise ValueError("compose() needs at least one constraint")
    for c in constraints:
        if not callable(c):
            raise TypeError(f"not a constraint (not callable): {c!r}")
    name = " * ".join(constraint_name(c) for c in constraints)
    return LogC(_Product(tuple(constraints)), name=name)


def weighted(c: Constraint, weight: Weight) -> LogC:
    """``c ** w``: ``log c^w = w(progress) log c`` with a constant or scheduled weight."""
    w = as_weight(weight)
    label = f"{weight:g}" if isinstance(weight, int | float) else constraint_name(weight)
    return LogC(_Weighted(c, w), name=f"{constraint_name(c)}**{label}")


def constraint(
    fn: Callable[..., Tensor] | None = None, *, name: str | None = None, uses_progress: bool = False
) -> LogC | Callable[[Callable[..., Tensor]], LogC]:
    """Wrap a plain function of x, ``fn(x) -> (B,)``, as a constraint (also a decorator).

    With ``uses_progress=True`` the function is called as ``fn(x, progress)``.
    """

    def wrap(f: Callable[..., Tensor]) -> LogC:
        label = name or constraint_name(f)
        if uses_progress:
            return LogC(f, name=label)
        return LogC(lambda x, progress: f(x), name=label)

    return wrap if fn is None else wrap(fn)
