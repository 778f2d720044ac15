"""rotated_nms (ultralytics' OBB NMS as a plugin): the torch reference against ultralytics' own code and the host
NMS (trtx.nms.rotated_nms) on the CPU; the kernels against the reference on a GPU (fresh random inputs, poisoned
outputs, batch 1/3/8, fp32/fp16). Under compute-sanitizer:

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python -m pytest -q -m gpu \
        tests/plugins/test_rotated_nms.py
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from plugins import rotated_nms
from plugins.core import PluginError
from trtx import nms as host_nms

BATCHES = [1, 3, 8]


def obb_head(batch: int, anchors: int, classes: int, *, seed: int, clustered: bool = False, ties: bool = False):
    """An OBB head's decoded outputs on the CPU: boxes [B, A, 4] (cx, cy, w, h; clustered: around 10 centers, so
    that many overlap), scores [B, A, nc] (sigmoids, a few hundred candidates above 0.25; ties: rounded to 0.01),
    angles [B, A] in [-pi/4, 3pi/4) as the OBB head makes them."""
    g = torch.Generator().manual_seed(seed)
    if clustered:
        centers = torch.rand(batch, 10, 2, generator=g) * 600
        pick = torch.randint(0, 10, (batch, anchors), generator=g)
        xy = (
            torch.gather(centers, 1, pick[..., None].expand(-1, -1, 2))
            + torch.randn(batch, anchors, 2, generator=g) * 8
        )
    else:
        xy = torch.rand(batch, anchors, 2, generator=g) * 640
    wh = torch.rand(batch, anchors, 2, generator=g) * 100 + 4
    scores = torch.sigmoid(torch.randn(batch, anchors, classes, generator=g) * 1.5 - 3)
    if ties:
        scores = (scores * 100).round() / 100
    angles = (torch.rand(batch, anchors, generator=g) - 0.25) * math.pi
    return torch.cat([xy, wh], -1), scores, angles


def _ultralytics(boxes, scores, angles, conf: float, iou: float, max_det: int) -> list[np.ndarray]:
    """ultralytics.utils.nms.non_max_suppression(rotated=True) on the [B, 4 + nc + 1, A] prediction the OBB
    model makes: per image its kept rows (cx, cy, w, h, score, class, angle)."""
    from trtx.sources import prepare_environment

    prepare_environment()
    from ultralytics.utils.nms import non_max_suppression

    pred = torch.cat([boxes, scores, angles[..., None]], -1).transpose(1, 2)
    out = non_max_suppression(pred, conf, iou, nc=scores.shape[-1], max_det=max_det, rotated=True)
    return [o.numpy() for o in out]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_equals_ultralytics_and_the_host_nms(seed):
    """Same kept boxes in the same order as ultralytics' rotated non_max_suppression (scores without ties, so its
    unstable sort cannot reorder them) and as the host NMS."""
    boxes, scores, angles = obb_head(3, 2000, 15, seed=seed, clustered=seed == 1)
    fields = dict(iou_threshold=0.3 if seed == 2 else 0.7, score_threshold=0.25, max_det=300)
    num, dets = rotated_nms.reference([boxes, scores, angles], **fields)
    theirs = _ultralytics(boxes, scores, angles, fields["score_threshold"], fields["iou_threshold"], 300)
    for b in range(3):
        ours = dets[b, : num[b]].numpy()
        assert len(ours) == len(theirs[b]) > 10
        np.testing.assert_array_equal(ours[:, [0, 1, 2, 3, 4, 5, 6]], theirs[b])
        best, cls = scores[b].max(1)
        cand = torch.nonzero(best > 0.25)[:, 0].numpy()
        rboxes = torch.cat([boxes[b], angles[b, :, None]], 1)[cand].numpy()
        kept = host_nms.rotated_nms(rboxes, best[cand].numpy(), fields["iou_threshold"], cls[cand].numpy(),
                                    max_keep=300)  # fmt: skip
        np.testing.assert_array_equal(cand[kept], ours[:, 7].astype(np.int64))


def test_reference_class_offset_zero_is_agnostic_and_max_det_truncates():
    boxes, scores, angles = obb_head(2, 1500, 4, seed=5, clustered=True)
    aware_num, _ = rotated_nms.reference([boxes, scores, angles], max_det=1000)
    agnostic_num, agnostic = rotated_nms.reference([boxes, scores, angles], max_det=1000, class_offset=0.0)
    assert (agnostic_num < aware_num).all()  # across classes more boxes overlap
    few_num, few = rotated_nms.reference([boxes, scores, angles], max_det=5, class_offset=0.0)
    assert (few_num == 5).all() and torch.equal(few, agnostic[:, :5])
    assert (few[:, :, 4][:, :-1] >= few[:, :, 4][:, 1:]).all()  # best first


def test_kernels_compile_and_the_shape_rule():
    for kernel in rotated_nms.RotatedNms.kernels:
        for dtype in kernel.dtypes:
            for arch in ("sm_75", "sm_86", "sm_90", "sm_120"):
                assert kernel[dtype].compile(arch)
    plugin = rotated_nms.RotatedNms(max_det=100)
    assert plugin.output_shapes((3, 8400, 4), (3, 8400, 15), (3, 8400)) == [(3,), (3, 100, 8)]
    with pytest.raises(PluginError, match="takes boxes \\[B, A, 4\\]"):
        plugin.output_shapes((3, 8400, 5), (3, 8400, 15), (3, 8400))
    with pytest.raises(PluginError, match="'max_det' must be >= 1"):
        rotated_nms.RotatedNms(max_det=0)


# ---- on a GPU -----------------------------------------------------------------------------------------------
@pytest.fixture
def seed():
    value = random.SystemRandom().randrange(2**31)
    print(f"seed {value}")
    return value


def _unpoisoned(num, dets):
    assert (num != torch.iinfo(num.dtype).min).all() and not dets.isnan().any(), "an output element was never written"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kind", ["spread", "clustered", "ties"])
def test_kernel_equals_reference(batch, dtype, kind, seed):
    inputs = [t.to("cuda", dtype) for t in obb_head(batch, 8400, 15, seed=seed, clustered=kind != "spread",
                                                    ties=kind == "ties")]  # fmt: skip
    for fields in ({}, {"iou_threshold": 0.3, "max_det": 50}, {"class_offset": 0.0, "score_threshold": 0.5}):
        num, dets = rotated_nms.run(inputs, **fields)
        _unpoisoned(num, dets)
        want_num, want = rotated_nms.reference(inputs, **fields)
        assert torch.equal(num, want_num), (fields, num, want_num)
        assert torch.equal(dets, want), fields  # same boxes, same order, bit for bit
        assert (num > 0).all()


@pytest.mark.gpu
def test_kernel_images_of_a_batch_are_independent(seed):
    inputs = [t.cuda() for t in obb_head(8, 2100, 15, seed=seed, clustered=True)]
    num, dets = rotated_nms.run(inputs)
    for b in range(8):
        one_num, one = rotated_nms.run([t[b : b + 1].contiguous() for t in inputs])
        assert one_num[0] == num[b] and torch.equal(one[0], dets[b])


@pytest.mark.gpu
def test_kernel_without_candidates_writes_zeros(seed):
    boxes, scores, angles = (t.cuda() for t in obb_head(3, 500, 4, seed=seed))
    num, dets = rotated_nms.run([boxes, scores * 0, angles])
    assert (num == 0).all() and (dets == 0).all()
