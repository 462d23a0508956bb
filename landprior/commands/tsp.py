"""`landprior tsp`: Euclidean TSP through the diffusion prior."""

from __future__ import annotations

import click


@click.group(name="tsp")
def group() -> None:
    """Euclidean TSP through the diffusion prior."""
