"""retinaface_decode: RetinaFace's heads decoded on the GPU (biubug6's PriorBox + decode + decode_landm + softmax),
fused with the face-score filter; the records feed the ``nms`` plugin.

Inputs (one dtype, fp32 or fp16; A = the number of priors of a ``height`` × ``width`` input):
``loc`` [B, A, 4], ``conf`` [B, A, 2] (class logits: background, face), ``landms`` [B, A, 10] -- the
concatenated BboxHead / ClassHead / LandmarkHead outputs, prior ``a`` in PriorBox order (level, row, column,
size).

The priors are generated in the kernel for the input size, as PriorBox.forward computes them (float64, stored
as float32): center ``((j + 0.5) · step / W, (i + 0.5) · step / H)``, size ``(s / W, s / H)``. Then, in float32
in biubug6's order of operations::

    cx, cy = prior_c + loc[:2] · variance[0] · prior_s        w, h = prior_s · exp(loc[2:] · variance[1])
    x1, y1 = (c - wh / 2) · (W, H)                           x2, y2 = (wh + (c - wh / 2)) · (W, H)
    landmark q = (prior_c + landms[2q : 2q+2] · variance[0] · prior_s) · (W, H)
    score = softmax(conf)[1]

Outputs, per image ``b`` (independent of the other images of the batch):

* ``num`` int32 [B]: how many priors have ``score > conf_threshold`` (NaN never does). It may exceed
  ``max_det``; then ``max_det`` of them were stored, which ones depending on thread timing.
* ``dets`` float32 [B, max_det, 8]: records ``cx, cy, w, h, score, 0, level, prior index`` in input pixels
  (``cx = (x1 + x2) / 2``, ``w = x2 - x1``), in slots ``0 .. min(num, max_det) - 1`` in no particular order (the
  GPU's atomic counter); the other slots are zero. The layout of :mod:`plugins.yolo_decode`, class 0, so the
  ``nms`` plugin takes them as they are.
* ``landmarks`` float32 [B, A, 10]: every prior's 5 decoded landmarks, input pixels (gathered by prior index
  after NMS).
"""

from pathlib import Path

import numpy as np

from plugins.core import (
    AotLaunch,
    Float,
    Floats,
    Input,
    Int,
    Ints,
    Kernel,
    Output,
    Plugin,
    PluginError,
    known,
    memset32,
)

RECORD = 8
MAX_LEVELS = 8  # RF_MAX_LEVELS in retinaface_decode.cu
MAX_SIZES = 32  # RF_MAX_SIZES
AOT_BLOCK = 512  # threads per image in the ahead-of-time kernel (one block per image)
KERNEL = Kernel(
    Path(__file__).with_name("retinaface_decode.cu"),
    "retinaface_decode",
    dtypes=("float32", "float16"),
    options=("--fmad=false",),
)

#: struct RetinaPriors in retinaface_decode.cu (every member 4 bytes: no padding)
PRIORS_DTYPE = np.dtype(
    [
        ("levels", np.int32),
        ("end", np.int32, MAX_LEVELS),
        ("cols", np.int32, MAX_LEVELS),
        ("first", np.int32, MAX_LEVELS),
        ("sizes", np.int32, MAX_LEVELS),
        ("step", np.int32, MAX_LEVELS),
        ("min_size", np.int32, MAX_SIZES),
    ]
)


