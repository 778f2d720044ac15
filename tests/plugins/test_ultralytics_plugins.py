"""dfl_decode and rotated_nms (ultralytics' YOLOv8/YOLO11 decode and its OBB NMS as plugins): the torch references
against ultralytics' own code and the host NMS (trtx.nms.rotated_nms) on the CPU; the kernels against the
references on a GPU (fresh random inputs, poisoned outputs, batch 1/3/8, fp32/fp16 heads). Under compute-sanitizer:

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python -m pytest -q -m gpu \\
        tests/plugins/test_ultralytics_plugins.py
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from plugins import dfl_decode, nms, rotated_nms
from plugins.core import PluginError
from trtx import nms as host_nms

BATCHES = [1, 3, 8]
NC = 15


def raw_head(batch: int, *, obb: bool, seed: int, size: int = 640, nc: int = NC, clustered: bool = False,
             ties: bool = False) -> torch.Tensor:  # fmt: skip
    """A head's outputs [B, 64 + nc (+ 1), A] at ``size`` x ``size``: box logits, class logits (a few hundred
    anchors per image above 0.25; ties: rounded so that scores repeat), the angle in [-pi/4, 3pi/4) for OBB.
    clustered: the box logits favour short distances around few peaks, so that many boxes overlap."""
    g = torch.Generator().manual_seed(seed)
    a = sum((size // s) ** 2 for s in (8, 16, 32))
    boxes = torch.randn(batch, 64, a, generator=g) * 2
    if clustered:
        boxes[:, :, : a // 2] = boxes[:, :, : a // 2] * 0.2 + torch.linspace(3, -3, 16).repeat(4)[None, :, None]
    scores = torch.randn(batch, nc, a, generator=g) * 1.5 - 5
    if ties:
        scores = (scores * 4).round() / 4
    parts = [boxes, scores]
    if obb:
        parts.append((torch.sigmoid(torch.randn(batch, 1, a, generator=g)) - 0.25) * math.pi)
    return torch.cat(parts, 1)


def _decode_fields(obb: bool, **kw) -> dict:
    return {"num_classes": NC, "height": 640, "width": 640, "angle": obb, "max_det": 8400, **kw}


def _ultralytics_head(obb: bool):
    """ultralytics' own Detect / OBB head for three levels (8, 16, 32) of a 640 input, nc classes."""
    from trtx.sources import prepare_environment

    prepare_environment()
    from ultralytics.nn.modules.head import OBB, Detect

    head = (OBB(NC, 1, ch=(16, 32, 64)) if obb else Detect(NC, ch=(16, 32, 64))).eval()
    head.stride = torch.tensor([8.0, 16.0, 32.0])
    return head


