"""Thin shim: figures and results/report.md from the pipeline's outputs."""

import logging
import shutil
from pathlib import Path

from landprior.landcover.report import chip_figure, tile_figure_for, write_report

sm = snakemake  # noqa: F821
logging.basicConfig(filename=sm.log[0], level=logging.INFO)
results = Path(sm.input.metrics).parent
data = Path(sm.input.marker).parent
figures = Path(sm.output.figures)
figures.mkdir(parents=True, exist_ok=True)
pngs = [Path(shutil.copy(sm.input.samples, figures / "prior_samples.png"))]
for city, chips in zip(sm.params.targets, sm.input.pseudo, strict=True):
    preds = {
        "source supervised": results / "predictions" / "source_supervised" / city,
        "ours fine-tuned": results / "predictions" / "ours_finetuned" / city,
    }
    pngs.append(chip_figure(chips, preds, figures / f"chips_{city}.png",
                            chip_size=sm.params.chip_size))
    pngs.append(tile_figure_for(data, city, sm.params.split, preds,
                                figures / f"tile_{city}.png", mapping=sm.params.mapping))
write_report(sm.input.metrics, sm.output.md, methods=sm.params.methods,
             cities=sm.params.targets, pseudo_summaries=sm.input.summaries, figures=pngs)