class RetinafaceDecode(Plugin):
    """RetinaFace prior generation, box / landmark decode, face score and score filter, per image."""

    name, version, namespace = "retinaface_decode", "1", "trtx"
    height = Int(doc="network input height in pixels (the priors are generated for it)")
    width = Int(doc="network input width in pixels")
    steps = Ints((8, 16, 32), "stride of each FPN level, pixels")
    min_sizes = Ints((16, 32, 64, 128, 256, 512), "prior sides, pixels: sizes_per_level per level, level by level")
    sizes_per_level = Int(2, "priors per feature-map cell")
    variance = Floats((0.1, 0.2), "center and size variances")
    conf_threshold = Float(0.5, "keep priors whose face score is above this")
    max_det = Int(5000, "records stored per image")
    inputs = [
        Input("loc", ("float32", "float16")),
        Input("conf", ("float32", "float16"), same_as="loc"),
        Input("landms", ("float32", "float16"), same_as="loc"),
    ]
    outputs = [Output("num", "int32"), Output("dets", "float32"), Output("landmarks", "float32")]
    kernels = [KERNEL]

    def validate(self):
        levels = len(self.steps)
        if not 1 <= levels <= MAX_LEVELS or self.sizes_per_level < 1:
            raise PluginError(f"plugin retinaface_decode: 1 to {MAX_LEVELS} steps and sizes_per_level >= 1, got {self}")
        if len(self.min_sizes) != levels * self.sizes_per_level or len(self.min_sizes) > MAX_SIZES:
            raise PluginError(
                f"plugin retinaface_decode: field 'min_sizes' needs len(steps) x sizes_per_level = "
                f"{levels * self.sizes_per_level} values (at most {MAX_SIZES}), got {len(self.min_sizes)}"
            )
        if min(self.height, self.width) < 1 or min(self.steps) < 1 or min(self.min_sizes) < 1:
            raise PluginError(f"plugin retinaface_decode: height, width, steps and min_sizes must be positive: {self}")
        if len(self.variance) != 2 or self.max_det < 1:
            raise PluginError(f"plugin retinaface_decode: variance needs 2 values and max_det >= 1: {self}")
        if self.num_priors >= 2**24:
            raise PluginError(f"plugin retinaface_decode: {self.num_priors} priors exceed 2^24 (the index is float32)")

    def feature_sizes(self) -> list[tuple[int, int]]:
        return [(-(-self.height // s), -(-self.width // s)) for s in self.steps]

    @property
    def num_priors(self) -> int:
        return sum(h * w for h, w in self.feature_sizes()) * self.sizes_per_level

    def layout(self) -> np.ndarray:
        """The kernel's RetinaPriors argument."""
        p = np.zeros(1, PRIORS_DTYPE)
        n = self.sizes_per_level
        end = 0
        for level, ((rows, cols), step) in enumerate(zip(self.feature_sizes(), self.steps)):
            end += rows * cols * n
            p["end"][0, level], p["cols"][0, level], p["first"][0, level] = end, cols, level * n
            p["sizes"][0, level], p["step"][0, level] = n, step
        p["levels"] = len(self.steps)
        p["min_size"][0, : len(self.min_sizes)] = self.min_sizes
        return p

    def output_shapes(self, loc, conf, landms):
        for name, shape, width in (("loc", loc, 4), ("conf", conf, 2), ("landms", landms, 10)):
            if len(shape) != 3 or known(shape[2]) not in (None, width):
                raise PluginError(f"plugin retinaface_decode: {name} must be [B, priors, {width}], got {shape}")
            priors = known(shape[1])
            if priors is not None and priors != self.num_priors:
                raise PluginError(
                    f"plugin retinaface_decode: {name} has {priors} priors; a {self.height}x{self.width} input has "
                    f"{self.num_priors}"
                )
        batch = loc[0]
        return [(batch,), (batch, self.max_det, RECORD), (batch, self.num_priors, 10)]

    def enqueue(self, inputs, outputs, workspace, stream):
        loc, conf, landms = inputs
        num, dets, landmarks = outputs
        self.output_shapes(loc.shape, conf.shape, landms.shape)  # checks before any memory is touched
        batch = loc.shape[0]
        memset32(num, 0, batch, stream)
        memset32(dets, 0, dets.numel, stream)
        v0, v1 = self.variance
        args = [loc, conf, landms, num, dets, landmarks, batch, self.num_priors, self.layout(), self.height,
                self.width, v0, v1, self.conf_threshold, self.max_det]  # fmt: skip
        KERNEL[loc.dtype].launch_1d(batch * self.num_priors, args, stream)

    def aot_launch(self, shapes, dtypes):
        batch = shapes[0][0]
        layout = "{" + ",".join(str(v) for v in self.layout().view(np.int32).tolist()) + "}"  # all 4-byte ints
        return AotLaunch(KERNEL, "retinaface_decode_aot", grid=batch, block=AOT_BLOCK, args=[batch], dtype=dtypes[0],
                         defines={"RF_LAYOUT": layout, "RF_PRIORS": self.num_priors})  # fmt: skip

    def priors(self, device=None):
        """[A, 4] (cx, cy, w, h) normalized float32, PriorBox's values and order; [A] level of each prior."""
        import torch

        rows = []
        levels = []
        n = self.sizes_per_level
        for level, ((fh, fw), step) in enumerate(zip(self.feature_sizes(), self.steps)):
            sizes = self.min_sizes[level * n : (level + 1) * n]
            for i in range(fh):
                for j in range(fw):
                    for s in sizes:
                        rows.append(((j + 0.5) * step / self.width, (i + 0.5) * step / self.height,
                                     s / self.width, s / self.height))  # fmt: skip
            levels += [level] * (fh * fw * n)
        return (torch.tensor(rows, dtype=torch.float32, device=device).reshape(-1, 4),
                torch.tensor(levels, dtype=torch.float32, device=device))  # fmt: skip

    def reference(self, inputs):
        import torch

        loc, conf, landms = (t.float() for t in inputs)
        self.output_shapes(tuple(loc.shape), tuple(conf.shape), tuple(landms.shape))
        batch, dev = loc.shape[0], loc.device
        priors, level = self.priors(dev)
        center, size = priors[:, :2], priors[:, 2:]
        v0 = torch.tensor(self.variance[0], dtype=torch.float32, device=dev)
        v1 = torch.tensor(self.variance[1], dtype=torch.float32, device=dev)
        scale = torch.tensor([self.width, self.height], dtype=torch.float32, device=dev)
        c = center + loc[..., :2] * v0 * size
        wh = size * torch.exp(loc[..., 2:] * v1)
        x1y1 = (c - wh / 2) * scale
        x2y2 = (wh + (c - wh / 2)) * scale
        points = (center[:, None] + landms.view(batch, -1, 5, 2) * v0 * size[:, None]) * scale
        score = torch.softmax(conf, dim=-1)[..., 1]
        index = torch.arange(self.num_priors, dtype=torch.float32, device=dev)
        records = torch.stack(
            [(x1y1[..., 0] + x2y2[..., 0]) / 2, (x1y1[..., 1] + x2y2[..., 1]) / 2, x2y2[..., 0] - x1y1[..., 0],
             x2y2[..., 1] - x1y1[..., 1], score, torch.zeros_like(score), level.expand_as(score),
             index.expand_as(score)], -1
        )  # fmt: skip
        keep = score > self.conf_threshold
        dets = torch.zeros(batch, self.max_det, RECORD, dtype=torch.float32, device=dev)
        for b in range(batch):
            kept = records[b][keep[b]][: self.max_det]  # in prior order; the GPU's order is arbitrary
            dets[b, : len(kept)] = kept
        return [keep.sum(dim=1).to(torch.int32), dets, points.reshape(batch, -1, 10)]


reference = RetinafaceDecode.functional_reference
run = RetinafaceDecode.run
add_to_network = RetinafaceDecode.add_to_network


# ---- NMS right after an engine that ends at the decoded boxes (native post-processing on TensorRT-RTX) -------
def nms_records(boxes, scores, conf_threshold: float, top_k: int):
    """(num [B] int32, records [B, K, 8]) for the ``nms`` plugin from decoded corner boxes [B, A, 4] and face
    scores [B, A] (torch): each image's best K = min(top_k, A) priors by score (ties: lower index first) as
    ``cx, cy, w, h, score, 0, 0, prior index``; ``num`` counts those with score > conf_threshold."""
    import torch

    boxes, scores = boxes.float(), scores.float()
    k = min(int(top_k), scores.shape[1])
    best, index = torch.sort(scores, dim=1, descending=True, stable=True)
    best, index = best[:, :k], index[:, :k]
    b = torch.gather(boxes, 1, index[..., None].expand(-1, -1, 4))
    zeros = torch.zeros_like(best)
    records = torch.stack(
        [(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2, b[..., 2] - b[..., 0], b[..., 3] - b[..., 1],
         best, zeros, zeros, index.float()], -1
    ).contiguous()  # fmt: skip
    return (best > conf_threshold).sum(1).to(torch.int32), records


def select(boxes, scores, *, conf_threshold: float, iou_threshold: float, top_k: int, keep_top_k: int) -> list:
    """Kept prior indices per image (int64 numpy, best first) with the ``nms`` GPU kernel on :func:`nms_records`:
    score > conf_threshold, the best top_k, greedy NMS (IoU > iou_threshold suppresses), the first keep_top_k --
    what ``trtx.nms`` computes on the CPU. The kernel's IoU comes from cx ± w/2, so for boxes whose corners do not
    survive that round trip exactly, a pair within a rounding error of the threshold may go the other way."""
    import torch

    from plugins.ops import nms

    boxes = torch.as_tensor(boxes).cuda()
    num, records = nms_records(boxes, torch.as_tensor(scores).cuda(), conf_threshold, top_k)
    out_num, out = nms.run([num, records], iou_threshold=iou_threshold, score_threshold=conf_threshold,
                           max_det=keep_top_k, agnostic=True)  # fmt: skip
    out_num, out = out_num.cpu().numpy(), out.cpu().numpy()
    return [out[i, : out_num[i], 7].astype(np.int64) for i in range(len(out_num))]
