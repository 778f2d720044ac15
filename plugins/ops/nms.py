"""nms: class-aware greedy non-maximum suppression per image, on the GPU, over decoded detection records.

Inputs: one or more ``(num, dets)`` pairs -- ``num`` int32 ``[B]``, ``dets`` float32 ``[B, rows, 8]`` -- in the
record layout of :mod:`plugins.yolo_decode` (``cx, cy, w, h, score, class, level, anchor_index``; the first
``min(num[b], rows)`` rows of image ``b`` are valid). The pairs of one YOLOv5 model are its three levels.

Per image: the valid records with ``score > score_threshold`` are ordered by score (descending), then input
position, then ``anchor_index`` (ascending) -- a total order, so the result is deterministic and equals the
torch reference exactly. Walking that order, a record is kept unless an already kept record of the same class
(any class with ``agnostic``) overlaps it with IoU > ``iou_threshold``; at most ``max_det`` are kept.
Boxes are ``(cx ± w/2, cy ± h/2)``; IoU is computed in float32 without fused multiply-adds, like torch.

Outputs: ``num`` int32 ``[B]`` (kept per image) and ``dets`` float32 ``[B, max_det, 8]``: the kept records in
that order, unchanged, then zeros. Limits: at most 32 input pairs, at most 32768 rows in all per image.
"""

from pathlib import Path

import numpy as np

from plugins.core import AotLaunch, Bool, Float, Input, Int, Kernel, Output, Plugin, PluginError, blocks, known

RECORD = 8
MAX_INPUTS = 32  # the sort key holds the input position in 5 bits
MAX_SLOTS = 32768  # rows per image in all inputs: one byte of shared memory each in nms_greedy
SHARED_BYTES = 48 * 1024 - 64  # dynamic shared memory of nms_greedy (no opt-in needed on any architecture)
BOX_BYTES = 24  # sizeof(Box) in nms.cu: candidates cached in shared memory for the sequential walk
AOT_BLOCK = 512  # threads per image in the ahead-of-time kernel (one block per image)
_SOURCE = Path(__file__).with_name("nms.cu")
_OPTIONS = ("--fmad=false",)
GATHER = Kernel(_SOURCE, "nms_gather", options=_OPTIONS)
RANK = Kernel(_SOURCE, "nms_rank", options=_OPTIONS)
GREEDY = Kernel(_SOURCE, "nms_greedy", options=_OPTIONS)


def _align(n: int) -> int:
    return (n + 255) // 256 * 256


