"""`landprior bench`: Benchmarks and checks against published results (print JSON)."""

from __future__ import annotations

import click


@click.group(name="bench")
def group() -> None:
    """Benchmarks and checks against published results (print JSON)."""
