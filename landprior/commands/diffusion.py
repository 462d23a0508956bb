"""`landprior diffusion`: Train and sample the DDPM prior."""

from __future__ import annotations

import click


@click.group(name="diffusion")
def group() -> None:
    """Train and sample the DDPM prior."""
