"""dfl_decode: ultralytics' YOLOv8 / YOLO11 Detect (or OBB) decode fused with the confidence filter, on the GPU.

Input ``head``: ``[B, 4·reg_max + nc (+ 1), A]`` (fp32 or fp16), the head's outputs over all levels as
``Detect.forward_head`` concatenates them -- the box distributions (``boxes``), the class logits (``scores``)
and, with ``angle``, the OBB angle in radians (``angle``, already ``(sigmoid - 1/4)·π``) -- along channels.
Anchors are the cells of the levels ``strides`` at the input size ``height x width``, level by level, rows then
columns (``make_anchors``).

Per image and anchor, in fp32 (``Detect._inference``): each side's distance is the expectation of the softmax
over its ``reg_max`` bins (the DFL, whose 1x1 conv has the fixed weights 0 .. reg_max-1), ``dist2bbox`` (center
and size; OBB: ``dist2rbox``, the center offset rotated by the angle) times the stride; score = sigmoid of the
best class logit (the first of equal maxima). A candidate is kept when ``score > conf_threshold``.

Outputs per image (independent of the batch's other images): ``num`` int32 ``[B]`` (candidates that passed; may
exceed ``max_det``, then ``max_det`` of them were stored, which ones depending on thread timing) and ``dets``
float32 ``[B, max_det, 8]``: records ``cx, cy, w, h, score, class, angle (0 without), anchor_index`` in slots
``0 .. min(num, max_det)-1`` in no particular order, zeros after -- what :mod:`plugins.nms` (axis-aligned) and
:mod:`plugins.rotated_nms` take.
"""

from pathlib import Path

import numpy as np

from plugins.core import AotLaunch, Bool, Float, Input, Int, Ints, Kernel, Output, Plugin, PluginError, known, memset32

RECORD = 8
MAX_LEVELS = 8  # DFL_MAX_LEVELS in dfl_decode.cu
AOT_BLOCK = 512  # threads per image in the ahead-of-time kernel (one block per image)
KERNEL = Kernel(
    Path(__file__).with_name("dfl_decode.cu"), "dfl_decode", dtypes=("float32", "float16"), options=("--fmad=false",)
)


