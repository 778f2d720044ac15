"""Inputs shared by the plugin tests: YOLOv5s-like heads and clustered detection records."""

from __future__ import annotations

import torch

#: YOLOv5 v7.0 P3-P5 anchors (pixels) and strides
ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
STRIDES = (8, 16, 32)


def random_head(batch: int, h: int, w: int, *, nc: int = 80, na: int = 3, seed: int = 0, obj_shift: float = -4.0):
    """Raw Detect conv output [B, na*(5+nc), H, W] on the CPU, fp32; each image gets a different objectness
    shift, so images of a batch have different numbers of candidates."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, na, 5 + nc, h, w, generator=g) * 2
    for b in range(batch):
        x[b, :, 4] += obj_shift + 1.5 * (b % 3)
    return x.view(batch, na * (5 + nc), h, w)


def clustered_records(batch: int, n: int, *, classes: int = 3, seed: int = 0, tie_scores: bool = True):
    """(num [B] int32, dets [B, n, 8]) of heavily overlapping boxes; scores rounded to 0.01 when tie_scores,
    so many records tie on score and the (input, anchor_index) tie-break decides."""
    g = torch.Generator().manual_seed(seed)
    dets = torch.zeros(batch, n, 8)
    num = torch.zeros(batch, dtype=torch.int32)
    for b in range(batch):
        centers = torch.rand(12, 2, generator=g) * 600
        dets[b, :, 0:2] = centers[torch.randint(0, 12, (n,), generator=g)] + torch.randn(n, 2, generator=g) * 12
        dets[b, :, 2:4] = torch.rand(n, 2, generator=g) * 80 + 10
        score = torch.rand(n, generator=g) * 0.8 + 0.2
        dets[b, :, 4] = (score * 100).round() / 100 if tie_scores else score
        dets[b, :, 5] = torch.randint(0, classes, (n,), generator=g).float()
        dets[b, :, 7] = torch.randperm(4 * n, generator=g)[:n].float()
        num[b] = n - 7 * b  # fewer valid rows in later images
    return num, dets
