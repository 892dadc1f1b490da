"""The comparison point: a stock MONAI Label style segmentation pipeline.

MONAI transforms (load, channel-first, RAS, 1 mm spacing, channel-wise non-zero
normalisation), SegResNet, 96^3 sliding window, fp32, and inversion of the spatial
transforms back to the input grid, as the stock radiology app does. Weights are random:
only time and memory are compared.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import SegResNet
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    Spacingd,
)

from brain_tumor_mri.imageio import save_label

logger = logging.getLogger(__name__)


class StockPipeline:
    """SegResNet + 96^3 sliding window in fp32 with MONAI's inverse transforms."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.net = SegResNet(
            spatial_dims=3,
            in_channels=4,
            out_channels=4,
            init_filters=16,
            blocks_down=(1, 2, 2, 4),
            blocks_up=(1, 1, 1),
        ).eval()
        self.pre = Compose(
            [
                LoadImaged(keys="image", image_only=False),
                EnsureChannelFirstd(keys="image"),
                Orientationd(keys="image", axcodes="RAS"),
                Spacingd(keys="image", pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
                NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
            ]
        )
        self.inferer = SlidingWindowInferer(roi_size=(96, 96, 96), sw_batch_size=1, overlap=0.25)

    @torch.inference_mode()
    def __call__(self, sequence_files: list[Path], out: Path) -> np.ndarray:
        data = self.pre({"image": [str(p) for p in sequence_files]})
        logits = self.inferer(data["image"][None], self.net)[0]
        data["pred"] = torch.argmax(logits, dim=0, keepdim=True).to(torch.float32)
        inverted = Invertd(keys="pred", transform=self.pre, orig_keys="image", nearest_interp=True)(data)
        label = inverted["pred"][0].numpy().astype(np.uint8)
        save_label(out, label, np.asarray(data["image_meta_dict"]["original_affine"]))
        return label
