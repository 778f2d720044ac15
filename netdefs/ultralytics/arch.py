"""What the weights contain: family (YOLOv8 or YOLO11), task, widths, depths, classes, reg_max, keypoints.

Nothing here needs ultralytics or torch: ``build`` reads everything from the state_dict keys and sizes. The
published scales (n s m l x) are the yaml files' ``scales`` tables, repeated here (tests/test_ultralytics.py
holds them equal to the installed yaml files); weights that match none of them are a ``custom`` scale, and
the network is built from them all the same.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from netdefs.common import count_indices, peek
from trtx.net import NetdefError

FAMILIES = ("yolov8", "yolo11")
TASKS = ("detect", "seg", "pose", "obb", "cls")
SUFFIX = {"detect": "", "seg": "-seg", "pose": "-pose", "obb": "-obb", "cls": "-cls"}
SCALE_NAMES = ("n", "s", "m", "l", "x")
#: [depth, width, max_channels] by family and scale (``scales:`` of yolov8.yaml / yolo11.yaml; the -cls yaml of
#: YOLOv8 caps no channels)
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
    "yolo11": {
        "n": (0.50, 0.25, 1024),
        "s": (0.50, 0.50, 1024),
        "m": (0.50, 1.00, 512),
        "l": (1.00, 1.00, 512),
        "x": (1.00, 1.50, 512),
    },
}
#: module index -> (channels, repeats) as the yaml writes them, before the scale (repeats 0: no repeat argument)
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
    "yolo11": {
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
    },
}
#: the classification yamls: the backbone up to P5, then Classify (YOLO11: C2PSA at 9 instead of SPPF + C2PSA)
NOMINAL_CLS = {
    "yolov8": {i: c for i, c in NOMINAL["yolov8"].items() if i <= 8},
    "yolo11": {**{i: c for i, c in NOMINAL["yolo11"].items() if i <= 8}, 9: (1024, 2)},
}
#: index of the head module: Detect/Segment/Pose/OBB, and Classify
HEAD = {"yolov8": 22, "yolo11": 23}
HEAD_CLS = {"yolov8": 9, "yolo11": 10}
PROTO_CHANNELS = 256  # Segment's npr in the yaml, scaled by width like a layer
STRIDES = (8, 16, 32)


@dataclass
class Arch:
    """The model as the weights describe it."""

    family: str  # yolov8 | yolo11
    task: str  # detect | seg | pose | obb | cls
    head: int  # index of the head module in model.N
    num_classes: int
    channels: dict[int, int]  # module index -> output channels
    repeats: dict[int, int]  # module index -> blocks in its .m
    c3k: set[int] = field(default_factory=set)  # C3k2 modules whose blocks are C3k (not Bottleneck)
    psa: set[int] = field(default_factory=set)  # C2PSA modules
    reg_max: int = 16
    num_masks: int = 0
    num_protos: int = 0
    num_keypoint_values: int = 0  # Pose: keypoints x dims
    kpt_shape: tuple[int, int] | None = None  # from the weights' extra entry, when gen_wts wrote one
    names: list[str] | None = None  # a checkpoint's class names, when gen_wts wrote them
    strides: list[int] = field(default_factory=lambda: list(STRIDES))

    @property
    def prefix(self) -> str:
        return f"model.{self.head}"


def size(weights, key: str) -> int:
    return int(peek(weights, key).size)


def read_arch(weights) -> Arch:
    """Family, task, widths, depths and head of the YOLOv8 / YOLO11 model the weights hold; a one-line error
    saying what they hold instead when they are something else."""
    _refuse_other_models(weights)
    indices = sorted({int(m.group(1)) for k in weights if (m := re.match(r"model\.(\d+)\.", k))})
    last = indices[-1]
    attention = [i for i in indices if f"model.{i}.m.0.attn.qkv.conv.weight" in weights]
    family = "yolo11" if attention else "yolov8"
    if f"model.{last}.linear.weight" in weights:  # Classify
        if last != HEAD_CLS[family] or (attention and attention != [HEAD_CLS[family] - 1]):
            raise NetdefError(_layout_error(last, attention, "Classify"))
        task, nc = "cls", size(weights, f"model.{last}.linear.bias")
    else:
        h = f"model.{last}"
        if f"{h}.cv2.0.2.bias" not in weights or f"{h}.cv3.0.2.bias" not in weights:
            raise NetdefError(
                f"weights end with {h}, which is neither a YOLOv8/YOLO11 head (no {h}.cv2.0.2.bias, "
                f"{h}.cv3.0.2.bias) nor Classify (no {h}.linear.weight)"
            )
        if last != HEAD[family] or (attention and attention != [HEAD[family] - 13]):
            raise NetdefError(_layout_error(last, attention, "Detect"))
        nc = size(weights, f"{h}.cv3.0.2.bias")
        if f"{h}.proto.cv1.conv.weight" in weights:
            task = "seg"
        elif f"{h}.cv4.0.2.bias" in weights:
            task = "obb" if size(weights, f"{h}.cv4.0.2.bias") == 1 else "pose"
        else:
            task = "detect"
    channels, repeats = {}, {}
    for i in indices:
        for key in (f"model.{i}.bn.weight", f"model.{i}.cv2.bn.weight"):  # Conv; C2f, C3k2, SPPF, C2PSA
            if key in weights:
                channels[i] = size(weights, key)
                break
        blocks = count_indices(weights, f"model.{i}.m.{{}}.cv1.conv.weight")  # Bottleneck, C3k
        if n := blocks or count_indices(weights, f"model.{i}.m.{{}}.attn.qkv.conv.weight"):  # PSABlock
            repeats[i] = n
    c3k = {i for i in repeats if f"model.{i}.m.0.cv3.conv.weight" in weights}
    arch = Arch(family, task, last, nc, channels, repeats, c3k, set(attention))
    if f"{arch.prefix}.names" in weights:
        from netdefs.detection.names import decode_names

        arch.names = decode_names(peek(weights, f"{arch.prefix}.names"), f"{arch.prefix}.names")
        if len(arch.names) != nc:
            raise NetdefError(f"{arch.prefix}.names lists {len(arch.names)} class names but the head has {nc} classes")
    if task == "cls":
        return arch
    h = arch.prefix
    levels = count_indices(weights, h + ".cv2.{}.2.bias")
    if levels != len(STRIDES):
        raise NetdefError(
            f"weights have a {levels}-level head ({h}.cv2.0 .. {h}.cv2.{levels - 1}): only the P3-P5 "
            "layouts (three levels, strides 8, 16, 32) of yolov8.yaml and yolo11.yaml are supported"
        )
    box = size(weights, f"{h}.cv2.0.2.bias")
    if box % 4:
        raise NetdefError(f"{h}.cv2.0.2.bias has {box} values: not 4 x reg_max box distributions")
    arch.reg_max = box // 4
    if f"{h}.dfl.conv.weight" in weights and size(weights, f"{h}.dfl.conv.weight") != arch.reg_max:
        raise NetdefError(
            f"{h}.dfl.conv.weight has {size(weights, f'{h}.dfl.conv.weight')} values but the box "
            f"branch {h}.cv2.0.2 outputs 4 x {arch.reg_max}"
        )
    if arch.reg_max > 1 and f"{h}.dfl.conv.weight" not in weights:
        raise NetdefError(f"weights have no {h}.dfl.conv.weight, which reg_max {arch.reg_max} ({h}.cv2.0.2) needs")
    if task == "seg":
        arch.num_masks = size(weights, f"{h}.cv4.0.2.bias")
        arch.num_protos = size(weights, f"{h}.proto.cv1.bn.weight")
        if size(weights, f"{h}.proto.cv3.bn.weight") != arch.num_masks:
            raise NetdefError(
                f"{h}.proto.cv3 makes {size(weights, f'{h}.proto.cv3.bn.weight')} prototypes but "
                f"{h}.cv4 predicts {arch.num_masks} mask coefficients"
            )
    if task == "pose":
        arch.num_keypoint_values = size(weights, f"{h}.cv4.0.2.bias")
        if f"{h}.kpt_shape" in weights:
            k, d = (int(v) for v in peek(weights, f"{h}.kpt_shape"))
            if k * d != arch.num_keypoint_values or d not in (2, 3):
                raise NetdefError(
                    f"{h}.kpt_shape says {[k, d]} but {h}.cv4.0.2 predicts {arch.num_keypoint_values} keypoint values"
                )
            arch.kpt_shape = (k, d)
    return arch


def _refuse_other_models(weights) -> None:
    """One line naming what the weights hold when it is not a YOLOv8/YOLO11 model."""
    if "model.0.conv.weight" not in weights:
        if "model.0.conv.conv.weight" in weights:
            raise NetdefError("weights have a Focus stem (model.0.conv.conv): an early YOLOv5, not YOLOv8/YOLO11")
        raise NetdefError("weights have no model.0.conv.weight: not an ultralytics YOLOv8/YOLO11 model")
    if "model.2.cv3.conv.weight" in weights:
        raise NetdefError("weights hold a YOLOv5 model (C3 blocks: model.2.cv3): use netdefs/yolov5.py")
    e2e = sorted(k for k in weights if re.match(r"model\.\d+\.one2one_cv2\.", k))
    if e2e:
        raise NetdefError(
            f"weights have an end-to-end head ({e2e[0].rsplit('.', 3)[0]}: YOLOv10/YOLO26): only "
            "YOLOv8 and YOLO11 are supported"
        )
    if "model.2.m.0.cv1.conv.weight" not in weights:
        raise NetdefError(
            "weights have no model.2.m.0.cv1.conv.weight: model.2 is not a C2f/C3k2 block, so not YOLOv8/YOLO11"
        )


def _layout_error(last: int, attention: list[int], head: str) -> str:
    has = f"C2PSA at model.{attention[0]}" if attention else "no C2PSA"
    want = (
        "YOLOv8 has it at model.22 (Classify: model.9), YOLO11 at model.23 with C2PSA at model.10 (Classify: "
        "model.10, C2PSA at model.9)"
    )
    return f"weights have a {head} head at model.{last} and {has}: {want}"


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
    """``n`` ... ``x`` when the weights match a published scale, else ``custom``."""
    return next((s for s, m in scale_table(arch).items() if reproduces(arch, *m)), "custom")


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
        f"C2f/C3k2 {[arch.repeats[i] for i in sorted(arch.repeats)]})"
    )
