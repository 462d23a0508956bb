"""`landprior data`: Synthesise, download, tile and prepare land-cover data."""

from __future__ import annotations

import click


@click.group(name="data")
def group() -> None:
    """Synthesise, download, tile and prepare land-cover data."""
