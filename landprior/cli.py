"""The ``landprior`` console command: one group per area, ``--help`` everywhere."""

from __future__ import annotations

import logging
import signal

import click

from landprior import __version__
from landprior.commands import bench, data, diffusion, landcover, tsp


class _FriendlyGroup(click.Group):
    """A group whose file-system errors end as one line, not a traceback.

    Unwritable output folders, full disks and unreadable rasters (``OSError``, including
    rasterio's I/O errors) name the path in their message; ``-vv`` keeps the traceback in
    the debug log. Ctrl-C exits with 130, as shells expect.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            logging.getLogger("landprior").debug("file-system error", exc_info=True)
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
        except KeyboardInterrupt as exc:
            # a training run stopped by a signal has checkpointed: say where it stands
            click.echo(f"Interrupted: {exc}" if str(exc) else "Interrupted.", err=True)
            ctx.exit(128 + getattr(exc, "signum", signal.SIGINT))


@click.group(cls=_FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="landprior")
@click.option("-v", "--verbose", count=True,
              help="More log output (-v info, -vv debug; -vvv adds rasterio/GDAL's).")
def main(verbose: int) -> None:
    """landprior: a trained DDPM as a plug-and-play prior under differentiable constraints.

    Land-cover pseudo-labelling (the main job, usually run through `snakemake`),
    plus the same engine on other tasks. Every subcommand has --help.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 3:  # GDAL's driver chatter drowns the product's own debug lines
        for noisy in ("rasterio", "fiona", "pyogrio", "matplotlib", "PIL"):
            logging.getLogger(noisy).setLevel(max(level, logging.INFO))


for _module in (bench, data, diffusion, landcover, tsp):
    main.add_command(_module.group)


if __name__ == "__main__":  # pragma: no cover
    main()
