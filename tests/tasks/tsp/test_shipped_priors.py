"""The TSP priors committed in models/tsp load, fit the renderer and solve instances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from landprior.diffusion.train import load_checkpoint
from landprior.diffusion.unet import UNetConfig
from landprior.tasks.tsp.data import uniform_instances
from landprior.tasks.tsp.diffuse import DiffusionSolverConfig, load_prior, solve

MODELS = Path(__file__).resolve().parents[3] / "models" / "tsp"


@pytest.mark.parametrize(("name", "step"), [("tsp50-cpu.pt", 7500), ("tsp100-cpu.pt", 2000)])
def test_shipped_prior_loads_and_solves(name: str, step: int) -> None:
    prior = load_prior(MODELS / name)
    assert prior.meta["step"] == step and prior.meta["weights"] == "ema"
    assert prior.meta["unet_config"] == UNetConfig.preset("tsp-cpu")
    points = uniform_instances(2, 20, seed=3)
    result = solve(prior.denoiser, prior.schedule, points,
                   config=DiffusionSolverConfig(steps=3, batch_size=2), seed=0)  # fmt: skip
    assert (np.sort(result.tours, axis=1) == np.arange(20)).all()
    assert (result.lengths <= result.greedy_lengths + 1e-9).all()


def test_tsp100_prior_records_its_warm_start() -> None:
    ckpt = load_checkpoint(MODELS / "tsp100-cpu.pt")
    assert ckpt["init_from"] == "models/tsp/tsp50-cpu.pt"
