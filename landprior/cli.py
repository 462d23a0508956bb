"""The ``landprior`` console command: one group per area, ``--help`` everywhere."""

from __future__ import annotations

import logging
import os
import signal
import sys

import click

from landprior import __version__
from landprior.commands import bench, data, diffusion, landcover, tsp


class _FriendlyGroup(click.Group):
    """A group whose file-system errors end as one line, not a traceback.

    Unwritable output folders, full disks and unreadable rasters (``OSError``, including
    rasterio's I/O errors) name the path in their message; ``-vv`` keeps the traceback in
    the debug log. Ctrl-C exits with 130, as shells expect. Output cut short by its reader
    (``landprior ... | head -1``) ends quietly with 141, the status of a Unix tool stopped
    by SIGPIPE (128 + 13), so scripts can tell it from a failure (1).
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # an OSError: it must come first
            _silence_stdout()
            ctx.exit(128 + signal.SIGPIPE)
        except OSError as exc:
            logging.getLogger("landprior").debug("file-system error", exc_info=True)
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
        except KeyboardInterrupt as exc:
            # a training run stopped by a signal has checkpointed: say where it stands
            click.echo(f"Interrupted: {exc}" if str(exc) else "Interrupted.", err=True)
            ctx.exit(128 + getattr(exc, "signum", signal.SIGINT))


def _silence_stdout() -> None:
    """Point stdout at the null device: the reader of the pipe has gone, and the
    interpreter's final flush of what is still buffered must not raise BrokenPipeError
    again (Python's signal docs, "Note on SIGPIPE")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test runner's buffer)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


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
