"""The torch references against the code they stand for: YOLOv5 v7.0's Detect head and torchvision's NMS."""

from __future__ import annotations

import pytest
import torch
from plugin_cases import ANCHORS, STRIDES, clustered_records, random_head

from plugins import nms, swish, yolo_decode

SIZES = ((32, 32), (16, 16), (8, 8))  # a 256x256 input


@pytest.fixture(scope="module")
def detect():
    """YOLOv5's own Detect head with identity convs: its output is the decode of the raw head we feed it."""
    from yolov5.models.yolo import Detect

    head = Detect(nc=80, anchors=ANCHORS, ch=(4, 4, 4))
    head.m = torch.nn.ModuleList([torch.nn.Identity()] * 3)
    head.stride = torch.tensor(STRIDES, dtype=torch.float32)
    head.anchors /= head.stride.view(-1, 1, 1)  # as yolov5's Model.__init__ does
    return head.eval()


@pytest.mark.parametrize("batch", [1, 3])
def test_decode_reference_equals_yolov5_detect(detect, batch):
    heads = [random_head(batch, h, w, seed=10 * batch + i, obj_shift=-2.0) for i, (h, w) in enumerate(SIZES)]
    with torch.no_grad():
        z, _ = detect([x.clone() for x in heads])  # [B, sum(na*H*W), 85]: xywh, obj, class probabilities
    offset, total = 0, 0
    for level, (head, (h, w)) in enumerate(zip(heads, SIZES)):
        num, dets = yolo_decode.reference(
            [head], anchors=ANCHORS[level], stride=STRIDES[level], max_det=10000, level=level
        )
        zl = z[:, offset : offset + 3 * h * w]
        offset += 3 * h * w
        score, cls = (zl[..., 5:] * zl[..., 4:5]).max(-1)  # yolov5's non_max_suppression: conf = obj * cls
        keep = (zl[..., 4] > 0.25) & (score > 0.25)
        for b in range(batch):
            idx = keep[b].nonzero().squeeze(1)
            n = int(num[b])
            assert n == len(idx) > 0
            r = dets[b, :n]
            assert torch.equal(r[:, 7].long(), idx)
            assert torch.equal(r[:, :4], zl[b, idx, :4])  # bit-exact geometry
            assert torch.equal(r[:, 4], score[b, idx])
            assert torch.equal(r[:, 5].long(), cls[b, idx])
            assert (r[:, 6] == level).all()
            assert not dets[b, n:].any()
            total += n
    assert total > 100


def test_decode_reference_counts_past_max_det_and_is_per_image():
    head = random_head(3, 20, 20, obj_shift=-1.0)
    fields = dict(anchors=ANCHORS[2], stride=32, max_det=50)
    num, dets = yolo_decode.reference([head], **fields)
    full_num, full = yolo_decode.reference([head], **{**fields, "max_det": 2000})
    assert torch.equal(num, full_num) and (num > 50).all()  # num counts every candidate
    assert torch.equal(dets, full[:, :50])
    for b in range(3):
        one_num, one = yolo_decode.reference([head[b : b + 1]], **fields)
        assert int(one_num) == int(num[b]) and torch.equal(one[0], dets[b])


def test_decode_reference_fp16_input_is_decoded_in_fp32():
    head = random_head(2, 8, 8, obj_shift=-2.0).half()
    num, dets = yolo_decode.reference([head], anchors=ANCHORS[0], stride=8)
    num32, dets32 = yolo_decode.reference([head.float()], anchors=ANCHORS[0], stride=8)
    assert dets.dtype == torch.float32 and torch.equal(num, num32) and torch.equal(dets, dets32)


def _torchvision_nms(r: torch.Tensor, iou: float, score_threshold: float) -> torch.Tensor:
    import torchvision

    boxes = torch.cat([r[:, :2] - r[:, 2:4] * 0.5, r[:, :2] + r[:, 2:4] * 0.5], 1)
    idx = torch.nonzero(r[:, 4] > score_threshold).squeeze(1)
    kept = []
    for cls in r[idx, 5].unique():
        sel = idx[r[idx, 5] == cls]
        kept.append(sel[torchvision.ops.nms(boxes[sel], r[sel, 4], iou)])
    kept = torch.cat(kept)
    return kept[torch.argsort(r[kept, 4], descending=True, stable=True)]


@pytest.mark.parametrize("seed", range(5))
def test_nms_reference_equals_torchvision(seed):
    num, dets = clustered_records(2, 400, seed=seed, tie_scores=False)
    out_num, out = nms.reference([num, dets], iou_threshold=0.45, score_threshold=0.3, max_det=1000)
    for b in range(2):
        r = dets[b, : int(num[b])]
        want = _torchvision_nms(r, 0.45, 0.3)
        n = int(out_num[b])
        assert 0 < n == len(want)
        assert torch.equal(out[b, :n], r[want])  # same boxes, same order, records unchanged
        assert not out[b, n:].any()


def test_nms_reference_order_is_total_and_class_aware():
    num, dets = clustered_records(1, 300, seed=3)  # scores rounded: many ties
    second = dets.clone()
    second[..., 0] += 1000  # a second input (level 1) of boxes that overlap none of the first's
    second[..., 6] = 1
    out_num, out = nms.reference([num, dets, num, second], max_det=1000, iou_threshold=0.99)
    kept = out[0, : int(out_num[0])]
    keys = list(zip((-kept[:, 4]).tolist(), kept[:, 6].tolist(), kept[:, 7].tolist()))
    assert len(kept) > 500 and len(set(kept[:, 4].tolist())) < len(kept) / 4  # many score ties
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # score desc, then input, then anchor_index
    agnostic_num, _ = nms.reference([num, dets], iou_threshold=0.3, agnostic=True)
    aware_num, _ = nms.reference([num, dets], iou_threshold=0.3, agnostic=False)
    assert int(agnostic_num[0]) < int(aware_num[0])


def test_swish_reference():
    x = torch.randn(3, 5)
    (y,) = swish.reference([x], beta=2.0)
    assert torch.allclose(y, x * torch.sigmoid(2 * x))
    (h,) = swish.reference([x.half()])
    assert h.dtype == torch.float16
