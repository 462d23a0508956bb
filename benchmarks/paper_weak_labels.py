"""The paper's weak-label protocol on the synthetic target cities (JSON on stdout).

    .venv/bin/python benchmarks/paper_weak_labels.py                       # all three targets
    .venv/bin/python benchmarks/paper_weak_labels.py --city synthdesert_az-2010

A DIAGNOSTIC, not a result of the method: the paper's weak labels (EnviroAtlas
``prior_from_cooccurrences_101_31``) map NLCD through P(class | NLCD) estimated from each
target city's OWN labels - a label leak (PAPER_NOTES). landprior's pipeline estimates it from
the source city instead. This script re-runs the target half of the demo pipeline with the
leaky weak labels, to separate what the implementation does from what the weak labels know:

1. ``landprior data weak-labels --source-city CITY --allow-target-source`` (co-occurrence
   from CITY's own test-tile labels, exactly the leak);
2. ``landcover chips`` (same seed and count as the demo), ``cluster``, ``pseudolabel`` with
   the demo's prior and settings, ``train-segmenter`` fine-tuning the demo's source model
   with the demo's replay;
3. ``predict`` the city's test tiles and ``evaluate`` them, and the leaky weak labels' argmax.

It needs a finished ``make demo`` (``--results``, default ``results/``): the prior
(``prior/checkpoint.pt``), the source model (``segmenter/source_image.pt``), the source chips
and ``metrics.csv`` for the honest rows printed next to the leaky ones. Each city takes
about 5-8 minutes on one thread (mostly the 128-chip pseudo-labelling). Settings come from
``pipelines/config/demo.yaml``. Work files go to ``--work`` (default a temporary folder).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("benchmarks.paper_weak_labels")
REPO = Path(__file__).resolve().parents[1]
LANDPRIOR = [sys.executable, "-m", "landprior.cli"]


def _run(args: list[str], logfile: Path) -> None:
    log.info("%s", " ".join(shlex.quote(a) for a in ["landprior", *args]))
    with logfile.open("w", encoding="utf-8") as out:
        done = subprocess.run([*LANDPRIOR, *args], cwd=REPO, stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"landprior {args[0]} {args[1]} failed; see {logfile}")


def _honest_rows(metrics_csv: Path, city: str) -> dict[str, float]:
    rows: dict[str, float] = {}
    with metrics_csv.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["city"] == city:
                rows[row["method"]] = float(row["accuracy"])
    return rows


def run_city(city: str, cfg: dict[str, Any], results: Path, work: Path) -> dict[str, Any]:
    data = str(REPO / cfg["dataset"]["root"])
    split = cfg["test_split"]
    p, s, c = cfg["pseudolabel"], cfg["segmenter"], cfg["clustering"]
    w = work / city
    w.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _run(["data", "weak-labels", "--root", data, "--city", city, "--source-city", city,
          "--source-split", split, "--allow-target-source",
          "--save-cooccurrence", str(w / "cooccurrence.json"), "--out", str(w / "weak")],
         w / "weak.log")
    _run(["landcover", "chips", "--data", data, "--city", city, "--split", split,
          "--n", str(p["chips"]), "--size", str(cfg["chip_size"]), "--factor", str(cfg["factor"]),
          "--weak-layer", str(w / "weak"), "--mapping", cfg["mapping"],
          "--seed", str(cfg["seed"]), "--out", str(w / "chips.npz")], w / "chips.log")
    _run(["landcover", "cluster", "--chips", str(w / "chips.npz"), "--out",
          str(w / "clusters.npz"), "--k", str(c["k"]), "--radius", str(c["radius"]),
          "--iterations", str(c["iterations"]), "--warmup-iterations",
          str(c["warmup_iterations"]), "--warmup-radius", str(c["warmup_radius"]),
          "--seed", str(cfg["seed"]), "--threads", "1"], w / "cluster.log")
    _run(["landcover", "pseudolabel", "--prior", str(results / "prior" / "checkpoint.pt"),
          "--chips", str(w / "clusters.npz"), "--out", str(w / "pseudo.npz"),
          "--summary", str(w / "pseudo.json"), "--steps", str(p["steps"]), "--lr", str(p["lr"]),
          "--window-radius", str(p["window_radius"]), "--batch-size", str(p["batch_size"]),
          "--seed", str(p["seed"]), "--mi-weight", str(p["mi_weight"]),
          "--kl-weight", str(p["kl_weight"]), "--kl-direction", p["kl_direction"],
          "--threads", "1", "--no-progress"], w / "pseudolabel.log")
    replay = (["--replay-chips", str(results / "chips" / f"{cfg['source_city']}_"
                                     f"{cfg['train_split']}.npz"),
               "--replay-fraction", str(s["replay_fraction"])]
              if s["replay_fraction"] > 0 else [])
    _run(["landcover", "train-segmenter", "--chips", str(w / "pseudo.npz"), "--target",
          "pseudo", "--inputs", "image", "--init", str(results / "segmenter" / "source_image.pt"),
          "--out", str(w / "finetuned.pt"), "--steps", str(s["finetune_steps"]), *replay,
          "--batch-size", str(s["batch_size"]), "--lr", str(s["finetune_lr"]),
          "--seed", str(cfg["seed"]), "--threads", "1", "--no-progress"], w / "finetune.log")
    from landprior.landcover.enviroatlas import EnviroAtlas

    for tile in EnviroAtlas(Path(data)).tiles(city, split):
        _run(["landcover", "predict", "--data", data, "--city", city, "--split", split,
              "--tile", tile.tile_id, "--model", str(w / "finetuned.pt"),
              "--out-dir", str(w / "predictions"), "--window", str(s["window"]),
              "--overlap", str(s["overlap"]), "--weak-layer", str(w / "weak"),
              "--upsample", str(s["upsample"]), "--threads", "1"],
             w / f"predict_{tile.tile_id}.log")
    _run(["landcover", "evaluate", "--data", data, "--city", city, "--split", split,
          "--method", "ours fine-tuned, leaky weak labels", "--predictions",
          str(w / "predictions"), "--mapping", cfg["mapping"], "--out",
          str(w / "finetuned.json")], w / "evaluate.log")
    _run(["landcover", "evaluate", "--data", data, "--city", city, "--split", split,
          "--method", "weak-label argmax, leaky", "--weak-labels", "--weak-layer",
          str(w / "weak"), "--mapping", cfg["mapping"], "--out", str(w / "weak.json")],
         w / "evaluate_weak.log")
    finetuned = json.loads((w / "finetuned.json").read_text())["row"]
    weak = json.loads((w / "weak.json").read_text())["row"]
    pseudo = json.loads((w / "pseudo.json").read_text())
    honest = _honest_rows(results / "metrics.csv", city)
    return {
        "leaky": {
            "ours_finetuned": {k: finetuned[k] for k in finetuned if k not in ("method", "city")},
            "weak_label_argmax": {k: weak[k] for k in weak if k not in ("method", "city")},
            "pseudo_label_accuracy_on_chips": pseudo.get("pseudo_label_accuracy"),
            "weak_label_accuracy_on_chips": pseudo.get("weak_label_accuracy"),
        },
        "honest_accuracy_from_metrics_csv": honest,
        "gain_over_source_supervised": {
            "leaky": round(finetuned["accuracy"] - honest.get("source supervised", float("nan")),
                           2),
            "honest": round(honest.get("ours fine-tuned", float("nan"))
                            - honest.get("source supervised", float("nan")), 2),
        },
        "seconds_wall": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "pipelines/config/demo.yaml")
    parser.add_argument("--results", type=Path, default=REPO / "results",
                        help="results folder of a finished `make demo`")
    parser.add_argument("--city", action="append", default=None,
                        help="target city (repeatable; default: the config's targets)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep work files here (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cfg = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    from snakemake.utils import validate  # fills the schema's defaults, as the Snakefile does

    validate(cfg, str(REPO / "pipelines/schemas/config.schema.yaml"))
    results = args.results.resolve()
    needed = [results / "prior" / "checkpoint.pt", results / "segmenter" / "source_image.pt",
              results / "metrics.csv"]
    if cfg["segmenter"]["replay_fraction"] > 0:
        needed.append(results / "chips" / f"{cfg['source_city']}_{cfg['train_split']}.npz")
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise SystemExit(f"run `make demo` first: missing {', '.join(missing)}")
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        raise SystemExit(f"--work {args.work} is not empty; give a new or empty folder")
    cities = args.city or list(cfg["target_cities"])
    unknown = [c for c in cities if c not in cfg["target_cities"]]
    if unknown:
        raise SystemExit(f"--city {unknown}: not a target city of {args.config} "
                         f"(expected some of {cfg['target_cities']})")
    with tempfile.TemporaryDirectory(prefix="landprior-paper-weak-") as tmp:
        work = args.work.resolve() if args.work else Path(tmp)
        report = {city: run_city(city, cfg, results, work) for city in cities}
    print(json.dumps({"what": "paper weak-label protocol (target's own co-occurrence: a "
                              "label leak) vs landprior's (source city's)", **report}, indent=1))


if __name__ == "__main__":
    main()