class Nms(Plugin):
    """Greedy NMS per image and class over (num, dets) record inputs, deterministic order."""

    name, version, namespace = "nms", "1", "trtx"
    iou_threshold = Float(0.45, "suppress a box whose IoU with a kept box of its class is above this")
    score_threshold = Float(0.25, "ignore records with score <= this")
    max_det = Int(300, "boxes kept per image")
    agnostic = Bool(False, "suppress across classes")
    inputs = [Input("num", "int32"), Input("dets", "float32")]
    repeat_inputs = True
    outputs = [Output("num", "int32"), Output("dets", "float32")]
    kernels = [GATHER, RANK, GREEDY]

    def validate(self):
        if self.max_det < 1:
            raise PluginError(f"plugin nms: field 'max_det' must be >= 1, got {self.max_det}")

    def output_shapes(self, *shapes):
        if len(shapes) % 2 or not 2 <= len(shapes) <= 2 * MAX_INPUTS:
            raise PluginError(f"plugin nms takes 1 to {MAX_INPUTS} (num, dets) pairs, got {len(shapes)} inputs")
        slots = 0
        for k in range(0, len(shapes), 2):
            num, dets = shapes[k], shapes[k + 1]
            if len(num) != 1 or len(dets) != 3 or known(dets[2]) not in (None, RECORD):
                raise PluginError(
                    f"plugin nms: pair {k // 2} must be num [B] and dets [B, rows, {RECORD}], got {num}, {dets}"
                )
            rows = known(dets[1])
            if rows is None:
                raise PluginError(f"plugin nms: pair {k // 2}: dets rows must be static")
            slots += rows
        if slots > MAX_SLOTS:
            raise PluginError(f"plugin nms: {slots} rows per image in all inputs, more than {MAX_SLOTS}")
        batch = shapes[0][0]
        return [(batch,), (batch, self.max_det, RECORD)]

    def workspace_size(self, shapes, dtypes):
        batch, slots = shapes[0][0], sum(s[1] for s in shapes[1::2])
        return _align(batch * slots * 8) + 2 * _align(batch * slots * RECORD * 4)

    def enqueue(self, inputs, outputs, workspace, stream):
        self.output_shapes(*[b.shape for b in inputs])
        pairs = list(zip(inputs[0::2], inputs[1::2]))
        batch, slots = inputs[0].shape[0], sum(d.shape[1] for _, d in pairs)
        if batch > 65535:
            raise PluginError(f"plugin nms: batch {batch} exceeds 65535")
        keys = workspace
        cand = keys + _align(batch * slots * 8)
        ordered = cand + _align(batch * slots * RECORD * 4)
        offset = 0
        for k, (num, dets) in enumerate(pairs):
            rows = dets.shape[1]
            args = [num, dets, batch, rows, k, offset, slots, self.score_threshold, cand, keys]
            GATHER.launch_1d(batch * rows, args, stream)
            offset += rows
        RANK.launch((blocks(slots, 256), batch), 256, [keys, cand, slots, ordered], stream)
        out_num, out_dets = outputs
        cached = max(0, min(slots, (SHARED_BYTES - slots) // BOX_BYTES))
        args = [ordered, keys, slots, cached, self.iou_threshold, self.max_det, int(self.agnostic), out_num, out_dets]
        GREEDY.launch(batch, 256, args, stream, shared_mem=cached * BOX_BYTES + slots)

    def aot_launch(self, shapes, dtypes):
        pairs = len(shapes) // 2
        rows = [known(s[1]) for s in shapes[1::2]]  # static (output_shapes checks)
        return AotLaunch(GATHER, f"nms_aot_{pairs}", grid=shapes[0][0], block=AOT_BLOCK, args=rows,
                         shared_mem=sum(rows), source=aot_entry(pairs))  # fmt: skip

    def reference(self, inputs):
        import torch

        self.output_shapes(*[tuple(t.shape) for t in inputs])
        batch, dev = inputs[0].shape[0], inputs[0].device
        out_num = torch.zeros(batch, dtype=torch.int32, device=dev)
        out = torch.zeros(batch, self.max_det, RECORD, dtype=torch.float32, device=dev)
        for b in range(batch):
            records, position = [], []
            for k in range(0, len(inputs), 2):
                num, dets = inputs[k], inputs[k + 1]
                r = dets[b, : min(int(num[b]), dets.shape[1])].float()
                r = r[r[:, 4] > self.score_threshold]
                records.append(r)
                position.append(torch.full((len(r),), k // 2, device=dev))
            r, position = torch.cat(records), torch.cat(position)
            order = torch.argsort(r[:, 7], stable=True)  # least significant key first
            order = order[torch.argsort(position[order], stable=True)]
            order = order[torch.argsort(r[order, 4], descending=True, stable=True)]
            r = r[order]
            kept = greedy(r, self.iou_threshold, self.max_det, self.agnostic)
            out[b, : len(kept)] = r[kept]
            out_num[b] = len(kept)
        return [out_num, out]


def greedy(r, iou_threshold: float, max_det: int, agnostic: bool) -> list[int]:
    """Indices kept by greedy NMS over records ``r`` [n, 8] already in priority order."""
    import torch

    x1, y1 = r[:, 0] - r[:, 2] * 0.5, r[:, 1] - r[:, 3] * 0.5
    x2, y2 = r[:, 0] + r[:, 2] * 0.5, r[:, 1] + r[:, 3] * 0.5
    area = (x2 - x1) * (y2 - y1)
    iw = (torch.minimum(x2[:, None], x2[None, :]) - torch.maximum(x1[:, None], x1[None, :])).clamp(min=0)
    ih = (torch.minimum(y2[:, None], y2[None, :]) - torch.maximum(y1[:, None], y1[None, :])).clamp(min=0)
    inter = iw * ih
    suppress = inter / (area[:, None] + area[None, :] - inter) > iou_threshold
    if not agnostic:
        suppress &= r[:, 5][:, None] == r[:, 5][None, :]
    suppress = suppress.cpu().numpy()
    removed = np.zeros(len(r), dtype=bool)
    kept: list[int] = []
    for i in range(len(r)):
        if removed[i]:
            continue
        kept.append(i)
        if len(kept) == max_det:
            break
        removed |= suppress[i]
    return kept


def aot_entry(pairs: int) -> str:
    """The AOT kernel's entry point for ``pairs`` (num, dets) inputs: TensorRT passes every input as its own
    argument (inputs, then the rows of each pair, then the outputs); nms_block in nms.cu does the work."""
    params = ", ".join(f"const int* __restrict__ num{k}, const float* __restrict__ dets{k}" for k in range(pairs))
    rows = ", ".join(f"int rows{k}" for k in range(pairs))
    inputs = ", ".join(f"{{num{k}, dets{k}, rows{k}}}" for k in range(pairs))
    return f"""
#ifdef TRTX_AOT
extern "C" __global__ void nms_aot_{pairs}({params}, {rows}, int* __restrict__ out_num, float* __restrict__ out_dets) {{
    const NmsInput in[{pairs}] = {{{inputs}}};
    nms_block(in, {pairs}, FIELD_score_threshold, FIELD_iou_threshold, FIELD_max_det, FIELD_agnostic, out_num,
              out_dets);
}}
#endif
"""


reference = Nms.functional_reference
run = Nms.run
add_to_network = Nms.add_to_network
