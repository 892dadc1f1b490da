"""Precision, memory format and batch size per device: the CPU paths here, the CUDA ones on a GPU."""

from __future__ import annotations

import pytest
import torch

from brain_tumor_mri.networks.factory import build_segmentation_network
from brain_tumor_mri.training.seg_model import dice_bce_loss
from brain_tumor_mri.training.step import auto_batch_size, make_context, train_step
from tests.helpers.segmentation import SMALL_NET


def _batch(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, 4, 16, 16, 16), generator=g)
    y = (torch.rand((2, 3, 16, 16, 16), generator=g) > 0.7).float()
    return x.to(device), y.to(device)


@pytest.mark.parametrize("amp, bf16, reduced", [(True, "on", True), (True, "off", False), (False, "on", False)])
def test_cpu_precision_follows_the_options(amp: bool, bf16: str, reduced: bool) -> None:
    net, ctx = make_context(build_segmentation_network(**SMALL_NET), torch.device("cpu"), amp, bf16, 1e-3, 0.0, True)
    assert ctx.reduced is reduced and ctx.channels_last is reduced and ctx.scaler is None
    x, y = _batch(ctx.device)
    before = [p.detach().clone() for p in net.parameters()]
    loss = train_step(net, ctx.to_device(x), y, dice_bce_loss, ctx)
    assert loss == loss and loss > 0  # finite
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert ctx.to_device(x).is_contiguous(memory_format=torch.channels_last_3d) is reduced


def test_batch_size_is_the_option_or_the_cpu_default() -> None:
    def never(b: int) -> None:
        raise AssertionError("no trial on the CPU")

    assert auto_batch_size(5, 2, never, torch.device("cpu")) == 5
    assert auto_batch_size(0, 2, never, torch.device("cpu")) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_uses_fp16_with_a_grad_scaler_and_fills_the_device() -> None:
    device = torch.device("cuda")
    net, ctx = make_context(build_segmentation_network(**SMALL_NET), device, True, "auto", 1e-3, 0.0, True)
    assert ctx.reduced and ctx.scaler is not None and not ctx.channels_last
    x, y = _batch(device)
    assert train_step(net, ctx.to_device(x), y, dice_bce_loss, ctx) > 0

    def trial(b: int) -> None:
        out = net(torch.zeros((b, 4, 32, 32, 32), device=device))
        out.float().mean().backward()
        net.zero_grad(set_to_none=True)

    assert auto_batch_size(0, 2, trial, device, cap=8) >= 2