def _ultralytics_y(head_module, raw: torch.Tensor, obb: bool) -> torch.Tensor:
    """Detect._inference on ``raw``: ultralytics' decoded prediction [B, 4 + nc (+ 1), A]."""
    feats = [torch.zeros(1, 1, 640 // s, 640 // s) for s in (8, 16, 32)]
    preds = {"boxes": raw[:, :64], "scores": raw[:, 64 : 64 + NC], "feats": feats}
    if obb:
        preds["angle"] = raw[:, 64 + NC :]
    with torch.no_grad():
        return head_module._inference(preds)


@pytest.mark.parametrize("obb", [False, True], ids=["detect", "obb"])
def test_decode_reference_equals_ultralytics_inference(obb):
    """Boxes (center, size, the rotated box's for OBB) within 1e-6 of their scale, scores, classes and angles
    equal, the same candidates: ultralytics' Detect._inference and the best-class filter of its NMS."""
    raw = raw_head(2, obb=obb, seed=3)
    y = _ultralytics_y(_ultralytics_head(obb), raw, obb).transpose(1, 2)
    num, dets = dfl_decode.reference([raw], **_decode_fields(obb))
    for b in range(2):
        best, cls = y[b, :, 4 : 4 + NC].max(1)
        want = torch.nonzero(best > 0.25)[:, 0]
        r = dets[b, : num[b]]
        assert 100 < len(r) == len(want) and torch.equal(r[:, 7].long(), want)
        scale = y[b, want, :4].abs().max()
        assert (r[:, :4] - y[b, want, :4]).abs().max() <= 1e-6 * scale
        assert torch.equal(r[:, 4], best[want]) and torch.equal(r[:, 5], cls[want].float())
        assert torch.equal(r[:, 6], y[b, want, -1] if obb else torch.zeros(len(r)))


def _records(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(num, dets) records of every anchor of ultralytics' OBB prediction y [B, 4 + nc + 1, A]."""
    t = y.transpose(1, 2)
    best, cls = t[..., 4 : 4 + NC].max(-1)
    index = torch.arange(t.shape[1], dtype=torch.float32).expand_as(best)
    dets = torch.stack([*t[..., :4].unbind(-1), best, cls.float(), t[..., -1], index], -1)
    return torch.full((len(t),), t.shape[1], dtype=torch.int32), dets.contiguous()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotated_nms_reference_equals_ultralytics_and_the_host_nms(seed):
    """On ultralytics' own decoded OBB prediction: the same kept boxes in the same order as its
    non_max_suppression(rotated=True), and as the host NMS. (Class scores here tie nowhere, so its unstable sort
    cannot reorder them.)"""
    from ultralytics.utils.nms import non_max_suppression

    raw = raw_head(3, obb=True, seed=seed, clustered=seed == 1)
    y = _ultralytics_y(_ultralytics_head(True), raw, True)
    iou = 0.3 if seed == 2 else 0.7
    theirs = non_max_suppression(y, 0.25, iou, nc=NC, max_det=300, rotated=True, max_time_img=60)  # no time limit
    num, dets = rotated_nms.reference(list(_records(y)), iou_threshold=iou, max_det=300)
    for b in range(3):
        ours = dets[b, : num[b]].numpy()
        assert len(ours) == len(theirs[b]) > 10
        np.testing.assert_array_equal(ours[:, :7], theirs[b].numpy())
        t = y[b].T.numpy()
        best, cls = t[:, 4 : 4 + NC].max(1), t[:, 4 : 4 + NC].argmax(1)
        cand = np.nonzero(best > np.float32(0.25))[0]
        kept = host_nms.rotated_nms(np.concatenate([t[cand, :4], t[cand, -1:]], 1), best[cand], iou, cls[cand],
                                    max_keep=300)  # fmt: skip
        np.testing.assert_array_equal(cand[kept], ours[:, 7].astype(np.int64))


def test_rotated_nms_reference_class_offset_zero_is_agnostic_and_max_det_truncates():
    inputs = list(dfl_decode.reference([raw_head(2, obb=True, seed=5, clustered=True)], **_decode_fields(True)))
    aware_num, _ = rotated_nms.reference(inputs, max_det=1000)
    agnostic_num, agnostic = rotated_nms.reference(inputs, max_det=1000, class_offset=0.0)
    assert (agnostic_num < aware_num).all()  # across classes more boxes overlap
    few_num, few = rotated_nms.reference(inputs, max_det=5, class_offset=0.0)
    assert (few_num == 5).all() and torch.equal(few, agnostic[:, :5])
    assert (few[:, :, 4][:, :-1] >= few[:, :, 4][:, 1:]).all()  # best first


def test_kernels_compile_and_shape_rules():
    for plugin in (dfl_decode.DflDecode, rotated_nms.RotatedNms):
        for kernel in plugin.kernels:
            for dtype in kernel.dtypes or [None]:
                for arch in ("sm_75", "sm_86", "sm_90", "sm_120"):
                    assert (kernel[dtype] if dtype else kernel).compile(arch)
    decode = dfl_decode.DflDecode(num_classes=NC, angle=True, max_det=100)
    assert decode.output_shapes((3, 64 + NC + 1, 8400)) == [(3,), (3, 100, 8)]
    with pytest.raises(PluginError, match="head has 79 channels, expected 4 x reg_max \\+ nc \\+ 1 \\(angle\\) = 80"):
        decode.output_shapes((3, 79, 8400))
    with pytest.raises(PluginError, match="head has 2100 anchors, strides \\(8, 16, 32\\) at 640x640 make 8400"):
        decode.output_shapes((3, 80, 2100))
    assert rotated_nms.RotatedNms(max_det=7).output_shapes((3,), (3, 500, 8)) == [(3,), (3, 7, 8)]
    with pytest.raises(PluginError, match="takes num \\[B\\] and dets \\[B, rows, 8\\]"):
        rotated_nms.RotatedNms().output_shapes((3,), (3, 500, 7))


# ---- on a GPU -----------------------------------------------------------------------------------------------
@pytest.fixture
def seed():
    value = random.SystemRandom().randrange(2**31)
    print(f"seed {value}")
    return value


@pytest.fixture(params=[False, True], ids=["enqueue", "aot"])
def aot(request):
    """Run through the IPluginV3 launch code (False) or the ahead-of-time contract (True)."""
    return request.param


def _unpoisoned(num, dets):
    assert (num != torch.iinfo(num.dtype).min).all() and not dets.isnan().any(), "an output element was never written"


def _by_anchor(num, dets, b):
    r = dets[b, : min(int(num[b]), dets.shape[1])]
    return r[torch.argsort(r[:, 7])]


@pytest.mark.gpu
@pytest.mark.parametrize("obb", [False, True], ids=["detect", "obb"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("batch", BATCHES)
def test_decode_kernel_equals_reference(batch, dtype, obb, seed, aot):
    head = raw_head(batch, obb=obb, seed=seed).to("cuda", dtype)
    num, dets = dfl_decode.run([head], aot=aot, **_decode_fields(obb))
    _unpoisoned(num, dets)
    want_num, want = dfl_decode.reference([head], **_decode_fields(obb))
    assert torch.equal(num, want_num) and (num > 100).all()
    for b in range(batch):
        got, ref = _by_anchor(num, dets, b), _by_anchor(want_num, want, b)  # the kernel's slots are in any order
        assert torch.equal(got[:, [5, 7]], ref[:, [5, 7]])
        scale = ref[:, :4].abs().max()
        torch.testing.assert_close(got[:, :4], ref[:, :4], rtol=0, atol=1e-6 * float(scale))
        torch.testing.assert_close(got[:, [4, 6]], ref[:, [4, 6]], rtol=1e-6, atol=1e-7)
    assert (dets[:, int(num.max()) :] == 0).all()  # zeros after the stored records


@pytest.mark.gpu
def test_decode_kernel_truncates_at_max_det_and_images_are_independent(seed, aot):
    head = raw_head(8, obb=False, seed=seed).cuda()
    num, dets = dfl_decode.run([head], aot=aot, **_decode_fields(False, max_det=40))
    all_num, _ = dfl_decode.run([head], aot=aot, **_decode_fields(False))
    assert torch.equal(num, all_num) and (num > 40).all()  # counted past max_det, 40 stored
    assert (dets[:, :, 4] > 0.25).all()
    for b in (0, 5):
        one_num, one = dfl_decode.run([head[b : b + 1].contiguous()], aot=aot, **_decode_fields(False))
        full_num, full = dfl_decode.run([head], aot=aot, **_decode_fields(False))
        assert one_num[0] == full_num[b] and torch.equal(_by_anchor(one_num, one, 0), _by_anchor(full_num, full, b))


@pytest.mark.gpu
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kind", ["spread", "clustered", "ties"])
def test_rotated_nms_kernel_equals_reference(batch, kind, seed, aot):
    head = raw_head(batch, obb=True, seed=seed, clustered=kind == "clustered", ties=kind == "ties").cuda()
    inputs = dfl_decode.reference([head], **_decode_fields(True))
    for fields in ({}, {"iou_threshold": 0.3, "max_det": 50}, {"class_offset": 0.0, "score_threshold": 0.5}):
        num, dets = rotated_nms.run(inputs, aot=aot, **fields)
        _unpoisoned(num, dets)
        want_num, want = rotated_nms.reference(inputs, **fields)
        assert torch.equal(num, want_num), (fields, num, want_num)
        assert torch.equal(dets, want), fields  # same boxes, same order, bit for bit
        assert (num > 0).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("batch", BATCHES)
def test_decode_then_nms_kernels_equal_the_references(batch, dtype, seed, aot):
    """The whole GPU post-processing, decode kernel then NMS kernel (OBB: rotated_nms; detect: nms), against the
    references chained: the same kept boxes in the same order (the NMS orders the decode's arbitrary slots)."""
    for obb in (False, True):
        head = raw_head(batch, obb=obb, seed=seed).to("cuda", dtype)
        after = rotated_nms if obb else nms
        num, dets = after.run(list(dfl_decode.run([head], aot=aot, **_decode_fields(obb))), aot=aot)
        _unpoisoned(num, dets)
        want_num, want = after.reference(list(dfl_decode.reference([head], **_decode_fields(obb))))
        assert torch.equal(num, want_num) and (num > 0).all()
        assert torch.equal(dets[..., [5, 7]], want[..., [5, 7]])
        torch.testing.assert_close(dets, want, rtol=1e-6, atol=1e-6 * float(want[..., :4].abs().max()))
