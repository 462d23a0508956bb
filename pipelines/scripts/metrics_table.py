"""Thin shim: gather per-method, per-city JSON scores into results/metrics.csv."""

import json
import logging

from landprior.landcover.evaluate import write_csv_atomic

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821
rows = [json.load(open(path, encoding="utf-8"))["row"] for path in snakemake.input]  # noqa: F821
write_csv_atomic(rows, snakemake.output[0])  # noqa: F821
logging.info("wrote %d rows to %s", len(rows), snakemake.output[0])  # noqa: F821
