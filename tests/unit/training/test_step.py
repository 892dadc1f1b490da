"""Precision, memory format and batch size per device: the CPU paths here, the CUDA ones on a GPU."""

from __future__ import annotations

import pytest
import torch

from brain_tumor_mri.networks.factory import build_segmentation_network
from brain_tumor_mri.training.options import TrainOptions
from brain_tumor_mri.training.seg_model import SegModel, dice_bce_loss
from brain_tumor_mri.training.step import MAX_SKIPPED_IN_A_ROW, auto_batch_size, make_context, train_step
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


@pytest.mark.parametrize("bf16", ["on", "off"])
def test_a_step_with_a_nan_gradient_changes_no_weight(bf16: str) -> None:
    net, ctx = make_context(build_segmentation_network(**SMALL_NET), torch.device("cpu"), True, bf16, 1e-3, 0.0, True)
    x, y = _batch(ctx.device)
    first = next(net.parameters())
    hook = first.register_hook(lambda g: g * float("nan"))  # what the bf16 conv backward now and then returns
    before = [p.detach().clone() for p in net.parameters()]
    loss = train_step(net, ctx.to_device(x), y, dice_bce_loss, ctx)
    assert loss == loss and loss > 0, "the loss itself was finite and is reported"
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters())), "no weight moved"
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert (ctx.skipped, ctx.skipped_in_a_row, ctx.fp32_retries) == (1, 1, 1 if bf16 == "on" else 0)
    hook.remove()
    train_step(net, ctx.to_device(x), y, dice_bce_loss, ctx)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters())), "the next good step trains"
    assert (ctx.skipped, ctx.skipped_in_a_row) == (1, 0)


def test_a_bf16_step_with_a_nan_gradient_is_run_again_in_fp32() -> None:
    net, ctx = make_context(build_segmentation_network(**SMALL_NET), torch.device("cpu"), True, "on", 1e-3, 0.0, True)
    x, y = _batch(ctx.device)
    calls: list[torch.dtype] = []

    def once(g: torch.Tensor) -> torch.Tensor:  # a glitch of the first (bf16) backward only
        calls.append(g.dtype)
        return g * float("nan") if len(calls) == 1 else g

    hook = next(net.parameters()).register_hook(once)
    before = [p.detach().clone() for p in net.parameters()]
    loss = train_step(net, ctx.to_device(x), y, dice_bce_loss, ctx)
    hook.remove()
    assert len(calls) == 2 and loss == loss
    assert (ctx.fp32_retries, ctx.skipped) == (1, 0)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters())), "the fp32 pass trained"
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_a_diverged_run_stops_after_a_few_non_finite_steps() -> None:
    net, ctx = make_context(build_segmentation_network(**SMALL_NET), torch.device("cpu"), False, "off", 1e-3, 0.0, True)
    x, y = _batch(ctx.device)

    def nan_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_bce_loss(logits, target) * float("nan")

    for n in range(1, MAX_SKIPPED_IN_A_ROW):
        value = train_step(net, ctx.to_device(x), y, nan_loss, ctx)
        assert value != value and ctx.skipped_in_a_row == n  # NaN, reported and skipped
    with pytest.raises(FloatingPointError, match="5 steps in a row"):
        train_step(net, ctx.to_device(x), y, nan_loss, ctx)
    assert ctx.skipped == MAX_SKIPPED_IN_A_ROW and all(torch.isfinite(p).all() for p in net.parameters())


@pytest.mark.parametrize("patch, fits", [(32, False), (48, False), (64, True), (96, True)])
def test_cpu_bf16_only_where_the_bottleneck_keeps_four_voxels(tmp_path, patch: int, fits: bool) -> None:
    model = SegModel(TrainOptions("segmentation", tmp_path, tmp_path, patch=patch), None)
    model.build_network()  # four stride-2 levels: 32 -> 2, 48 -> 3, 64 -> 4, 96 -> 6 voxels a side
    assert model.cpu_bf16_fits() is fits


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