class DflDecode(Plugin):
    """YOLOv8 / YOLO11 head decode (DFL, boxes or rotated boxes, best class) + confidence filter, per image."""

    name, version, namespace = "dfl_decode", "1", "trtx"
    num_classes = Int(80, "number of classes (nc)")
    reg_max = Int(16, "bins of each side's distance distribution")
    strides = Ints((8, 16, 32), "the levels' strides in pixels, in the order the head concatenates them")
    height = Int(640, "input height in pixels")
    width = Int(640, "input width in pixels")
    angle = Bool(False, "OBB: the last channel is the angle, boxes are rotated (dist2rbox)")
    conf_threshold = Float(0.25, "keep records whose best class score is above this")
    max_det = Int(1000, "records stored per image")
    inputs = [Input("head", ("float32", "float16"))]
    outputs = [Output("num", "int32"), Output("dets", "float32")]
    kernels = [KERNEL]

    @property
    def anchors(self) -> int:
        return sum((self.height // s) * (self.width // s) for s in self.strides)

    def validate(self):
        if not 1 <= len(self.strides) <= MAX_LEVELS or any(s < 1 for s in self.strides):
            raise PluginError(f"plugin dfl_decode: field 'strides' needs 1 to {MAX_LEVELS} positive values, got "
                              f"{self.strides}")  # fmt: skip
        if self.num_classes < 1 or self.reg_max < 1 or self.max_det < 1 or self.anchors >= 2**24:
            raise PluginError(f"plugin dfl_decode: needs num_classes, reg_max, max_det >= 1 and fewer than 2^24 "
                              f"anchors, got {self}")  # fmt: skip
        self._levels = np.zeros(MAX_LEVELS, dtype=np.int32)  # struct DflLevels, by value
        self._levels[: len(self.strides)] = self.strides

    @property
    def channels(self) -> int:
        return 4 * self.reg_max + self.num_classes + int(self.angle)

    def output_shapes(self, head):
        if len(head) != 3:
            raise PluginError(f"plugin dfl_decode: head must be [B, C, A], got rank {len(head)}")
        channels, anchors = known(head[1]), known(head[2])
        if channels is not None and channels != self.channels:
            raise PluginError(f"plugin dfl_decode: head has {channels} channels, expected 4 x reg_max + nc"
                              f"{' + 1 (angle)' if self.angle else ''} = {self.channels}")  # fmt: skip
        if anchors is not None and anchors != self.anchors:
            raise PluginError(f"plugin dfl_decode: head has {anchors} anchors, strides {self.strides} at "
                              f"{self.height}x{self.width} make {self.anchors}")  # fmt: skip
        return [(head[0],), (head[0], self.max_det, RECORD)]

    def enqueue(self, inputs, outputs, workspace, stream):
        head, (num, dets) = inputs[0], outputs
        batch = head.shape[0]
        self.output_shapes(head.shape)
        memset32(num, 0, batch, stream)
        memset32(dets, 0, dets.numel, stream)
        args = [head, num, dets, batch, self.anchors, self.reg_max, self.num_classes, self.height, self.width,
                self._levels, int(self.angle), self.conf_threshold, self.max_det]  # fmt: skip
        KERNEL[head.dtype].launch_1d(batch * self.anchors, args, stream)

    def aot_launch(self, shapes, dtypes):
        batch, _, anchors = shapes[0]
        return AotLaunch(KERNEL, "dfl_decode_aot", grid=batch, block=AOT_BLOCK, args=[anchors], dtype=dtypes[0])

    def reference(self, inputs):
        import torch

        (head,) = inputs
        self.output_shapes(tuple(head.shape))
        batch, dev, r, nc = head.shape[0], head.device, self.reg_max, self.num_classes
        x = head.float()
        bins = x[:, : 4 * r].view(batch, 4, r, -1).softmax(2)
        dist = (bins * torch.arange(r, device=dev, dtype=torch.float32).view(1, 1, r, 1)).sum(2)  # [B, 4, A]
        points, strides = [], []
        for s in self.strides:
            ny, nx = self.height // s, self.width // s
            gy, gx = torch.meshgrid(torch.arange(ny, device=dev), torch.arange(nx, device=dev), indexing="ij")
            points.append(torch.stack([gx.reshape(-1), gy.reshape(-1)]).float() + 0.5)
            strides.append(torch.full((ny * nx,), float(s), device=dev))
        ax, ay = torch.cat(points, 1)
        stride = torch.cat(strides)
        left, top, right, bottom = dist.unbind(1)
        if self.angle:
            theta = x[:, 4 * r + nc]
            xf, yf = (right - left) / 2, (bottom - top) / 2
            cx = (xf * theta.cos() - yf * theta.sin() + ax) * stride
            cy = (xf * theta.sin() + yf * theta.cos() + ay) * stride
            w, h = (left + right) * stride, (top + bottom) * stride
        else:
            x1, y1, x2, y2 = ax - left, ay - top, ax + right, ay + bottom
            cx, cy, w, h = (x1 + x2) / 2 * stride, (y1 + y2) / 2 * stride, (x2 - x1) * stride, (y2 - y1) * stride
            theta = torch.zeros_like(cx)
        best, cls = x[:, 4 * r : 4 * r + nc].max(1)
        score = torch.sigmoid(best)
        index = torch.arange(head.shape[2], device=dev, dtype=torch.float32).expand_as(score)
        records = torch.stack([cx, cy, w, h, score, cls.float(), theta, index], -1)
        keep = score > self.conf_threshold
        dets = torch.zeros(batch, self.max_det, RECORD, dtype=torch.float32, device=dev)
        for b in range(batch):
            kept = records[b][keep[b]][: self.max_det]  # in anchor order; the GPU's order is arbitrary
            dets[b, : len(kept)] = kept
        return [keep.sum(dim=1).to(torch.int32), dets]


reference = DflDecode.functional_reference
run = DflDecode.run
add_to_network = DflDecode.add_to_network
