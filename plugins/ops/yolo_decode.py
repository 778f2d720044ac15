"""yolo_decode: one YOLOv5 Detect level decoded and filtered by confidence on the GPU (tensorrtx's YoloLayer).

Input ``head``: the level's raw 1x1-conv output ``[B, na*(5+nc), H, W]`` (fp32 or fp16), channel
``a*(5+nc) + k`` holding item ``k`` of anchor ``a`` (YOLOv5 v7.0's ``view(B, na, 5+nc, H, W)``), items
``x, y, w, h, objectness, class logits...``.

For every image, anchor and cell (sigmoid ``σ``, fp32 arithmetic in YOLOv5's order)::

    cx, cy = (2σ(tx) + (x - 0.5)) · stride, (2σ(ty) + (y - 0.5)) · stride
    w, h   = (2σ(tw))² · anchor_w,  (2σ(th))² · anchor_h            (anchors in pixels)
    score  = σ(objectness) · σ(max class logit),  class = first argmax of the class logits

and a candidate is kept when ``score > conf_threshold`` (NaN logits never are).

Outputs, per image ``b`` (independent of the other images of the batch -- tensorrtx's kernel is not):

* ``num``  int32 ``[B]``: how many candidates passed. It may exceed ``max_det``; then ``max_det`` of them
  were stored, which ones depending on thread timing.
* ``dets`` float32 ``[B, max_det, 8]``: records ``cx, cy, w, h, score, class, level, anchor_index`` in slots
  ``0 .. min(num, max_det)-1`` in no particular order (the GPU's atomic counter); the other slots are zero.
  ``anchor_index = a·H·W + y·W + x`` (exact in float32 below 2^24) identifies the candidate; ``level`` is the
  field of that name (which Detect level this is).
"""

from pathlib import Path

import numpy as np

from plugins.core import AotLaunch, Float, Floats, Input, Int, Kernel, Output, Plugin, PluginError, known, memset32

RECORD = 8
MAX_ANCHORS = 16  # YOLO_MAX_ANCHORS in yolo_decode.cu
AOT_BLOCK = 512  # threads per image in the ahead-of-time kernel (one block per image)
KERNEL = Kernel(
    Path(__file__).with_name("yolo_decode.cu"), "yolo_decode", dtypes=("float32", "float16"), options=("--fmad=false",)
)


class YoloDecode(Plugin):
    """YOLOv5 head decode + confidence filter of one level, per image of the batch."""

    name, version, namespace = "yolo_decode", "1", "trtx"
    num_classes = Int(80, "number of classes (nc)")
    anchors = Floats(doc="this level's anchors in pixels: w0, h0, w1, h1, ...")
    stride = Float(doc="this level's stride in pixels (8, 16, 32 for P3-P5)")
    conf_threshold = Float(0.25, "keep score = objectness x best class probability > this")
    max_det = Int(1000, "records stored per image")
    level = Int(0, "level number written into the records")
    inputs = [Input("head", ("float32", "float16"))]
    outputs = [Output("num", "int32"), Output("dets", "float32")]
    kernels = [KERNEL]

    @property
    def na(self) -> int:
        return len(self.anchors) // 2

    def validate(self):
        if not self.anchors or len(self.anchors) % 2 or self.na > MAX_ANCHORS:
            raise PluginError(
                f"plugin yolo_decode: field 'anchors' needs 2 to {2 * MAX_ANCHORS} values "
                f"(w, h pairs), got {self.anchors}"
            )
        if self.num_classes < 1 or self.max_det < 1 or not self.stride > 0:
            raise PluginError(f"plugin yolo_decode: needs num_classes >= 1, max_det >= 1 and stride > 0, got {self}")
        self._anchor_struct = np.zeros(2 * MAX_ANCHORS, dtype=np.float32)  # struct YoloAnchors, by value
        self._anchor_struct[: len(self.anchors)] = self.anchors

    def output_shapes(self, head):
        if len(head) != 4:
            raise PluginError(f"plugin yolo_decode: head must be [B, C, H, W], got rank {len(head)}")
        channels, h, w = known(head[1]), known(head[2]), known(head[3])
        if channels is not None and channels != self.na * (5 + self.num_classes):
            raise PluginError(
                f"plugin yolo_decode: head has {channels} channels, expected na*(5+nc) = "
                f"{self.na}*(5+{self.num_classes}) = {self.na * (5 + self.num_classes)}"
            )
        if h is not None and w is not None and self.na * h * w >= 2**24:
            raise PluginError(f"plugin yolo_decode: {self.na}x{h}x{w} anchors exceed 2^24 (anchor_index is float32)")
        batch = head[0]
        return [(batch,), (batch, self.max_det, RECORD)]

    def enqueue(self, inputs, outputs, workspace, stream):
        head, (num, dets) = inputs[0], outputs
        batch, _, h, w = head.shape
        self.output_shapes(head.shape)  # validates channels before any memory is touched
        memset32(num, 0, batch, stream)
        memset32(dets, 0, dets.numel, stream)
        args = [head, num, dets, batch, self.na, self.num_classes, h, w, self._anchor_struct, self.stride]
        args += [self.conf_threshold, self.max_det, float(self.level)]
        KERNEL[head.dtype].launch_1d(batch * self.na * h * w, args, stream)

    def aot_launch(self, shapes, dtypes):
        batch, _, h, w = shapes[0]
        return AotLaunch(KERNEL, "yolo_decode_aot", grid=batch, block=AOT_BLOCK, args=[h, w], dtype=dtypes[0],
                         defines={"YOLO_NA": self.na})  # fmt: skip

    def reference(self, inputs):
        import torch

        (head,) = inputs
        self.output_shapes(tuple(head.shape))  # the same checks as the GPU path
        batch, _, h, w = head.shape
        na, nc, dev = self.na, self.num_classes, head.device
        x = head.float().view(batch, na, 5 + nc, h, w)
        obj = torch.sigmoid(x[:, :, 4])
        best = x[:, :, 5:].argmax(dim=2)
        score = obj * torch.sigmoid(x[:, :, 5:].gather(2, best.unsqueeze(2)).squeeze(2))
        keep = (obj > self.conf_threshold) & (score > self.conf_threshold)
        gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        anchors = torch.tensor(self.anchors, dtype=torch.float32, device=dev).view(1, na, 2, 1, 1)
        wh = (torch.sigmoid(x[:, :, 2:4]) * 2) ** 2 * anchors
        records = torch.stack(
            [
                (torch.sigmoid(x[:, :, 0]) * 2 + (gx.float() - 0.5)) * self.stride,
                (torch.sigmoid(x[:, :, 1]) * 2 + (gy.float() - 0.5)) * self.stride,
                wh[:, :, 0],
                wh[:, :, 1],
                score,
                best.float(),
                torch.full_like(score, float(self.level)),
                torch.arange(na * h * w, device=dev, dtype=torch.float32).view(1, na, h, w).expand_as(score),
            ],
            dim=-1,
        ).view(batch, na * h * w, RECORD)
        keep = keep.view(batch, na * h * w)
        dets = torch.zeros(batch, self.max_det, RECORD, dtype=torch.float32, device=dev)
        for b in range(batch):
            kept = records[b][keep[b]][: self.max_det]  # in anchor_index order; the GPU's order is arbitrary
            dets[b, : len(kept)] = kept
        return [keep.sum(dim=1).to(torch.int32), dets]


reference = YoloDecode.functional_reference
run = YoloDecode.run
add_to_network = YoloDecode.add_to_network
