"""What a YOLOv5 model is, read from its weights: task, P5/P6, depth (bottlenecks per C3), width (channels),
classes, anchors, strides, mask coefficients; and the depth/width multiples of the yaml that reproduce them."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from netdefs.common import count_indices, peek
from trtx.net import NetdefError

#: (depth_multiple, width_multiple) of the published variants; P6 variants (n6 ...) use the same
VARIANTS = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25)}
#: C3 repeats in the yaml before the depth multiple: backbone (P2, P3, P4, P5[, P6]) and head
BACKBONE_REPEATS = {False: (3, 6, 9, 3), True: (3, 6, 9, 3, 3)}


@dataclass
class Arch:
    """The model as the weights describe it."""

    task: str  # detect | seg | cls
    p6: bool
    head: int  # index of Detect/Segment/Classify in model.N
    repeats: dict[int, int]  # C3 index -> bottlenecks
    num_classes: int
    channels: dict[int, int]  # module index -> output channels (Conv/C3/SPPF)
    num_anchors: int = 0
    num_masks: int = 0
    num_protos: int = 0
    anchors: list[list[float]] = field(default_factory=list)  # per level: na (w, h) pairs in pixels
    strides: list[int] = field(default_factory=list)

    @property
    def levels(self) -> int:
        return len(self.strides)

    @property
    def outputs_per_anchor(self) -> int:
        return 5 + self.num_classes + self.num_masks


def read_arch(weights) -> Arch:
    """Task, P5/P6, depth, width, classes, anchors and strides of the YOLOv5 model the weights hold."""
    if "model.0.conv.weight" not in weights:
        if "model.0.conv.conv.weight" in weights:
            raise NetdefError("weights have a Focus stem (model.0.conv.conv): YOLOv5 before v6.0 is not supported")
        raise NetdefError("weights have no model.0.conv.weight: not a YOLOv5 v6.0+/v7.0 model")
    indices = sorted({int(m.group(1)) for k in weights if (m := re.match(r"model\.(\d+)\.", k))})
    heads = [i for i in indices if f"model.{i}.linear.weight" in weights or f"model.{i}.m.0.bias" in weights]
    if not heads:
        raise NetdefError("weights have no YOLOv5 head: no model.N.m.0.bias (Detect/Segment) nor model.N.linear "
                          "(Classify)")  # fmt: skip
    last = heads[-1]  # keys past the head are not read: the build lists them as unused
    indices = [i for i in indices if i <= last]
    channels = {}
    for i in indices:
        for key in (f"model.{i}.bn.weight", f"model.{i}.cv3.bn.weight", f"model.{i}.cv2.bn.weight"):
            if key in weights:
                channels[i] = peek(weights, key).size
                break
    repeats = {i: n for i in indices if (n := count_indices(weights, f"model.{i}.m.{{}}.cv1.conv.weight"))}
    if f"model.{last}.linear.weight" in weights:  # Classify
        nc = peek(weights, f"model.{last}.linear.bias").size
        p6 = last > 9
        return Arch("cls", p6, last, repeats, nc, channels)
    det = f"model.{last}"
    nl = count_indices(weights, det + ".m.{}.weight")
    if nl == 0:
        raise NetdefError(f"weights end with {det} but it is neither Detect/Segment ({det}.m.0.weight) nor "
                          f"Classify ({det}.linear.weight)")  # fmt: skip
    if nl not in (3, 4) or last != (24 if nl == 3 else 33):
        raise NetdefError(f"weights have a head {det} with {nl} levels: YOLOv5 P5 has model.24 with 3, P6 model.33 "
                          "with 4")  # fmt: skip
    p6 = nl == 4
    task = "seg" if f"{det}.proto.cv3.conv.weight" in weights else "detect"
    if f"{det}.anchors" in weights:
        anchors_grid_units = peek(weights, f"{det}.anchors")
    elif f"{det}.anchor_grid" in weights:
        anchors_grid_units = None
    else:
        raise NetdefError(f"weights have neither {det}.anchors nor {det}.anchor_grid: the anchors are unknown")
    default_strides = [8 * 2**i for i in range(nl)]
    if f"{det}.strides" in weights:
        strides_f = peek(weights, f"{det}.strides")
        if strides_f.size != nl or not np.array_equal(strides_f, np.round(strides_f)):
            raise NetdefError(f"{det}.strides holds {strides_f.tolist()}, not {nl} integer strides")
        strides = [int(s) for s in strides_f]
        if strides != default_strides:
            raise NetdefError(f"{det}.strides are {strides} but a {'P6' if p6 else 'P5'} YOLOv5 head has "
                              f"{default_strides}")  # fmt: skip
    else:
        strides = default_strides
    if f"{det}.anchor_grid" in weights:
        grid = peek(weights, f"{det}.anchor_grid")
        if grid.size % (2 * nl):
            raise NetdefError(f"{det}.anchor_grid has {grid.size} values: not {nl} levels of (w, h) pairs")
        pixels = grid.reshape(nl, -1, 2)
        if anchors_grid_units is not None:
            derived = anchors_grid_units.reshape(nl, -1, 2) * np.array(strides, np.float32)[:, None, None]
            if derived.shape != pixels.shape or not np.allclose(derived, pixels, rtol=1e-6):
                raise NetdefError(f"weights disagree: {det}.anchor_grid != {det}.anchors x {det}.strides")
    else:
        if anchors_grid_units.size % (2 * nl):
            raise NetdefError(f"{det}.anchors has {anchors_grid_units.size} values: not {nl} levels of (w, h) pairs")
        pixels = anchors_grid_units.reshape(nl, -1, 2) * np.array(strides, np.float32)[:, None, None]
    na = pixels.shape[1]
    nm = peek(weights, f"{det}.proto.cv3.bn.weight").size if task == "seg" else 0
    npr = peek(weights, f"{det}.proto.cv1.bn.weight").size if task == "seg" else 0
    per_level = peek(weights, f"{det}.m.0.bias").size
    if per_level % na or per_level // na - 5 - nm < 1:
        raise NetdefError(f"{det}.m.0.bias has {per_level} values: not {na} anchors x (5 + classes + {nm} masks)")
    nc = per_level // na - 5 - nm
    return Arch(task, p6, last, repeats, nc, channels, na, nm, npr, pixels.astype(float).tolist(), strides)


def multiples(arch: Arch) -> tuple[float, float]:
    """(depth_multiple, width_multiple) that reproduce the weights' depths and widths through yolov5's
    parse_model (``max(round(n * gd), 1)``, Python's half-to-even round, and ``make_divisible(c * gw, 8)``);
    raises if none does. Candidates: the interval ends and midpoints each layer allows, tried in order."""
    nominal_c, nominal_n = _nominal(arch)
    widths = {i: (c, arch.channels[i]) for i, c in nominal_c.items() if i in arch.channels}
    if arch.num_protos:
        widths[-1] = (256, arch.num_protos)
    w_cands = {got / c for c, got in widths.values()} | {(got - 4) / c for c, got in widths.values()}
    d_cands = set()
    for i, n in nominal_n.items():
        k = arch.repeats.get(i, 0)
        d_cands |= {k / n, (k - 0.5) / n, (k + 0.5) / n, (k - 0.25) / n, (k + 0.25) / n}
    gw = next((w for w in sorted(w_cands) if w > 0 and all(math.ceil(c * w / 8) * 8 == got
                                                         for c, got in widths.values())), None)  # fmt: skip
    gd = next((d for d in sorted(d_cands) if d > 0 and all(max(round(n * d), 1) == arch.repeats.get(i, 0)
                                                         for i, n in nominal_n.items())), None)  # fmt: skip
    if gw is None or gd is None:
        raise NetdefError(
            "the weights' widths/depths match no YOLOv5 width/depth multiple: channels "
            f"{dict(sorted(arch.channels.items()))}, C3 bottlenecks {dict(sorted(arch.repeats.items()))}"
        )
    return gd, gw


def _nominal(arch: Arch) -> tuple[dict[int, int], dict[int, int]]:
    """Channels and C3 repeats of the yaml before the multiples, by module index (P5 or P6 layout)."""
    # backbone: Conv, (Conv, C3) per level; index len(chans) is SPPF (Classify for cls)
    chans = [64, 128, 128, 256, 256, 512, 512] + ([768, 768, 1024, 1024] if arch.p6 else [1024, 1024])
    repeats = dict(zip((2, 4, 6, 8, 10), BACKBONE_REPEATS[arch.p6]))
    c = dict(enumerate(chans))
    spp = len(chans)
    if arch.task != "cls":
        c[spp] = 1024
        # head, by index after SPPF (Upsample/Concat slots carry their input's width; they have no weights)
        if arch.p6:
            head = [768, 768, 768, 768, 512, 512, 512, 512, 256, 256, 256, 256, 256, 256, 512, 512, 512, 768, 768,
                    768, 1024]  # fmt: skip
        else:
            head = [512, 512, 512, 512, 256, 256, 256, 256, 256, 256, 512, 512, 512, 1024]
        for j, ch in enumerate(head):
            c[spp + 1 + j] = ch
        repeats.update({i: 3 for i in arch.repeats if i > spp})  # every head C3 is n=3 in the yaml
    return {i: ch for i, ch in c.items() if i in arch.channels}, repeats


def variant_name(arch: Arch) -> str:
    """``n``, ``s`` ... (``n6`` ... for P6) when the weights match a published variant, else ``custom``."""
    try:
        gd, gw = multiples(arch)
    except NetdefError:
        return "custom"
    for name, (d, w) in VARIANTS.items():
        if _reproduces(arch, d, w):
            return name + ("6" if arch.p6 else "")
    return "custom"


def _reproduces(arch: Arch, gd: float, gw: float) -> bool:
    nominal_c, nominal_n = _nominal(arch)
    widths = all(math.ceil(c * gw / 8) * 8 == arch.channels[i] for i, c in nominal_c.items())
    depths = all(max(round(n * gd), 1) == arch.repeats.get(i, 0) for i, n in nominal_n.items())
    return widths and depths
