"""What the weights contain: family (YOLOv8, YOLO11, YOLOv10, YOLO12, YOLO26), task, widths, depths, classes,
reg_max, keypoints, and which branches of an end-to-end head they hold.

Nothing here needs ultralytics or torch: ``build`` reads everything from the state_dict keys and sizes. The
published scales are the yaml files' ``scales`` tables, repeated here (tests/test_ultralytics.py holds them equal
to the installed yaml files); weights that match none of them are a ``custom`` scale, and the network is built
from them all the same.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from netdefs.common import count_indices, peek
from trtx.net import NetdefError

FAMILIES = ("yolov8", "yolo11", "yolov10", "yolo12", "yolo26")
TASKS = ("detect", "seg", "pose", "obb", "cls")
#: the tasks each family's yaml files provide (cfg/models/v10 has detection only)
FAMILY_TASKS = {**{f: TASKS for f in FAMILIES}, "yolov10": ("detect",)}
#: families whose head has a one-to-one branch (``one2one_cv2``...): NMS-free, a top-k of its scores
END2END = ("yolov10", "yolo26")
SUFFIX = {"detect": "", "seg": "-seg", "pose": "-pose", "obb": "-obb", "cls": "-cls"}
SCALE_NAMES = ("n", "s", "m", "b", "l", "x")  # b: YOLOv10's only
_YOLO11_SCALES = {
    "n": (0.50, 0.25, 1024),
    "s": (0.50, 0.50, 1024),
    "m": (0.50, 1.00, 512),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.50, 512),
}
#: [depth, width, max_channels] by family and scale (``scales:`` of the yaml files; the -cls yaml of YOLOv8 caps
#: no channels; YOLOv10 has one yaml per scale, each with its own row)
SCALES = {
    "yolov8": {
        "n": (0.33, 0.25, 1024),
        "s": (0.33, 0.50, 1024),
        "m": (0.67, 0.75, 768),
        "l": (1.00, 1.00, 512),
        "x": (1.00, 1.25, 512),
    },
    "yolov8-cls": {
        "n": (0.33, 0.25, 1024),
        "s": (0.33, 0.50, 1024),
        "m": (0.67, 0.75, 1024),
        "l": (1.00, 1.00, 1024),
        "x": (1.00, 1.25, 1024),
    },
    "yolo11": dict(_YOLO11_SCALES),
    "yolov10": {
        "n": (0.33, 0.25, 1024),
        "s": (0.33, 0.50, 1024),
        "m": (0.67, 0.75, 768),
        "b": (0.67, 1.00, 512),
        "l": (1.00, 1.00, 512),
        "x": (1.00, 1.25, 512),
    },
    "yolo12": dict(_YOLO11_SCALES),
    "yolo26": dict(_YOLO11_SCALES),
}
_YOLO11_NOMINAL = {
    0: (64, 0),
    1: (128, 0),
    2: (256, 2),
    3: (256, 0),
    4: (512, 2),
    5: (512, 0),
    6: (512, 2),
    7: (1024, 0),
    8: (1024, 2),
    9: (1024, 0),
    10: (1024, 2),
    13: (512, 2),
    16: (256, 2),
    17: (256, 0),
    19: (512, 2),
    20: (512, 0),
    22: (1024, 2),
}
#: module index -> (channels, repeats) as the yaml writes them, before the scale (repeats 0: no repeat argument,
#: or 1)
NOMINAL = {
    "yolov8": {
        0: (64, 0),
        1: (128, 0),
        2: (128, 3),
        3: (256, 0),
        4: (256, 6),
        5: (512, 0),
        6: (512, 6),
        7: (1024, 0),
        8: (1024, 3),
        9: (1024, 0),
        12: (512, 3),
        15: (256, 3),
        16: (256, 0),
        18: (512, 3),
        19: (512, 0),
        21: (1024, 3),
    },
    "yolo11": dict(_YOLO11_NOMINAL),
    "yolov10": {
        0: (64, 0),
        1: (128, 0),
        2: (128, 3),
        3: (256, 0),
        4: (256, 6),
        5: (512, 0),
        6: (512, 6),
        7: (1024, 0),
        8: (1024, 3),
        9: (1024, 0),
        10: (1024, 0),
        13: (512, 3),
        16: (256, 3),
        17: (256, 0),
        19: (512, 3),
        20: (512, 0),
        22: (1024, 3),
    },
    "yolo12": {
        0: (64, 0),
        1: (128, 0),
        2: (256, 2),
        3: (256, 0),
        4: (512, 2),
        5: (512, 0),
        6: (512, 4),
        7: (1024, 0),
        8: (1024, 4),
        11: (512, 2),
        14: (256, 2),
        15: (256, 0),
        17: (512, 2),
        18: (512, 0),
        20: (1024, 2),
    },
    "yolo26": {**_YOLO11_NOMINAL, 22: (1024, 0)},
}
#: the classification yamls: the backbone up to P5, then Classify (YOLO11 and YOLO26: C2PSA at 9 instead of SPPF +
#: C2PSA; YOLO12: the A2C2f backbone)
NOMINAL_CLS = {
    "yolov8": {i: c for i, c in NOMINAL["yolov8"].items() if i <= 8},
    "yolo11": {**{i: c for i, c in _YOLO11_NOMINAL.items() if i <= 8}, 9: (1024, 2)},
    "yolo12": {i: c for i, c in NOMINAL["yolo12"].items() if i <= 8},
    "yolo26": {**{i: c for i, c in _YOLO11_NOMINAL.items() if i <= 8}, 9: (1024, 2)},
}
#: index of the head module: Detect/Segment/Pose/OBB (v10Detect, Segment26...), and Classify
HEAD = {"yolov8": 22, "yolo11": 23, "yolov10": 23, "yolo12": 21, "yolo26": 23}
HEAD_CLS = {"yolov8": 9, "yolo11": 10, "yolo12": 9, "yolo26": 10}
#: where each family has its attention blocks (detect; cls), what read_arch holds the weights to
ATTENTION = {
    "yolov8": ((), ()),
    "yolo11": ((10,), (9,)),
    "yolov10": ((10,), ()),
    "yolo12": ((6, 8), (6, 8)),
    "yolo26": ((10, 22), (9,)),
}
#: YOLOv10's yaml of each scale: the C2f modules that are C2fCIB, and those whose CIBs have large kernels (lk)
V10_LAYOUT = {
    "n": ({22}, {22}),
    "s": ({8, 22}, {8, 22}),
    "m": ({8, 19, 22}, set()),
    "b": ({8, 13, 19, 22}, set()),
    "l": ({8, 13, 19, 22}, set()),
    "x": ({6, 8, 13, 19, 22}, set()),
}
PROTO_CHANNELS = 256  # Segment's npr in the yaml, scaled by width like a layer
STRIDES = (8, 16, 32)
ONE2ONE = "one2one_"  # the prefix of an end-to-end head's one-to-one branch: one2one_cv2, one2one_cv3, ...


@dataclass
class Arch:
    """The model as the weights describe it."""

    family: str  # yolov8 | yolo11 | yolov10 | yolo12 | yolo26
    task: str  # detect | seg | pose | obb | cls
    head: int  # index of the head module in model.N
    num_classes: int
    channels: dict[int, int]  # module index -> output channels
    repeats: dict[int, int]  # module index -> blocks in its .m
    c3k: set[int] = field(default_factory=set)  # C3k2 / A2C2f modules whose blocks are C3k
    psa: set[int] = field(default_factory=set)  # the attention modules (C2PSA, PSA, A2C2f, YOLO26's C3k2)
    cib: set[int] = field(default_factory=set)  # C2f modules whose blocks are CIB (YOLOv10's C2fCIB)
    lk: set[int] = field(default_factory=set)  # C2fCIB modules whose CIBs have a RepVGGDW (lk=True)
    gamma: set[int] = field(default_factory=set)  # A2C2f modules with the residual gamma (YOLO12 l/x)
    reg_max: int = 16
    num_masks: int = 0
    num_protos: int = 0
    num_keypoint_values: int = 0  # Pose: keypoints x dims
    kpt_shape: tuple[int, int] | None = None  # from the weights' extra entry, when gen_wts wrote one
    names: list[str] | None = None  # a checkpoint's class names, when gen_wts wrote them
    strides: list[int] = field(default_factory=lambda: list(STRIDES))
    one2one: bool = False  # the head has an end-to-end (one-to-one) branch
    one2many: bool = True  # the head has the one-to-many branch (cv2, cv3...) that NMS selects from

    @property
    def prefix(self) -> str:
        return f"model.{self.head}"

    @property
    def branch(self) -> str:
        """The prefix of a head branch the weights have (the one-to-many one where both are there)."""
        return "" if self.one2many else ONE2ONE


def size(weights, key: str) -> int:
    return int(peek(weights, key).size)


def read_arch(weights) -> Arch:
    """Family, task, widths, depths and head of the ultralytics model the weights hold; a one-line error saying
    what they hold instead when they are something else."""
    _refuse_other_models(weights)
    indices = sorted({int(m.group(1)) for k in weights if (m := re.match(r"model\.(\d+)\.", k))})
    last = indices[-1]
    family = _family(weights)
    if f"model.{last}.linear.weight" in weights:  # Classify
        if family not in HEAD_CLS or last != HEAD_CLS[family]:
            raise NetdefError(_layout_error(weights, family, last, "Classify"))
        task, nc = "cls", size(weights, f"model.{last}.linear.bias")
    else:
        h = f"model.{last}"
        branches = [p for p in ("", ONE2ONE) if f"{h}.{p}cv2.0.2.bias" in weights and f"{h}.{p}cv3.0.2.bias" in weights]
        if not branches:
            raise NetdefError(
                f"weights end with {h}, which is neither a YOLO detection head (no {h}.cv2.0.2.bias, {h}.cv3.0.2.bias "
                f"or their one2one_ branch) nor Classify (no {h}.linear.weight)"
            )
        if last != HEAD[family]:
            raise NetdefError(_layout_error(weights, family, last, "Detect"))
        p = branches[0]
        nc = size(weights, f"{h}.{p}cv3.0.2.bias")
        if f"{h}.proto.cv1.conv.weight" in weights:
            task = "seg"
        elif f"{h}.{p}cv4_kpts.0.bias" in weights or f"{h}.{p}cv4.0.2.bias" in weights:
            values = f"{h}.{p}cv4_kpts.0.bias" if f"{h}.{p}cv4_kpts.0.bias" in weights else f"{h}.{p}cv4.0.2.bias"
            task = "obb" if size(weights, values) == 1 else "pose"
        else:
            task = "detect"
    channels, blocks = {}, {}
    for k in weights:
        if m := re.match(r"model\.(\d+)\.m\.(\d+)\.", k):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    for i in indices:
        for key in (f"model.{i}.bn.weight", f"model.{i}.cv2.bn.weight"):  # Conv; C2f, C3k2, SPPF, C2PSA, A2C2f...
            if key in weights:
                channels[i] = size(weights, key)
                break
    repeats = {i: next(j for j in range(len(js) + 1) if j not in js) for i, js in blocks.items()}
    has = lambda key: {i for i in indices if key.format(i) in weights}  # noqa: E731
    # the attention of C2PSA, A2C2f, YOLO26's C3k2 and PSA
    attention = ("model.{}.m.0.attn", "model.{}.m.0.0.attn", "model.{}.m.0.1.attn", "model.{}.attn")
    arch = Arch(
        family, task, last, nc, channels, repeats,
        c3k=has("model.{}.m.0.cv3.conv.weight"),
        psa=set().union(*(has(a + ".qkv.conv.weight") for a in attention)),
        cib=has("model.{}.m.0.cv1.0.conv.weight"),
        lk=has("model.{}.m.0.cv1.2.conv1.conv.weight"),
        gamma=has("model.{}.gamma"),
    )  # fmt: skip
    if f"{arch.prefix}.names" in weights:
        from netdefs.detection.names import decode_names

        arch.names = decode_names(peek(weights, f"{arch.prefix}.names"), f"{arch.prefix}.names")
        if len(arch.names) != nc:
            raise NetdefError(f"{arch.prefix}.names lists {len(arch.names)} class names but the head has {nc} classes")
    if task == "cls":
        return arch
    h = arch.prefix
    arch.one2one, arch.one2many = ONE2ONE in branches, "" in branches
    if arch.one2one and family not in END2END:
        raise NetdefError(f"weights have an end-to-end head ({h}.one2one_cv2), which {family} has not")
    p = arch.branch
    levels = count_indices(weights, f"{h}.{p}cv2.{{}}.2.bias")
    if levels != len(STRIDES):
        raise NetdefError(
            f"weights have a {levels}-level head ({h}.{p}cv2.0 .. {h}.{p}cv2.{levels - 1}): only the P3-P5 layouts "
            "(three levels, strides 8, 16, 32) of the yaml files are supported"
        )
    box = size(weights, f"{h}.{p}cv2.0.2.bias")
    if box % 4:
        raise NetdefError(f"{h}.{p}cv2.0.2.bias has {box} values: not 4 x reg_max box distributions")
    arch.reg_max = box // 4
    if f"{h}.dfl.conv.weight" in weights and size(weights, f"{h}.dfl.conv.weight") != arch.reg_max:
        raise NetdefError(
            f"{h}.dfl.conv.weight has {size(weights, f'{h}.dfl.conv.weight')} values but the box "
            f"branch {h}.{p}cv2.0.2 outputs 4 x {arch.reg_max}"
        )
    if arch.reg_max > 1 and f"{h}.dfl.conv.weight" not in weights:
        raise NetdefError(f"weights have no {h}.dfl.conv.weight, which reg_max {arch.reg_max} ({h}.{p}cv2.0.2) needs")
    if task == "seg":
        arch.num_masks = size(weights, f"{h}.{p}cv4.0.2.bias")
        arch.num_protos = size(weights, f"{h}.proto.cv1.bn.weight")
        if size(weights, f"{h}.proto.cv3.bn.weight") != arch.num_masks:
            raise NetdefError(
                f"{h}.proto.cv3 makes {size(weights, f'{h}.proto.cv3.bn.weight')} prototypes but "
                f"{h}.{p}cv4 predicts {arch.num_masks} mask coefficients"
            )
        if (family == "yolo26") != (f"{h}.proto.feat_fuse.conv.weight" in weights):
            what = "no " if family == "yolo26" else ""
            raise NetdefError(f"{h}.proto: YOLO26's Segment26 has a Proto26 (feat_refine, feat_fuse), the others' a "
                              f"Proto, but these {family} weights have {what}feat_fuse")  # fmt: skip
    if task == "pose":
        values = f"{h}.{p}cv4_kpts.0.bias" if family == "yolo26" else f"{h}.{p}cv4.0.2.bias"
        if values not in weights:
            raise NetdefError(f"weights have no {values}: the keypoint predictions of a {family} Pose head")
        arch.num_keypoint_values = size(weights, values)
        if f"{h}.kpt_shape" in weights:
            k, d = (int(v) for v in peek(weights, f"{h}.kpt_shape"))
            if k * d != arch.num_keypoint_values or d not in (2, 3):
                raise NetdefError(
                    f"{h}.kpt_shape says {[k, d]} but {values.removesuffix('.bias')} predicts "
                    f"{arch.num_keypoint_values} keypoint values"
                )
            arch.kpt_shape = (k, d)
    return arch


def _family(weights) -> str:
    """Which generation: area attention in model.6 (YOLO12's A2C2f), PSA at model.10 (YOLOv10), attention inside
    C3k2 at model.22 (YOLO26), C2PSA (YOLO11), none of these (YOLOv8). A YOLO26 classifier is a YOLO11 classifier
    layer for layer (the same yaml rows): its weights read as YOLO11's."""
    if "model.6.m.0.0.attn.qkv.conv.weight" in weights:
        return "yolo12"
    if "model.10.attn.qkv.conv.weight" in weights:
        return "yolov10"
    if "model.22.m.0.1.attn.qkv.conv.weight" in weights:
        return "yolo26"
    if any(re.match(r"model\.\d+\.m\.0\.attn\.qkv\.conv\.weight$", k) for k in weights):
        return "yolo11"
    return "yolov8"


def _refuse_other_models(weights) -> None:
    """One line naming what the weights hold when it is not an ultralytics YOLO model of these families."""
    if "model.0.conv.weight" not in weights:
        if "model.0.conv.conv.weight" in weights:
            raise NetdefError("weights have a Focus stem (model.0.conv.conv): an early YOLOv5, not an ultralytics YOLO")
        raise NetdefError("weights have no model.0.conv.weight: not an ultralytics YOLO model")
    if "model.2.cv3.conv.weight" in weights:
        raise NetdefError("weights hold a YOLOv5 model (C3 blocks: model.2.cv3): use netdefs/yolov5.py")
    if "model.2.m.0.cv1.conv.weight" not in weights:
        raise NetdefError(
            "weights have no model.2.m.0.cv1.conv.weight: model.2 is not a C2f/C3k2 block, so not YOLOv8, YOLO11, "
            "YOLOv10, YOLO12 or YOLO26"
        )


def _layout_error(weights, family: str, last: int, head: str) -> str:
    found = sorted(i for i in range(last) if any(k.startswith(f"model.{i}.") and ".attn.qkv." in k for k in weights))
    has = f"attention at model.{', model.'.join(map(str, found))}" if found else "no attention block"
    want = "; ".join(
        f"{f} at model.{HEAD[f]}" + (f" (Classify: model.{HEAD_CLS[f]})" if f in HEAD_CLS else "") for f in FAMILIES
    )
    return f"weights have a {head} head at model.{last} and {has} (read as {family}): the heads are {want}"


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


def nominal(arch: Arch) -> dict[int, tuple[int, int]]:
    """(channels, repeats) the yaml writes, for the modules of this family and task."""
    return (NOMINAL_CLS if arch.task == "cls" else NOMINAL)[arch.family]


def scale_table(arch: Arch) -> dict[str, tuple[float, float, int]]:
    return SCALES["yolov8-cls" if arch.family == "yolov8" and arch.task == "cls" else arch.family]


def reproduces(arch: Arch, depth: float, width: float, max_channels: float) -> bool:
    """Whether parse_model with these multiples gives the weights' widths and depths (``make_divisible(min(c,
    max_channels) * width, 8)``, ``max(round(n * depth), 1)`` for n > 1)."""
    for i, (c, n) in nominal(arch).items():
        if arch.channels.get(i) != make_divisible(min(c, max_channels) * width):
            return False
        if n and arch.repeats.get(i) != (max(round(n * depth), 1) if n > 1 else n):
            return False
    if arch.num_protos and arch.num_protos != make_divisible(min(PROTO_CHANNELS, max_channels) * width):
        return False
    return True


def scale_name(arch: Arch) -> str:
    """``n`` ... ``x`` when the weights match a published scale (YOLOv10: its yaml's C2fCIB layout too), else
    ``custom``."""
    return next((s for s, m in scale_table(arch).items() if reproduces(arch, *m) and v10_layout_fits(arch, s)),
                "custom")  # fmt: skip


def v10_layout_fits(arch: Arch, scale: str) -> bool:
    """Whether YOLOv10 weights have the C2fCIB (and RepVGGDW) modules of yolov10{scale}.yaml (other families:
    True)."""
    return arch.family != "yolov10" or (arch.cib, arch.lk) == V10_LAYOUT[scale]


def multiples(arch: Arch) -> tuple[float, float, float] | None:
    """(depth, width, max_channels) that reproduce the weights through parse_model, or None: the published
    scale's, else the first candidate that fits (widths: each module's channels over its nominal ones;
    depths: each block count over its nominal one, half-steps either side; caps: the yaml's channel values and
    each module's width over the width multiple)."""
    table = scale_table(arch)
    name = scale_name(arch)
    if name != "custom":
        return table[name]
    nom = nominal(arch)
    depths = {1.0}
    for i, (_, n) in nom.items():
        k = arch.repeats.get(i, 0)
        if n > 1:
            depths |= {(k + off) / n for off in (-0.5, -0.25, 0.0, 0.25, 0.5) if k + off > 0}
    widths = set()
    for i, (c, _) in nom.items():
        if i in arch.channels:
            widths |= {arch.channels[i] / c, (arch.channels[i] - 4) / c}
    for w in sorted(x for x in widths if x > 0):
        # a module narrower than its nominal width times w was capped: max_channels = its width / w
        caps = {c for c, _ in nom.values()} | {m for _, _, m in table.values()} | {math.inf}
        caps |= {round(arch.channels[i] / w) for i in nom if i in arch.channels}
        for cap in sorted(caps):
            for d in sorted(depths):
                if reproduces(arch, d, w, cap):
                    return d, w, cap
    return None


def describe(arch: Arch) -> str:
    """A short account of what the weights hold, for error messages."""
    return (
        f"{arch.family}{scale_name(arch)}{SUFFIX[arch.task]} (stem {arch.channels.get(0)} channels, blocks per "
        f"C2f/C3k2/attention module {[arch.repeats[i] for i in sorted(arch.repeats)]})"
    )
