"""rotated_nms: NMS of rotated boxes per image on the GPU, as ultralytics does it for its OBB models.

Inputs (fp32 or fp16, one dtype): ``boxes`` ``[B, A, 4]`` (cx, cy, w, h), ``scores`` ``[B, A, nc]`` (every
class's score), ``angles`` ``[B, A]`` (radians) -- an OBB head's decoded outputs.

Per image: each anchor's best class (the first of equal maxima) and score; the anchors with ``score >
score_threshold`` are candidates, in priority order score descending, then anchor index. ultralytics'
``non_max_suppression(rotated=True)``: each box's center is moved by ``class x class_offset`` (its ``max_wh``,
7680: boxes of different classes then never overlap; 0 = class-agnostic), and a candidate is dropped when *any*
candidate before it -- kept or dropped -- has a probabilistic IoU (``batch_probiou``: 1 - Hellinger distance of
the boxes' Gaussians) above ``iou_threshold`` with it (``TorchNMS.fast_nms``: Fast NMS, not greedy). The first
``max_det`` kept ones are the result. All arithmetic in float32, one rounding per operation as torch's.

Outputs: ``num`` int32 ``[B]`` and ``dets`` float32 ``[B, max_det, 8]``: records ``cx, cy, w, h, score, class,
angle, anchor_index`` of the kept boxes in priority order (boxes unshifted), then zeros. The work is
quadratic in the candidates of an image (no sort: every candidate compares itself with all others).
"""

from pathlib import Path

from plugins.core import Float, Input, Int, Kernel, Output, Plugin, PluginError, blocks, known, memset32

RECORD = 8
TILE = 256  # TILE in rotated_nms.cu
_SOURCE = Path(__file__).with_name("rotated_nms.cu")
_OPTIONS = ("--fmad=false",)
GATHER = Kernel(_SOURCE, "rotated_gather", dtypes=("float32", "float16"), options=_OPTIONS)
SUPPRESS = Kernel(_SOURCE, "rotated_suppress", dtypes=("float32",), options=_OPTIONS)
OUTPUT = Kernel(_SOURCE, "rotated_output", dtypes=("float32",), options=_OPTIONS)


def _align(n: int) -> int:
    return (n + 255) // 256 * 256


