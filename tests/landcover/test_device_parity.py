"""The land-cover stages give the same answers on a CUDA GPU as on the CPU.

Skipped without a GPU (CI has none); run on a GPU machine with
``pytest tests/landcover/test_device_parity.py``. The noise of pseudo-labelling and the
batch draws of segmenter training come from CPU generators on every device, so a GPU run
follows the CPU run's random stream and differs only by floating-point rounding (TF32
convolutions included).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landprior.diffusion.denoiser import EpsDenoiser, freeze
from landprior.diffusion.nn import redraw_zero_init
from landprior.diffusion.schedule import NoiseSchedule
from landprior.diffusion.unet import UNetConfig
from landprior.landcover.pseudolabel import PseudoLabelConfig, pseudolabel_chips
from landprior.landcover.segmenter import (
    SegmenterConfig,
    SegmenterTrainConfig,
    predict_array,
    train_segmenter,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _chips(n: int = 6, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 5, (n, size // 4, size // 4), generator=g)
    truth = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)
    onehot = F.one_hot(truth, 5).permute(0, 3, 1, 2).float()
    clusters = onehot[:, torch.randperm(5, generator=g)]
    weak = F.avg_pool2d(onehot, 5, stride=1, padding=2, count_include_pad=False)
    return truth, clusters, weak


def test_pseudolabels_on_cuda_match_the_cpu() -> None:
    torch.manual_seed(0)  # zero-initialised output layers re-drawn: eps depends on x_t
    net = UNetConfig.preset("landcover-cpu").replace(in_channels=5, out_channels=5).build()
    net = redraw_zero_init(net)
    cpu = freeze(EpsDenoiser(net))
    gpu = freeze(EpsDenoiser(copy.deepcopy(net).cuda()))
    _, clusters, weak = _chips()
    cfg = PseudoLabelConfig(steps=20, mi_radius=3, kl_radius=3, batch_size=4)
    schedule = NoiseSchedule.linear()
    labels_cpu, probs_cpu = pseudolabel_chips(cpu, schedule, weak, clusters, cfg)
    labels_gpu, probs_gpu = pseudolabel_chips(gpu, schedule, weak, clusters, cfg)
    assert probs_gpu.device.type == "cpu" and labels_gpu.dtype == torch.uint8
    assert float((labels_cpu == labels_gpu).float().mean()) > 0.98
    assert float((probs_cpu - probs_gpu).abs().mean()) < 1e-2


def test_segmenter_training_and_prediction_on_cuda_match_the_cpu() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (16, 4, 4), generator=g).repeat_interleave(4, 1)
    labels = labels.repeat_interleave(4, 2)
    images = torch.rand(16, 4, 16, 16, generator=g) * 0.1
    images[:, 0] += labels.float() / 3
    torch.manual_seed(0)
    model = SegmenterConfig(base_channels=8, depth=2).build()
    model_gpu = copy.deepcopy(model).cuda()
    cfg = SegmenterTrainConfig(steps=15, batch_size=8, lr=3e-3)
    losses_cpu = train_segmenter(model, images, labels, cfg)
    losses_gpu = train_segmenter(model_gpu, images, labels, cfg)
    np.testing.assert_allclose(losses_gpu, losses_cpu, rtol=0.05)
    assert next(model_gpu.parameters()).device.type == "cuda"
    # rounding makes the two trained nets drift apart: predict with the same weights
    model_gpu.load_state_dict(model.state_dict())
    image = np.random.default_rng(0).random((4, 64, 48), dtype=np.float32)
    probs_cpu = predict_array(model, image, window=16, overlap=4)
    probs_gpu = predict_array(model_gpu, image, window=16, overlap=4)
    np.testing.assert_allclose(probs_gpu, probs_cpu, atol=5e-3)
