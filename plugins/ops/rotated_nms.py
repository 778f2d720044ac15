"""rotated_nms: NMS of rotated boxes per image on the GPU, as ultralytics does it for its OBB models.

Input: one ``(num, dets)`` pair -- ``num`` int32 ``[B]``, ``dets`` float32 ``[B, rows, 8]`` -- of decoded
records ``cx, cy, w, h, score, class, angle, anchor_index`` (:mod:`plugins.dfl_decode` with ``angle``; the
first ``min(num[b], rows)`` rows of image ``b`` are valid, in any order).

Per image: the valid records with ``score > score_threshold`` are candidates, in priority order score
descending, then anchor index. ultralytics' ``non_max_suppression(rotated=True)``: each box's center is moved by
``class x class_offset`` (its ``max_wh``, 7680: boxes of different classes then never overlap; 0 =
class-agnostic), and a candidate is dropped when *any* candidate before it -- kept or dropped -- has a
probabilistic IoU (``batch_probiou``: 1 - Hellinger distance of the boxes' Gaussians) above ``iou_threshold``
with it (``TorchNMS.fast_nms``: Fast NMS, not greedy). All arithmetic in float32, one rounding per operation as
torch's eager ops.

Outputs: ``num`` int32 ``[B]`` and ``dets`` float32 ``[B, max_det, 8]``: the first ``max_det`` kept records in
priority order, unchanged, then zeros. The work is quadratic in the candidates of an image (no sort: each
candidate compares itself with every other).
"""

from pathlib import Path

from plugins.core import AotLaunch, Float, Input, Int, Kernel, Output, Plugin, PluginError, blocks, known, memset32

RECORD = 8
TILE = 256  # TILE in rotated_nms.cu
AOT_BLOCK = 512  # threads per image in the ahead-of-time kernel (one block per image)
_SOURCE = Path(__file__).with_name("rotated_nms.cu")
_OPTIONS = ("--fmad=false",)
GATHER = Kernel(_SOURCE, "rotated_gather", options=_OPTIONS)
SUPPRESS = Kernel(_SOURCE, "rotated_suppress", options=_OPTIONS)
OUTPUT = Kernel(_SOURCE, "rotated_output", options=_OPTIONS)


def _align(n: int) -> int:
    return (n + 255) // 256 * 256


class RotatedNms(Plugin):
    """ultralytics' rotated NMS (probiou Fast NMS, class offset) per image over decoded OBB records."""

    name, version, namespace = "rotated_nms", "1", "trtx"
    iou_threshold = Float(0.7, "drop a box whose probiou with a box of higher priority is above this")
    score_threshold = Float(0.25, "candidates: records with score above this")
    max_det = Int(300, "boxes kept per image")
    class_offset = Float(7680.0, "centers move by class x this before the IoU (ultralytics' max_wh); 0: agnostic")
    inputs = [Input("num", "int32"), Input("dets", "float32")]
    outputs = [Output("num", "int32"), Output("dets", "float32")]
    kernels = [GATHER, SUPPRESS, OUTPUT]

    def validate(self):
        if self.max_det < 1:
            raise PluginError(f"plugin rotated_nms: field 'max_det' must be >= 1, got {self.max_det}")

    def output_shapes(self, num, dets):
        if len(num) != 1 or len(dets) != 3 or known(dets[2]) not in (None, RECORD):
            raise PluginError(f"plugin rotated_nms takes num [B] and dets [B, rows, {RECORD}], got {num}, {dets}")
        return [(num[0],), (num[0], self.max_det, RECORD)]

    def workspace_size(self, shapes, dtypes):
        n = shapes[1][0] * shapes[1][1]  # batch x rows
        return _align(n * 8) + _align(n * 5 * 4) + _align(n)

    def enqueue(self, inputs, outputs, workspace, stream):
        num, dets = inputs
        self.output_shapes(num.shape, dets.shape)
        batch, rows, _ = dets.shape
        if batch > 65535:
            raise PluginError(f"plugin rotated_nms: batch {batch} exceeds 65535")
        n = batch * rows
        keys = workspace
        gauss = keys + _align(n * 8)
        kept = gauss + _align(n * 5 * 4)
        out_num, out_dets = outputs
        memset32(out_num, 0, batch, stream)
        memset32(out_dets, 0, batch * self.max_det * RECORD, stream)
        GATHER.launch_1d(n, [num, dets, batch, rows, self.score_threshold, self.class_offset, gauss, keys], stream)
        grid = (blocks(rows, TILE), batch)
        SUPPRESS.launch(grid, TILE, [keys, gauss, rows, self.iou_threshold, kept], stream)
        OUTPUT.launch(grid, TILE, [keys, kept, dets, rows, self.max_det, out_num, out_dets], stream)

    def aot_launch(self, shapes, dtypes):
        rows = shapes[1][1]  # two shared bytes per row: candidate, kept
        return AotLaunch(GATHER, "rotated_nms_aot", grid=shapes[0][0], block=AOT_BLOCK, args=[rows],
                         shared_mem=2 * rows)  # fmt: skip

    def reference(self, inputs):
        import torch

        num, dets = inputs
        self.output_shapes(tuple(num.shape), tuple(dets.shape))
        batch, dev = dets.shape[0], dets.device
        out_num = torch.zeros(batch, dtype=torch.int32, device=dev)
        out = torch.zeros(batch, self.max_det, RECORD, dtype=torch.float32, device=dev)
        for b in range(batch):
            r = dets[b, : min(int(num[b]), dets.shape[1])].float()
            r = r[r[:, 4] > self.score_threshold]
            r = r[torch.argsort(r[:, 7], stable=True)]  # least significant key first
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
