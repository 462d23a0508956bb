"""The ``landprior`` console command: one group per area, ``--help`` everywhere."""

from __future__ import annotations

import logging

import click

from landprior import __version__
from landprior.commands import bench, data, diffusion, landcover, tsp


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="landprior")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """landprior: a trained DDPM as a plug-and-play prior under differentiable constraints.

    Land-cover pseudo-labelling (the main job, usually run through `snakemake`),
    plus the same engine on other tasks. Every subcommand has --help.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for _module in (bench, data, diffusion, landcover, tsp):
    main.add_command(_module.group)


if __name__ == "__main__":  # pragma: no cover
    main()
