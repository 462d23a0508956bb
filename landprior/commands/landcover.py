"""`landprior landcover`: The land-cover method: prior, pseudo-labels, segmenter, evaluation."""

from __future__ import annotations

import click


@click.group(name="landcover")
def group() -> None:
    """The land-cover method: prior, pseudo-labels, segmenter, evaluation."""