class RotatedNms(Plugin):
    """ultralytics' rotated NMS (probiou Fast NMS, class offset) per image over an OBB head's outputs."""

    name, version, namespace = "rotated_nms", "1", "trtx"
    iou_threshold = Float(0.7, "drop a box whose probiou with a box of higher priority is above this")
    score_threshold = Float(0.25, "candidates: best class score above this")
    max_det = Int(300, "boxes kept per image")
    class_offset = Float(7680.0, "centers move by class x this before the IoU (ultralytics' max_wh); 0: agnostic")
    inputs = [
        Input("boxes", ("float32", "float16")),
        Input("scores", ("float32", "float16"), same_as="boxes"),
        Input("angles", ("float32", "float16"), same_as="boxes"),
    ]
    outputs = [Output("num", "int32"), Output("dets", "float32")]
    kernels = [GATHER, SUPPRESS, OUTPUT]

    def validate(self):
        if self.max_det < 1:
            raise PluginError(f"plugin rotated_nms: field 'max_det' must be >= 1, got {self.max_det}")

    def output_shapes(self, boxes, scores, angles):
        if len(boxes) != 3 or known(boxes[2]) not in (None, 4) or len(scores) != 3 or len(angles) != 2:
            raise PluginError(f"plugin rotated_nms takes boxes [B, A, 4], scores [B, A, nc] and angles [B, A], got "
                              f"{boxes}, {scores}, {angles}")  # fmt: skip
        return [(boxes[0],), (boxes[0], self.max_det, RECORD)]

    def workspace_size(self, shapes, dtypes):
        n = shapes[0][0] * shapes[0][1]  # batch x anchors
        return _align(n * 8) + _align(n * RECORD * 4) + _align(n * 5 * 4) + _align(n)

    def enqueue(self, inputs, outputs, workspace, stream):
        boxes, scores, angles = inputs
        self.output_shapes(boxes.shape, scores.shape, angles.shape)
        batch, anchors, classes = scores.shape
        if batch > 65535:
            raise PluginError(f"plugin rotated_nms: batch {batch} exceeds 65535")
        n = batch * anchors
        keys = workspace
        cand = keys + _align(n * 8)
        gauss = cand + _align(n * RECORD * 4)
        kept = gauss + _align(n * 5 * 4)
        out_num, out_dets = outputs
        memset32(out_num, 0, batch, stream)
        memset32(out_dets, 0, batch * self.max_det * RECORD, stream)
        args = [boxes, scores, angles, batch, anchors, classes, self.score_threshold, self.class_offset, cand, gauss,
                keys]  # fmt: skip
        GATHER[boxes.dtype].launch_1d(n, args, stream)
        grid = (blocks(anchors, TILE), batch)
        SUPPRESS["float32"].launch(grid, TILE, [keys, gauss, anchors, self.iou_threshold, kept], stream)
        OUTPUT["float32"].launch(grid, TILE, [keys, kept, cand, anchors, self.max_det, out_num, out_dets], stream)

    def reference(self, inputs):
        import torch

        boxes, scores, angles = (t.float() for t in inputs)
        self.output_shapes(tuple(boxes.shape), tuple(scores.shape), tuple(angles.shape))
        batch, anchors, _ = scores.shape
        dev = scores.device
        out_num = torch.zeros(batch, dtype=torch.int32, device=dev)
        out = torch.zeros(batch, self.max_det, RECORD, dtype=torch.float32, device=dev)
        index = torch.arange(anchors, device=dev, dtype=torch.float32)
        for b in range(batch):
            best, cls = scores[b].max(1)
            records = torch.stack([*boxes[b].unbind(1), best, cls.float(), angles[b], index], 1)
            r = records[best > self.score_threshold]  # in anchor order: the stable sort keeps it for equal scores
            r = r[torch.argsort(r[:, 4], descending=True, stable=True)]
            shift = r[:, 5:6] * self.class_offset
            ious = probiou(torch.cat([r[:, :2] + shift, r[:, 2:4], r[:, 6:7]], 1))
            kept = r[~(ious.triu(diagonal=1) > self.iou_threshold).any(0)][: self.max_det]
            out[b, : len(kept)] = kept
            out_num[b] = len(kept)
        return [out_num, out]


def probiou(boxes, eps: float = 1e-7):
    """[n, n] probabilistic IoU of rotated boxes [n, 5] (cx, cy, w, h, angle): ultralytics' batch_probiou."""

    x, y = boxes[:, 0:1], boxes[:, 1:2]
    w2, h2 = boxes[:, 2:3].pow(2) / 12, boxes[:, 3:4].pow(2) / 12
    cos, sin = boxes[:, 4:5].cos(), boxes[:, 4:5].sin()
    a, b, c = w2 * cos.pow(2) + h2 * sin.pow(2), w2 * sin.pow(2) + h2 * cos.pow(2), (w2 - h2) * cos * sin
    x2, y2, a2, b2, c2 = (v.T for v in (x, y, a, b, c))
    det = (a + a2) * (b + b2) - (c + c2).pow(2)
    t1 = ((a + a2) * (y - y2).pow(2) + (b + b2) * (x - x2).pow(2)) / (det + eps) * 0.25
    t2 = ((c + c2) * (x2 - x) * (y - y2)) / (det + eps) * 0.5
    root = ((a * b - c.pow(2)).clamp(0) * (a2 * b2 - c2.pow(2)).clamp(0)).sqrt()
    t3 = (det / (4 * root + eps) + eps).log() * 0.5
    bd = (t1 + t2 + t3).clamp(eps, 100.0)
    return 1 - (1.0 - (-bd).exp() + eps).sqrt()


reference = RotatedNms.functional_reference
run = RotatedNms.run
add_to_network = RotatedNms.add_to_network
