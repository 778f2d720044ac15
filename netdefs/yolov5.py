"""YOLOv5 v7.0 (ultralytics/yolov5, the ``yolov5==7.0.14`` package): detection, segmentation, classification.

python gen_wts.py --model yolov5:yolov5s --random-init -o yolov5s.wts
python netdefs/yolov5.py build -w yolov5s.wts -o yolov5s.engine [--imgsz 640] [--batch 1:4:16]
python netdefs/yolov5.py check -w yolov5s.wts --image bus.jpg
python netdefs/yolov5.py infer -w yolov5s.wts bus.jpg zidane.jpg -o out/    # reference executor, any machine
python netdefs/yolov5.py infer -e yolov5s.engine images/ -o out/            # TensorRT

Layer by layer like ``models/yolo.py`` + ``models/common.py`` (and tensorrtx's yolov5), every layer named after
the module path it mirrors (``model.2.cv1``) so ``check`` compares each block with PyTorch. What the model is --
task, P5/P6, depth (bottlenecks per C3), width (channels), classes, anchors, strides, mask coefficients -- is
read from the weights; a flag that contradicts them stops the build with a message saying what they contain.

Post-processing (``--postprocess``): ``native`` decodes boxes with TensorRT layers and ends either in TensorRT's
NMS layer (where the backend's builder implements it) or at the decoded boxes, with NMS right after the engine;
``plugin`` uses the ``yolo_decode`` + ``nms`` plugins; ``none`` outputs the raw head.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable, and let `import yolov5`
    _here = Path(__file__).resolve().parent  # find the yolov5 package, not this file
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from netdefs import sources as model_sources
from netdefs.common import activation, concat, flatten, global_avg_pool, max_pool, upsample_nearest
from trtx import letterbox as lb
from trtx import nms as cpu_nms
from trtx.net import Net, NetdefError
from trtx.netdef import App, Model, Netdef, TorchSide

NAME = "yolov5"
INPUT = "images"
TASKS = ("detect", "seg", "cls")
POSTPROCESS = ("native", "plugin", "none")
#: (depth_multiple, width_multiple) of the published variants; P6 variants (n6 ...) use the same
VARIANTS = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25)}
#: model names for ``python -m netdefs <model> ...`` -> the options that select (and double-check) them
MODELS = {
    **{f"yolov5{v}": ("--variant", v, "--task", "detect") for v in (*VARIANTS, *(f"{v}6" for v in VARIANTS))},
    **{f"yolov5{v}-{t}": ("--variant", v, "--task", t) for t in ("seg", "cls") for v in VARIANTS},
}
DEFAULT_MODEL = "yolov5s"
#: C3 repeats in the yaml before the depth multiple: backbone (P2, P3, P4, P5[, P6]) and head
BACKBONE_REPEATS = {False: (3, 6, 9, 3), True: (3, 6, 9, 3, 3)}
BN_EPS = 1e-3  # yolov5's initialize_weights() sets every BatchNorm2d to eps=1e-3 (Classify's excepted)
MAX_WH = cpu_nms.MAX_WH
MAX_NMS = 30000  # yolov5's max_nms: candidates per image that enter NMS
TRT_NMS_TOPK_LIMIT = 5000  # INMSLayer's largest TopK box limit
CLS_MEAN = (0.485, 0.456, 0.406)  # yolov5's IMAGENET_MEAN / IMAGENET_STD (classify_transforms)
CLS_STD = (0.229, 0.224, 0.225)

COCO_NAMES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign parking_meter "
    "bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee "
    "skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard tennis_racket bottle "
    "wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake "
    "chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard cell_phone microwave oven "
    "toaster sink refrigerator book clock vase scissors teddy_bear hair_drier toothbrush"
)
COCO_NAMES = tuple(n.replace("_", " ") for n in COCO_NAMES.split())


# ---- what the weights contain ----------------------------------------------------------------------------
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


def _peek(weights, key: str) -> np.ndarray:
    """A weight without marking it read (configure only looks)."""
    peek = getattr(weights, "peek", None)
    return np.asarray(peek(key) if peek is not None else weights[key], dtype=np.float32).reshape(-1)


def _size(weights, key: str) -> int:
    return int(_peek(weights, key).size)


def _count(weights, pattern: str) -> int:
    """How many consecutive j have ``pattern.format(j)`` in the weights."""
    j = 0
    while pattern.format(j) in weights:
        j += 1
    return j


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
                channels[i] = _size(weights, key)
                break
    repeats = {i: n for i in indices if (n := _count(weights, f"model.{i}.m.{{}}.cv1.conv.weight"))}
    if f"model.{last}.linear.weight" in weights:  # Classify
        nc = _size(weights, f"model.{last}.linear.bias")
        p6 = last > 9
        return Arch("cls", p6, last, repeats, nc, channels)
    det = f"model.{last}"
    nl = _count(weights, det + ".m.{}.weight")
    if nl == 0:
        raise NetdefError(f"weights end with {det} but it is neither Detect/Segment ({det}.m.0.weight) nor "
                          f"Classify ({det}.linear.weight)")  # fmt: skip
    if nl not in (3, 4) or last != (24 if nl == 3 else 33):
        raise NetdefError(f"weights have a head {det} with {nl} levels: YOLOv5 P5 has model.24 with 3, P6 model.33 "
                          "with 4")  # fmt: skip
    p6 = nl == 4
    task = "seg" if f"{det}.proto.cv3.conv.weight" in weights else "detect"
    if f"{det}.anchors" in weights:
        anchors_grid_units = _peek(weights, f"{det}.anchors")
    elif f"{det}.anchor_grid" in weights:
        anchors_grid_units = None
    else:
        raise NetdefError(f"weights have neither {det}.anchors nor {det}.anchor_grid: the anchors are unknown")
    default_strides = [8 * 2**i for i in range(nl)]
    if f"{det}.strides" in weights:
        strides_f = _peek(weights, f"{det}.strides")
        if strides_f.size != nl or not np.array_equal(strides_f, np.round(strides_f)):
            raise NetdefError(f"{det}.strides holds {strides_f.tolist()}, not {nl} integer strides")
        strides = [int(s) for s in strides_f]
        if strides != default_strides:
            raise NetdefError(f"{det}.strides are {strides} but a {'P6' if p6 else 'P5'} YOLOv5 head has "
                              f"{default_strides}")  # fmt: skip
    else:
        strides = default_strides
    if f"{det}.anchor_grid" in weights:
        grid = _peek(weights, f"{det}.anchor_grid")
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
    nm = _size(weights, f"{det}.proto.cv3.bn.weight") if task == "seg" else 0
    npr = _size(weights, f"{det}.proto.cv1.bn.weight") if task == "seg" else 0
    per_level = _size(weights, f"{det}.m.0.bias")
    if per_level % na or per_level // na - 5 - nm < 1:
        raise NetdefError(f"{det}.m.0.bias has {per_level} values: not {na} anchors x (5 + classes + {nm} masks)")
    nc = per_level // na - 5 - nm
    return Arch(task, p6, last, repeats, nc, channels, na, nm, npr, pixels.astype(float).tolist(), strides)


def _multiples(arch: Arch) -> tuple[float, float]:
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
        gd, gw = _multiples(arch)
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


# ---- configuration --------------------------------------------------------------------------------------
@dataclass
class Config:
    task: str
    variant: str
    p6: bool
    num_classes: int
    names: list[str]
    imgsz: tuple[int, int]
    postprocess: str = "native"
    nms_in_engine: bool = False
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 300
    anchors: list[list[float]] = field(default_factory=list)
    strides: list[int] = field(default_factory=list)
    num_anchors: int = 0
    num_masks: int = 0
    depth_multiple: float | None = None
    width_multiple: float | None = None
    model_spec: str | None = None
    arch: Arch | None = None
    outputs: list[str] = field(default_factory=list)
    #: infer/bench --device: "cuda" letterboxes on the GPU (trtx.letterbox's kernel)
    device: str = "cpu"
    io_dtype: str = "float32"
    _gpu_letterbox: Any = None

    @property
    def max_stride(self) -> int:
        return 64 if self.p6 else 32

    @property
    def model_name(self) -> str:
        return f"yolov5{self.variant}" + {"detect": "", "seg": "-seg", "cls": "-cls"}[self.task]


def parse_imgsz(text: str | int | None, multiple: int = 32) -> tuple[int, int]:
    """``640`` or ``480,640`` / ``480x640`` (height, width), each a positive multiple of ``multiple``."""
    parts = [p for p in re.split(r"[,x ]", str(text).strip()) if p]
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims *= 2
    if len(dims) != 2 or any(d <= 0 or d % multiple for d in dims):
        raise NetdefError(
            f"--imgsz {text}: the input size must be N or H,W with each a positive multiple of {multiple} "
            f"(the model's largest stride)"
        )
    return dims[0], dims[1]


def read_names(path: str | None, num_classes: int) -> list[str]:
    """Class names from a .txt (one per line), .yaml/.json (``names``: list or {id: name}); default COCO's
    80 names when the weights have 80 classes, ImageNet's for 1000, else ``class0``..."""
    if path is None:
        imagenet = Path(__file__).with_name("imagenet_classes.txt")  # yolov5-cls models are ImageNet models
        if num_classes == 1000 and imagenet.is_file():
            return [line.strip() for line in imagenet.read_text().splitlines() if line.strip()][:1000]
        return list(COCO_NAMES) if num_classes == len(COCO_NAMES) else [f"class{i}" for i in range(num_classes)]
    p = Path(path)
    if not p.is_file():
        raise NetdefError(f"--names {path}: no such file")
    if p.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        doc = yaml.safe_load(p.read_text())
        names = doc.get("names", doc) if isinstance(doc, dict) else doc
        names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    else:
        names = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    if len(names) != num_classes:
        raise NetdefError(f"--names {path} lists {len(names)} names but the weights have {num_classes} classes")
    return [str(n) for n in names]


def configure(args, weights, meta: dict | None = None) -> Config:
    """The configuration: from the weights (build, check, inspect, infer -w) or an engine's metadata."""
    if meta is not None:
        return _config_from_meta(args, meta)
    arch = read_arch(weights)
    head = f"model.{arch.head}"
    flag_task = getattr(args, "task", None)
    if flag_task and flag_task != arch.task:
        what = {"detect": f"a Detect head ({head}.m.*, no proto)", "seg": f"a Segment head ({head}.proto.*)",
                "cls": f"a Classify head ({head}.linear)"}[arch.task]  # fmt: skip
        raise NetdefError(f"--task {flag_task}, but the weights contain a {arch.task} model: {what}")
    classes = getattr(args, "classes", None)
    if classes is not None and classes != arch.num_classes:
        key = f"{head}.linear.bias" if arch.task == "cls" else f"{head}.m.0.bias"
        how = (
            f"{key} has {arch.num_classes} values"
            if arch.task == "cls"
            else f"{key} has {arch.num_anchors * arch.outputs_per_anchor} values = {arch.num_anchors} anchors x "
            f"(5 + {arch.num_classes} classes" + (f" + {arch.num_masks} masks)" if arch.num_masks else ")")
        )
        raise NetdefError(f"--classes {classes}, but the weights contain {arch.num_classes} classes ({how})")
    variant = variant_name(arch)
    flag_variant = getattr(args, "variant", "auto") or "auto"
    if flag_variant not in ("auto", variant):
        raise NetdefError(
            f"--variant {flag_variant}, but the weights contain yolov5{variant} "
            f"({'P6' if arch.p6 else 'P5'}, {arch.channels.get(0)} stem channels, backbone C3 depths "
            f"{[arch.repeats[i] for i in sorted(arch.repeats) if i < 2 * (6 if arch.p6 else 5)]})"
        )
    if variant != "custom":
        gd, gw = VARIANTS[variant.rstrip("6")]
    else:
        try:
            gd, gw = _multiples(arch)
        except NetdefError:
            gd = gw = None
    postprocess = getattr(args, "postprocess", "native") or "native"
    command = getattr(args, "command", "build")
    default_size = 224 if arch.task == "cls" else (1280 if arch.p6 else 640)
    cfg = Config(
        task=arch.task,
        variant=variant,
        p6=arch.p6,
        num_classes=arch.num_classes,
        names=read_names(getattr(args, "names", None), arch.num_classes),
        imgsz=(0, 0),
        postprocess=postprocess if arch.task != "cls" else "none",
        conf=_threshold(_flag(args, "conf", 0.25), "--conf"),
        iou=_threshold(_flag(args, "iou", 0.45), "--iou"),
        max_det=int(_flag(args, "max_det", 300)),
        anchors=arch.anchors,
        strides=arch.strides,
        num_anchors=arch.num_anchors,
        num_masks=arch.num_masks,
        depth_multiple=gd,
        width_multiple=gw,
        model_spec=getattr(args, "model", None),
        arch=arch,
    )
    cfg.imgsz = parse_imgsz(getattr(args, "imgsz", None) or default_size, cfg.max_stride)
    _runtime_options(cfg, args)
    from trtx_base import backend

    try:
        be = backend.get()
    except backend.BackendUnavailable:  # configuring only (bench's PyTorch parts): no network will be defined
        be = None
    # TensorRT's NMS layer goes into engines only: check and the reference executor compare up to it
    engine_nms = bool(be and be.has_nms_runner) and cfg.postprocess == "native"
    cfg.nms_in_engine = engine_nms and command in ("build", "inspect")
    if cfg.postprocess == "plugin" and not (be and be.has_plugin_layers):
        what = f"{be.name} {be.version} does not have" if be else "no TensorRT module is installed to provide"
        raise NetdefError(
            f"--postprocess plugin needs plugin layers, which {what}; "
            "use --postprocess native (decode in TensorRT layers, NMS after the engine) or none"
        )
    return cfg


def _flag(args, name: str, default):
    value = getattr(args, name, None)
    return default if value is None else value


def _threshold(value, flag: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise NetdefError(f"{flag} {value}: must lie in [0, 1]")
    return value


def _config_from_meta(args, meta: dict) -> Config:
    m = meta.get("yolov5")
    if m is None:
        raise NetdefError(f"engine metadata has no 'yolov5' section: it was built by netdef {meta.get('netdef')!r}")
    try:
        return _config_from_section(args, meta, m)
    except (KeyError, TypeError) as exc:
        raise NetdefError(f"engine metadata: the 'yolov5' section lacks or garbles {exc}") from None


def _config_from_section(args, meta: dict, m: dict) -> Config:
    post = m["postprocess"]
    cfg = Config(
        task=m["task"],
        variant=m["variant"],
        p6=m["p6"],
        num_classes=m["num_classes"],
        names=m["names"],
        imgsz=tuple(m["imgsz"]),
        postprocess=post["mode"],
        nms_in_engine=post["nms"] == "engine",
        conf=_threshold(_flag(args, "conf", post.get("conf", 0.25)), "--conf"),
        iou=_threshold(_flag(args, "iou", post.get("iou", 0.45)), "--iou"),
        max_det=int(_flag(args, "max_det", post.get("max_det", 300))),
        anchors=m["anchors"],
        strides=m["strides"],
        num_anchors=m["num_anchors"],
        num_masks=m["num_masks"],
        depth_multiple=m.get("depth_multiple"),
        width_multiple=m.get("width_multiple"),
        outputs=[o["name"] for o in meta["outputs"]],
    )
    if getattr(args, "names", None):
        cfg.names = read_names(args.names, cfg.num_classes)
    _runtime_options(cfg, args)
    cfg.io_dtype = meta["inputs"][0]["dtype"]
    return cfg


def _runtime_options(cfg: Config, args) -> None:
    cfg.device = str(getattr(args, "device", None) or "cpu")
    cfg.io_dtype = "float16" if getattr(args, "io_dtype", "fp32") == "fp16" else "float32"


def add_arguments(parser, command: str) -> None:
    parser.add_argument(
        "--variant",
        default="auto",
        help="expected variant n|s|m|l|x|n6|s6|m6|l6|x6; 'auto' (default) takes what the weights contain, "
        "custom depth/width multiples included",
    )
    parser.add_argument("--task", choices=TASKS, help="expected task; default: what the weights contain")
    parser.add_argument("--classes", type=int, help="expected number of classes (checked against the weights)")
    parser.add_argument("--names", help="class names: .txt (one per line) or .yaml/.json with 'names'")
    parser.add_argument(
        "--imgsz",
        help="input size N or H,W, multiples of 32 (64 for P6); default 640 (1280 for P6, 224 for cls); "
        "an engine's own size is fixed",
    )
    parser.add_argument(
        "--postprocess",
        choices=POSTPROCESS,
        default="native",
        help="native (default): decode in TensorRT layers + TensorRT's NMS layer where the backend builds it, "
        "else NMS right after the engine; plugin: yolo_decode + nms plugins; none: raw head outputs",
    )
    parser.add_argument("--conf", type=float, default=None, help="confidence threshold (default 0.25)")
    parser.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (default 0.45)")
    parser.add_argument("--max-det", type=int, default=None, help="detections kept per image (default 300)")
    if command == "bench":
        parser.set_defaults(image=_asset("bus.jpg"))
    if command == "check":
        parser.add_argument(
            "--model",
            help="PyTorch model to compare with, a trtx.sources spec (e.g. yolov5:yolov5s); default: built from "
            "the yolov5 yaml with the depth/width/classes/anchors the weights contain",
        )


def _asset(name: str) -> str | None:
    """An image ultralytics ships (bus.jpg, zidane.jpg), found without importing ultralytics."""
    from trtx import sources

    try:
        path = sources.sample_images() / name
    except sources.SourceError:
        return None
    return str(path) if path.is_file() else None


# ---- blocks (models/common.py) ---------------------------------------------------------------------------
def conv(net: Net, x, path: str, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, eps: float = BN_EPS):
    """models.common.Conv: Conv2d(bias=False) -> BatchNorm2d (an IScale) -> SiLU."""
    y = net.conv(x, f"{path}.conv", k, stride=s, padding=k // 2 if p is None else p, groups=g, bias=False)
    y = net.batchnorm(y.get_output(0), f"{path}.bn", eps=eps).get_output(0)
    return activation(net, y, "silu", path)


def bottleneck(net: Net, x, path: str, shortcut: bool = True):
    """models.common.Bottleneck(c_, c_, shortcut, e=1.0): x + cv2(cv1(x)) (the add only with shortcut)."""
    y = conv(net, conv(net, x, f"{path}.cv1", 1), f"{path}.cv2", 3)
    if not shortcut:
        return net.alias(y, path)
    return net.name(net.network.add_elementwise(x, y, net.trt.ElementWiseOperation.SUM), path).get_output(0)


def c3(net: Net, x, path: str, shortcut: bool = True):
    """models.common.C3: cv3(cat(m(cv1(x)), cv2(x))); the number of bottlenecks comes from the weights."""
    n = _count(net.weights, f"{path}.m.{{}}.cv1.conv.weight")
    if n == 0:
        raise NetdefError(f"layer {path} (C3): the weights have no {path}.m.0.cv1.conv.weight")
    y = conv(net, x, f"{path}.cv1", 1)
    for j in range(n):
        y = bottleneck(net, y, f"{path}.m.{j}", shortcut)
    y = concat(net, [y, conv(net, x, f"{path}.cv2", 1)], f"{path}.cat")
    return net.alias(conv(net, y, f"{path}.cv3", 1), path)


def sppf(net: Net, x, path: str, k: int = 5):
    """models.common.SPPF: cv2(cat(x, m(x), m(m(x)), m(m(m(x))))) after x = cv1(x); m = MaxPool2d(k, 1, k//2)."""
    x = conv(net, x, f"{path}.cv1", 1)
    y1 = max_pool(net, x, f"{path}.m.y1", k, 1, k // 2)  # the one MaxPool2d runs three times: no module path
    y2 = max_pool(net, y1, f"{path}.m.y2", k, 1, k // 2)
    y3 = max_pool(net, y2, f"{path}.m.y3", k, 1, k // 2)
    return net.alias(conv(net, concat(net, [x, y1, y2, y3], f"{path}.cat"), f"{path}.cv2", 1), path)


def proto(net: Net, x, path: str):
    """models.common.Proto: cv3(cv2(upsample(cv1(x)))), the mask prototypes of a Segment head."""
    y = upsample_nearest(net, conv(net, x, f"{path}.cv1", 3), f"{path}.upsample", 2.0)
    return net.alias(conv(net, conv(net, y, f"{path}.cv2", 3), f"{path}.cv3", 1), path)


def classify(net: Net, x, path: str):
    """models.common.Classify: linear(flatten(pool(conv(x)))) (dropout is the identity at inference).

    ClassificationModel adds it after initialize_weights() ran, so its BatchNorm2d keeps PyTorch's eps 1e-5."""
    y = global_avg_pool(net, conv(net, x, f"{path}.conv", 1, eps=1e-5), f"{path}.pool")
    return net.linear(flatten(net, y, f"{path}.flatten"), f"{path}.linear").get_output(0)


# ---- the model (models/yolo.py, the v6.0 yaml layouts) -----------------------------------------------------
def backbone(net: Net, x, cfg: Config) -> dict[int, Any]:
    """Conv 6x6/2 stem, then per level P2..P5 (P6) a Conv 3x3/2 and a C3, then SPPF (not for cls, where
    Classify takes its place). Returns every module's output by index, as BaseModel._forward_once keeps them."""
    y = {0: conv(net, x, "model.0", 6, 2, 2)}
    i = 1
    for _ in range(5 if cfg.p6 else 4):
        y[i] = conv(net, y[i - 1], f"model.{i}", 3, 2)
        y[i + 1] = c3(net, y[i], f"model.{i + 1}")
        i += 2
    if cfg.task != "cls":
        y[i] = sppf(net, y[i - 1], f"model.{i}")
    return y


def head(net: Net, y: dict[int, Any], cfg: Config) -> list:
    """The PANet head: top-down (Conv 1x1, Upsample, Concat with the backbone's C3, C3 without shortcut),
    then bottom-up (Conv 3x3/2, Concat with the top-down Conv, C3). Returns the P3..P5 (P6) outputs."""
    top = 6 if cfg.p6 else 5
    i = 2 * top - 1  # SPPF's index
    x = y[i]
    i += 1
    lateral = []
    for level in range(top - 1, 2, -1):  # P4, P3 (P5, P4, P3): cat with the backbone C3 of that level
        y[i] = conv(net, x, f"model.{i}", 1, 1)
        y[i + 1] = upsample_nearest(net, y[i], f"model.{i + 1}", 2.0)
        y[i + 2] = concat(net, [y[i + 1], y[2 * (level - 1)]], f"model.{i + 2}")
        y[i + 3] = x = c3(net, y[i + 2], f"model.{i + 3}", shortcut=False)
        lateral.append(i)
        i += 4
    outs = [x]
    for j in reversed(lateral):  # P4, P5 (P6): cat with the top-down Conv of that level
        y[i] = conv(net, x, f"model.{i}", 3, 2)
        y[i + 1] = concat(net, [y[i], y[j]], f"model.{i + 1}")
        y[i + 2] = x = c3(net, y[i + 1], f"model.{i + 2}", shortcut=False)
        outs.append(x)
        i += 3
    return outs


def define(net: Net, cfg: Config) -> None:
    """Mirrors DetectionModel / SegmentationModel / ClassificationModel forward, then the post-processing."""
    h, w = cfg.imgsz
    net.network.name = cfg.model_name
    x = net.input(INPUT, (-1, 3, h, w))
    y = backbone(net, x, cfg)
    if cfg.task == "cls":
        logits = classify(net, y[max(y)], f"model.{max(y) + 1}")
        prob = net.network.add_softmax(net.to_fp32(logits, "softmax.to_fp32"))
        prob.axes = 1 << 1
        net.output(logits, "logits")
        net.output(net.name(prob, "softmax").get_output(0), "prob")
    else:
        features = head(net, y, cfg)
        path = f"model.{cfg.arch.head}"
        for key in ("anchors", "anchor_grid", "strides"):  # read in configure: decode's constants
            if f"{path}.{key}" in net.weights:
                net.weights[f"{path}.{key}"]
        raw = [net.conv(f, f"{path}.m.{i}", 1).get_output(0) for i, f in enumerate(features)]
        protos = proto(net, features[0], f"{path}.proto") if cfg.task == "seg" else None
        if cfg.postprocess == "none":
            for i, r in enumerate(raw):
                net.output(r, f"raw{i}")
        elif cfg.postprocess == "plugin":
            _plugin_postprocess(net, raw, cfg, path)
        else:
            pred = decode(net, raw, cfg, path)
            _native_postprocess(net, pred, cfg, path)
        if protos is not None:
            net.output(protos, "proto")
    net.meta["yolov5"] = _meta(cfg, net)
    if cfg.task == "detect" and cfg.postprocess == "native":
        net.meta["detector"] = _detector_meta(cfg)


def _meta(cfg: Config, net: Net) -> dict:
    if cfg.task == "cls":
        post = {"mode": "none", "nms": "none"}
    else:
        post = {
            "mode": cfg.postprocess,
            "nms": "engine" if cfg.nms_in_engine else ("none" if cfg.postprocess == "none" else "after-engine"),
            "after_engine": "nms GPU kernel (plugins) when CUDA is present, else exact CPU NMS (trtx.nms)",
            "conf": cfg.conf,
            "iou": cfg.iou,
            "max_det": cfg.max_det,
            "max_nms": TRT_NMS_TOPK_LIMIT if cfg.nms_in_engine else MAX_NMS,
            "class_offset": MAX_WH,
            "box_format": "cxcywh (input pixels)",
        }
    return {
        "model": cfg.model_name,
        "task": cfg.task,
        "variant": cfg.variant,
        "p6": cfg.p6,
        "depth_multiple": cfg.depth_multiple,
        "width_multiple": cfg.width_multiple,
        "num_classes": cfg.num_classes,
        "names": cfg.names,
        "imgsz": list(cfg.imgsz),
        "input": INPUT,
        "anchors": cfg.anchors,
        "strides": cfg.strides,
        "num_anchors": cfg.num_anchors,
        "num_masks": cfg.num_masks,
        "postprocess": post,
    }


def _detector_meta(cfg: Config) -> dict:
    """The engine as a detection server sees it (``python -m trtx export deepstream``; docs/deploy.md)."""
    prefix = "det_" if cfg.nms_in_engine else ""
    return {
        "num_classes": cfg.num_classes,
        "names": cfg.names,
        "outputs": {role: prefix + role for role in ("boxes", "scores", "classes")},
        "box_format": "cxcywh",
        "nms": "engine" if cfg.nms_in_engine else "after-engine",
        "conf": cfg.conf,
        "iou": cfg.iou,
        "max_det": cfg.max_det,
        "input": _detector_input(),
    }


def _detector_input() -> dict:
    """What preprocess does to a BGR image: letterbox (centred, pad 114), BGR -> RGB, x / 255."""
    return {"name": INPUT, "color": "RGB", "scale": 1 / 255, "mean": [0.0] * 3, "letterbox": "center",
            "pad_value": lb.PAD_VALUE}  # fmt: skip


# ---- Detect: decode and NMS ---------------------------------------------------------------------------------
def decode(net: Net, raw: list, cfg: Config, path: str):
    """Detect.forward at inference: per level, [B, na*no, ny, nx] -> [B, na, ny, nx, no] -> sigmoid ->
    xy = (2σ + grid) * stride, wh = (2σ)² * anchor (Segment: mask coefficients stay raw), concatenated to
    [B, N, no] -- the tensor yolov5's non_max_suppression takes. In fp32.

    Written as y = σ·(a + σ·q) + gx + gy (+ x·m for masks) with small broadcast constants, so no layer slices
    the (dynamic) batch axis: a = 2·stride on x, y and 1 on the scores; q = 4·anchor on w, h; gx, gy =
    (cell - 0.5)·stride on x, y; m = 1 on the mask coefficients.
    """
    trt = net.trt
    nw = net.network
    na, no, nc = cfg.num_anchors, 5 + cfg.num_classes + cfg.num_masks, cfg.num_classes
    prod, add = trt.ElementWiseOperation.PROD, trt.ElementWiseOperation.SUM
    levels = []
    for i, r in enumerate(raw):
        ny, nx = int(r.shape[2]), int(r.shape[3])
        s = float(cfg.strides[i])
        p = f"{path}.decode.{i}"
        shuffle = nw.add_shuffle(net.to_fp32(r, f"{p}.to_fp32"))
        shuffle.reshape_dims = (0, na, no, ny, nx)
        shuffle.second_transpose = (0, 1, 3, 4, 2)
        t = net.name(shuffle, f"{p}.permute").get_output(0)  # x[i] of Detect.forward: [B, na, ny, nx, no]
        sig = net.name(nw.add_activation(t, trt.ActivationType.SIGMOID), f"{p}.sigmoid").get_output(0)
        a = np.zeros((1, 1, 1, 1, no), np.float32)
        a[..., 0:2] = 2 * s
        a[..., 4 : 5 + nc] = 1.0
        q = np.zeros((1, na, 1, 1, no), np.float32)
        q[0, :, 0, 0, 2:4] = 4 * np.asarray(cfg.anchors[i], np.float32)
        gx = np.zeros((1, 1, 1, nx, no), np.float32)
        gx[0, 0, 0, :, 0] = (np.arange(nx, dtype=np.float32) - 0.5) * s
        gy = np.zeros((1, 1, ny, 1, no), np.float32)
        gy[0, 0, :, 0, 1] = (np.arange(ny, dtype=np.float32) - 0.5) * s
        y = _op(net, sig, _const(net, q, f"{p}.anchor4"), prod, f"{p}.wh_sq")
        y = _op(net, y, _const(net, a, f"{p}.gain"), add, f"{p}.gain_add")
        y = _op(net, sig, y, prod, f"{p}.mul")
        y = _op(net, y, _const(net, gx, f"{p}.grid_x"), add, f"{p}.grid_x_add")
        y = _op(net, y, _const(net, gy, f"{p}.grid_y"), add, f"{p}.grid_y_add")
        if cfg.num_masks:
            m = np.zeros((1, 1, 1, 1, no), np.float32)
            m[..., 5 + nc :] = 1.0
            masks = _op(net, t, _const(net, m, f"{p}.mask_select"), prod, f"{p}.mask")
            y = _op(net, y, masks, add, f"{p}.mask_add")
        flat = nw.add_shuffle(y)
        flat.reshape_dims = (0, na * ny * nx, no)
        levels.append(net.name(flat, f"{p}.flatten").get_output(0))
    return concat(net, levels, f"{path}.decoded", axis=1)


def _op(net: Net, a, b, kind, name: str):
    return net.name(net.network.add_elementwise(a, b, kind), name).get_output(0)


def _const(net: Net, array: np.ndarray, name: str):
    return net.constant(array, name, np.float32)


def _gather(net: Net, x, indices, name: str, axis: int = 2):
    idx = net.constant(np.asarray(indices, np.int32), f"{name}.indices", np.int32)
    return net.name(net.network.add_gather(x, idx, axis), name).get_output(0)


def _native_postprocess(net: Net, pred, cfg: Config, path: str) -> None:
    """From [B, N, no]: boxes (cx, cy, w, h as decoded), score = obj x best class score and that class --
    yolov5's non_max_suppression up to the NMS itself -- then TensorRT's NMS layer where the builder has it."""
    trt = net.trt
    nw = net.network
    nc, nm = cfg.num_classes, cfg.num_masks
    prod = trt.ElementWiseOperation.PROD
    p = f"{path}.post"
    boxes = _gather(net, pred, [0, 1, 2, 3], f"{p}.boxes")
    obj = _gather(net, pred, [4], f"{p}.obj")
    conf = net.name(nw.add_elementwise(_gather(net, pred, range(5, 5 + nc), f"{p}.cls"), obj, prod),
                    f"{p}.conf").get_output(0)  # fmt: skip
    best = net.name(nw.add_topk(conf, trt.TopKOperation.MAX, 1, 1 << 2), f"{p}.best")
    scores = _squeeze_last(net, best.get_output(0), f"{p}.scores")
    classes = _squeeze_last(net, best.get_output(1), f"{p}.classes")
    masks = _gather(net, pred, range(5 + nc, 5 + nc + nm), f"{p}.masks") if nm else None
    if not cfg.nms_in_engine:
        net.output(boxes, "boxes")
        net.output(scores, "scores")
        net.output(classes, "classes", np.int32)
        if masks is not None:
            net.output(masks, "masks")
        return
    _nms_layer(net, boxes, scores, classes, masks, cfg, p)


def _squeeze_last(net: Net, x, name: str):
    layer = net.network.add_shuffle(x)
    layer.reshape_dims = (0, int(x.shape[1]))
    return net.name(layer, name).get_output(0)


def _nms_layer(net: Net, boxes, scores, classes, masks, cfg: Config, p: str) -> None:
    """TensorRT's INMSLayer, class-aware the way yolov5 does it (boxes shifted by class x 7680, one score per
    box), then the kept boxes gathered: det_* outputs with one row per detection over the whole batch."""
    trt = net.trt
    nw = net.network
    n = int(boxes.shape[1])
    cls_f = nw.add_cast(classes, trt.DataType.FLOAT)
    cls3 = nw.add_shuffle(net.name(cls_f, f"{p}.classes_f").get_output(0))
    cls3.reshape_dims = (0, n, 1)
    offset = np.array([[[MAX_WH, MAX_WH, 0.0, 0.0]]], np.float32)  # (cx, cy, w, h): move the center only
    shift = _op(net, net.name(cls3, f"{p}.classes_f3").get_output(0), _const(net, offset, f"{p}.max_wh"),
                trt.ElementWiseOperation.PROD, f"{p}.class_shift")  # fmt: skip
    shifted = nw.add_elementwise(boxes, shift, trt.ElementWiseOperation.SUM)
    scores3 = nw.add_shuffle(scores)
    scores3.reshape_dims = (0, n, 1)
    max_out = net.constant(np.array(cfg.max_det, np.int32), f"{p}.max_det", np.int32)
    layer = nw.add_nms(net.name(shifted, f"{p}.shifted_boxes").get_output(0),
                       net.name(scores3, f"{p}.scores3").get_output(0), max_out)  # fmt: skip
    layer.set_input(3, net.constant(np.array(cfg.iou, np.float32), f"{p}.iou", np.float32))
    layer.set_input(4, net.constant(np.array(cfg.conf, np.float32), f"{p}.conf_thres", np.float32))
    layer.topk_box_limit = min(TRT_NMS_TOPK_LIMIT, n)
    layer.bounding_box_format = trt.BoundingBoxFormat.CENTER_SIZES
    net.name(layer, f"{p}.nms")
    selected = layer.get_output(0)  # [K, 3]: batch, class (always 0), box
    batch = _gather(net, selected, [0], f"{p}.det_batch_col", axis=1)
    box = _gather(net, selected, [2], f"{p}.det_box_col", axis=1)
    pairs = concat(net, [batch, box], f"{p}.det_pairs", axis=1)  # [K, 2]: (batch, box)

    def gather_nd(data, name):
        g = nw.add_gather_v2(data, pairs, trt.GatherMode.ND)
        return net.name(g, name).get_output(0)

    net.output(_squeeze_last_k(net, batch, f"{p}.det_batch"), "det_batch", np.int32)
    net.output(_squeeze_last_k(net, box, f"{p}.det_index"), "det_index", np.int32)
    net.output(gather_nd(boxes, f"{p}.det_boxes"), "det_boxes")
    net.output(gather_nd(scores, f"{p}.det_scores"), "det_scores")
    net.output(gather_nd(classes, f"{p}.det_classes"), "det_classes", np.int32)
    if masks is not None:
        net.output(gather_nd(masks, f"{p}.det_masks"), "det_masks")


def _squeeze_last_k(net: Net, x, name: str):
    layer = net.network.add_shuffle(x)
    layer.reshape_dims = (-1,)
    return net.name(layer, name).get_output(0)


def _plugin_postprocess(net: Net, raw: list, cfg: Config, path: str) -> None:
    """tensorrtx's way: the ``yolo_decode`` plugin per level (decode + confidence filter), then the ``nms``
    plugin over all levels: outputs ``num`` [B] and ``dets`` [B, max_det, 8] (cx, cy, w, h, score, class,
    level, anchor index)."""
    from plugins import nms as nms_plugin
    from plugins import yolo_decode

    if cfg.num_masks:
        raise NetdefError("--postprocess plugin: the yolo_decode plugin has no mask coefficients; build seg "
                          "models with --postprocess native or none")  # fmt: skip
    sizes = [cfg.num_anchors * int(r.shape[2]) * int(r.shape[3]) for r in raw]
    cap = nms_plugin.MAX_SLOTS // len(raw)  # the nms plugin takes at most MAX_SLOTS rows per image
    pairs = []
    for i, r in enumerate(raw):
        anchors = [float(v) for pair in cfg.anchors[i] for v in pair]
        layer = yolo_decode.add_to_network(
            net, [r], name=f"{path}.decode.{i}", num_classes=cfg.num_classes, anchors=anchors,
            stride=float(cfg.strides[i]), conf_threshold=cfg.conf, max_det=min(sizes[i], cap), level=i,
        )  # fmt: skip
        pairs += [layer.get_output(0), layer.get_output(1)]
    layer = nms_plugin.add_to_network(net, pairs, name=f"{path}.nms", iou_threshold=cfg.iou,
                                      score_threshold=cfg.conf, max_det=cfg.max_det)  # fmt: skip
    net.output(layer.get_output(0), "num", np.int32)
    net.output(layer.get_output(1), "dets")


# ---- the PyTorch side (check) ---------------------------------------------------------------------------


def torch_model(cfg: Config, weights):
    """The yolov5 package's model with these weights: ``--model SPEC`` or built from the yaml with the
    depth/width multiples, classes, anchors (and mask coefficients) the weights contain."""
    from trtx import sources

    ignore = [f"model.{cfg.arch.head}.{k}" for k in model_sources.YOLOV5_EXTRAS]
    try:
        model = model_sources.build_model(cfg.model_spec) if cfg.model_spec else _build_torch(cfg)
        sources.load_state(model, weights, ignore=ignore)
    except sources.SourceError as exc:
        where = f"--model {cfg.model_spec}" if cfg.model_spec else f"the yolov5 yaml rebuilt as yolov5{cfg.variant}"
        raise NetdefError(f"{where}: {exc}") from None
    model.trtx_postprocess = cfg.postprocess  # which outputs torch_forward computes
    return model.eval()


def _build_torch(cfg: Config):
    import yaml

    from trtx import sources

    if cfg.depth_multiple is None:
        raise NetdefError("the weights' depths/widths match no YOLOv5 multiple; pass --model SPEC to compare")
    base = "yolov5s6" if cfg.p6 else ("yolov5s-seg" if cfg.task == "seg" else "yolov5s")
    d = yaml.safe_load(model_sources.yolov5_yaml(base).read_text())
    d["depth_multiple"], d["width_multiple"] = cfg.depth_multiple, cfg.width_multiple
    d["nc"] = cfg.num_classes if cfg.task != "cls" else 80
    if cfg.task != "cls":
        d["anchors"] = [[round(v, 6) for pair in level for v in pair] for level in cfg.anchors]
    if cfg.task == "seg":
        d["head"][-1][3][2] = cfg.num_masks
    sources.prepare_environment()
    with sources.quiet():
        from yolov5.models.yolo import ClassificationModel, DetectionModel, SegmentationModel

        if cfg.task == "cls":
            detect = DetectionModel(d)
            return ClassificationModel(model=detect, nc=cfg.num_classes, cutoff=len(d["backbone"]))
        return (SegmentationModel if cfg.task == "seg" else DetectionModel)(d)


def torch_forward(model, feeds) -> dict:
    """The network's outputs computed by the PyTorch model (+ yolov5's own xywh2xyxy and conf = obj x cls)."""
    import torch

    x = feeds[INPUT]
    out = model(x)
    if not isinstance(out, (tuple, list)):  # Classify
        return {"logits": out, "prob": torch.softmax(out, 1)}
    head_module = model.model[-1]
    pred, raw = out[0], out[-1]
    proto_out = out[1] if len(out) == 3 else None
    result = {}
    if proto_out is not None:
        result["proto"] = proto_out
    nc = head_module.nc
    if getattr(model, "trtx_postprocess", "native") == "none":
        for i, r in enumerate(raw):
            b, na, ny, nx, no = r.shape
            result[f"raw{i}"] = r.permute(0, 1, 4, 2, 3).reshape(b, na * no, ny, nx)
        return result
    conf = pred[..., 5 : 5 + nc] * pred[..., 4:5]
    scores, classes = conf.max(2)
    result.update(boxes=pred[..., :4], scores=scores, classes=classes.int())
    if pred.shape[-1] > 5 + nc:
        result["masks"] = pred[..., 5 + nc :]
    return result


def compare_detections(
    ours: list[np.ndarray], theirs: list[np.ndarray], iou: float, rtol: float = 1e-4, max_det: int | None = None
) -> tuple[bool, str]:
    """Same detections per image: matched one to one (same class, boxes within ``rtol`` x the box scale, scores
    within ``rtol`` x the top score). A detection without a match passes only when it is *tie-swapped*: the
    other side has an unmatched detection of the same class and (within tolerance) the same score, or kept one
    that overlaps it with IoU > ``iou`` -- greedy NMS and the max_det cut keep either, depending on how equal
    scores are ordered (yolov5's torch.sort orders them arbitrarily; random weights give many exact ties in
    the uniform padding). When both sides kept ``max_det`` boxes, the ones scoring (within tolerance) as low as
    the last kept box may differ in any class: that is where the cut fell."""
    problems, same, swapped = [], 0, 0
    for b, (o, t) in enumerate(zip(ours, theirs)):
        top = max([1e-30] + [float(np.abs(d[:, 4]).max()) for d in (o, t) if len(d)])
        scale = max([1.0] + [float(np.abs(d[:, :4]).max()) for d in (o, t) if len(d)])
        box_tol, score_tol = rtol * scale, rtol * top
        free_o = list(range(len(o)))
        unmatched_t = []
        for i, row in enumerate(t):
            j = next((j for j in free_o if o[j, 5] == row[5] and np.abs(o[j, :4] - row[:4]).max() <= box_tol
                      and abs(o[j, 4] - row[4]) <= score_tol), None)  # fmt: skip
            if j is None:
                unmatched_t.append(i)
            else:
                free_o.remove(j)
                same += 1
        left = {"network": o[free_o], "PyTorch": t[unmatched_t]}
        full = max_det is not None and len(o) == len(t) == max_det
        cut = min(float(o[:, 4].min()), float(t[:, 4].min())) + score_tol if full else -np.inf
        for side, other_side in (("network", "PyTorch"), ("PyTorch", "network")):
            kept_other = t if side == "network" else o
            for d in left[side]:
                if (d[4] <= cut or _tied(d, left[other_side], score_tol)
                        or _tied(d, kept_other, score_tol, d[:4], iou)):  # fmt: skip
                    swapped += 1
                else:
                    problems.append(f"image {b}: {side} detection {np.round(d[:4], 2).tolist()} class {int(d[5])} "
                                    f"score {d[4]:.6g} has no match")  # fmt: skip
    if problems:
        return False, f"{len(problems)} unmatched: " + "; ".join(problems[:3])
    if same + swapped == 0:
        return True, "0 detections on both sides (lower --conf to compare some)"
    tie = f"; {swapped} differ only by the order of tied scores" if swapped else ""
    return True, f"{same} identical (class equal, box and score within {rtol:g} relative){tie}"


def compare_nms(net_out: dict, torch_out: dict, cfg: Config, rtol: float = 1e-4) -> tuple[bool, str]:
    """Detections after NMS from the network's outputs vs from PyTorch's (both through :mod:`trtx.nms`;
    any two sets of native outputs of the same images, in fact).

    Greedy NMS is discontinuous: two scores closer than the outputs' rounding differences can swap places
    and change which boxes suppress which, down a chain. So the verdict compares NMS run with the candidates
    in the same order -- PyTorch's scores order both sides (the scores themselves are compared as outputs) --
    and the message also tells how the detections compare with each side in its own order."""
    theirs = detections_from_outputs(torch_out, cfg)
    kept = nms_indices(dict(net_out, scores=torch_out["scores"]), cfg)
    same_order = [gather_detections(net_out, b, k) for b, k in enumerate(kept)]
    passed, message = compare_detections(same_order, theirs, cfg.iou, rtol, max_det=cfg.max_det)
    _, own = compare_detections(detections_from_outputs(net_out, cfg), theirs, cfg.iou, rtol, max_det=cfg.max_det)
    return passed, f"{message} [each side in its own score order: {own}]"


def _tied(d: np.ndarray, others: np.ndarray, score_tol: float, box=None, iou: float = 0.0) -> bool:
    """Whether ``others`` holds a detection of ``d``'s class with its score (and, given ``box``, overlapping it
    with IoU > ``iou``): the two differ only in how NMS (or the max_det cut) ordered equal scores."""
    if not len(others):
        return False
    rivals = others[(others[:, 5] == d[5]) & (np.abs(others[:, 4] - d[4]) <= score_tol)]
    if box is None or not len(rivals):
        return bool(len(rivals))
    return bool((_iou(box, rivals[:, :4]) > iou).any())


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


#: boxes and scores of matched detections agree within this fraction of the box scale / top score
DETECTION_RTOL = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}


def check_extra(cfg: Config, outputs: dict, expected: dict, precision: str = "fp32") -> list[tuple[str, bool, str]]:
    """Final detections: NMS (trtx.nms, which equals yolov5's non_max_suppression: tests/test_nms_cpu.py) on the
    network's outputs vs on PyTorch's, within ``DETECTION_RTOL[precision]`` (cls: the top-1 class)."""
    if cfg.task == "cls":
        top_net = np.asarray(_np(outputs["prob"])).argmax(1)
        top_torch = np.asarray(_np(expected["prob"])).argmax(1)
        same = bool(np.array_equal(top_net, top_torch))
        return [("top-1 class", same, f"network {top_net.tolist()} vs PyTorch {top_torch.tolist()}")]
    if cfg.postprocess != "native" or cfg.nms_in_engine:
        return []
    net_out = {k: _np(v) for k, v in outputs.items()}
    torch_out = {k: _np(v) for k, v in expected.items()}
    return [("detections after NMS", *compare_nms(net_out, torch_out, cfg, DETECTION_RTOL[precision]))]


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


# ---- after the engine: NMS, boxes back to the image ------------------------------------------------------
def detections_from_outputs(
    outputs: dict, cfg: Config, class_offset: float | None = MAX_WH, batch: int | None = None
) -> list[np.ndarray]:
    """Per image [k, 6 + nm] (x1, y1, x2, y2, score, class, mask coefficients) in input pixels, best first.

    Native outputs go through the exact CPU NMS (:mod:`trtx.nms`), class-aware the way yolov5 does it
    (``class_offset``; None: exactly per class); engines that ran NMS themselves are only unpacked (``batch``:
    the number of images, which TensorRT's NMS outputs do not tell when the last ones have no detection)."""
    if "dets" in outputs:  # the nms plugin's records: cx, cy, w, h, score, class, level, anchor index
        num, dets = np.asarray(outputs["num"]).reshape(-1), np.asarray(outputs["dets"])
        per = []
        for b in range(dets.shape[0]):
            r = dets[b, : min(int(num[b]), dets.shape[1])]
            r = r[r[:, 4] > cfg.conf][: cfg.max_det]  # the engine's thresholds, or stricter ones given to infer
            per.append(np.concatenate([xywh2xyxy(r[:, :4]), r[:, 4:6]], 1).astype(np.float32))
        return per
    if "det_boxes" in outputs:  # NMS ran in the engine: rows in no particular order
        image = np.asarray(outputs["det_batch"]).reshape(-1)
        index = np.asarray(outputs["det_index"]).reshape(-1)
        rows = [xywh2xyxy(np.asarray(outputs["det_boxes"]).reshape(-1, 4)),
                np.asarray(outputs["det_scores"]).reshape(-1, 1),
                np.asarray(outputs["det_classes"]).reshape(-1, 1).astype(np.float32)]  # fmt: skip
        if "det_masks" in outputs:
            rows.append(np.asarray(outputs["det_masks"]).reshape(len(image), -1))
        table = np.concatenate(rows, 1).astype(np.float32)
        n = batch if batch is not None else (int(image.max()) + 1 if image.size else 0)
        per = []
        for b in range(n):
            mine = np.nonzero((image == b) & (table[:, 4] > cfg.conf))[0]
            per.append(table[mine[np.lexsort((index[mine], -table[mine, 4]))]][: cfg.max_det])  # score, box index
        return per
    kept = nms_indices(outputs, cfg, class_offset)
    return [gather_detections(outputs, b, k) for b, k in enumerate(kept)]


def nms_indices(outputs: dict, cfg: Config, class_offset: float | None = MAX_WH) -> list[np.ndarray]:
    """Per image, the indices (into N) of the boxes the CPU NMS keeps from native outputs, best first."""
    xywh, scores, classes = (np.asarray(outputs[k]) for k in ("boxes", "scores", "classes"))
    return cpu_nms.batched_non_max_suppression(
        xywh2xyxy(xywh), scores, classes, conf_threshold=cfg.conf, iou_threshold=cfg.iou, max_det=cfg.max_det,
        max_nms=MAX_NMS, class_offset=class_offset,
    )  # fmt: skip


def gather_detections(outputs: dict, b: int, kept: np.ndarray) -> np.ndarray:
    """Rows x1, y1, x2, y2, score, class (, mask coefficients) of image ``b``'s boxes ``kept``."""
    cols = [xywh2xyxy(np.asarray(outputs["boxes"])[b][kept]), np.asarray(outputs["scores"])[b][kept, None],
            np.asarray(outputs["classes"])[b][kept, None].astype(np.float32)]  # fmt: skip
    if "masks" in outputs:
        cols.append(np.asarray(outputs["masks"])[b][kept])
    return np.concatenate(cols, 1).astype(np.float32)


def gpu_detections(outputs: dict, cfg: Config) -> list[np.ndarray]:
    """:func:`detections_from_outputs` for native outputs held as torch CUDA tensors: NMS by the ``nms``
    plugin's GPU kernels (:func:`trtx.nms.gpu_non_max_suppression`: exactly per class, candidates ordered by
    score, then box index)."""
    import torch

    kept_num, kept = cpu_nms.gpu_non_max_suppression(
        outputs["boxes"], outputs["scores"], outputs["classes"], conf_threshold=cfg.conf, iou_threshold=cfg.iou,
        max_det=cfg.max_det, max_nms=MAX_NMS,
    )  # fmt: skip
    kept_num, kept = kept_num.cpu().numpy(), kept.cpu().numpy()
    masks = outputs.get("masks")
    per = []
    for i in range(len(kept_num)):
        r = kept[i, : kept_num[i]]
        cols = [xywh2xyxy(r[:, :4]), r[:, 4:6]]
        if masks is not None:
            cols.append(masks[i][torch.as_tensor(r[:, 7].astype(np.int64), device=masks.device)].float().cpu().numpy())
        per.append(np.concatenate(cols, 1).astype(np.float32))
    return per


def xywh2xyxy(x: np.ndarray) -> np.ndarray:
    """Center boxes to corners, computed as yolov5's xywh2xyxy (x - w / 2, ...), in float32."""
    x = np.asarray(x, np.float32)
    half = x[..., 2:4] / np.float32(2)
    return np.concatenate([x[..., 0:2] - half, x[..., 0:2] + half], -1)


@dataclass
class Context:
    """What postprocess needs from preprocess: the original image sizes and their letterbox geometry."""

    shapes: list[tuple[int, int]]
    boxes: list[lb.Letterbox]


def example_feeds(cfg: Config, image: str | None, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``image`` (letterboxed, or center-cropped for cls) repeated ``batch`` times; without one, a seeded
    uniform [0, 1) input."""
    h, w = cfg.imgsz
    if image is None:
        rng = np.random.default_rng(seed)
        return {INPUT: rng.random((batch, 3, h, w), dtype=np.float32)}
    import cv2

    img = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if img is None:
        raise NetdefError(f"{image}: not a readable image")
    feeds, _ = preprocess([img] * batch, cfg)
    return feeds


def preprocess(images: list[np.ndarray], cfg: Config) -> tuple[dict[str, np.ndarray], Context]:
    """BGR uint8 HWC images -> {"images": [B, 3, H, W] float32 RGB in [0, 1]} (letterbox, pad 114; cls:
    yolov5's classify_transforms: center crop, resize, ImageNet mean/std)."""
    if cfg.task == "cls":
        return {INPUT: lb.center_crop_normalize(images, cfg.imgsz, CLS_MEAN, CLS_STD)}, Context(
            [im.shape[:2] for im in images], []
        )
    if cfg.device.startswith("cuda"):
        return _gpu_preprocess(images, cfg)
    batch, geometry = lb.letterbox_batch(images, cfg.imgsz)
    return {INPUT: batch}, Context([im.shape[:2] for im in images], geometry)


def _gpu_preprocess(images: list[np.ndarray], cfg: Config) -> tuple[dict, Context]:
    """The fused letterbox kernel into a torch CUDA tensor (uploads the images; one launch for the batch)."""
    import torch

    if cfg._gpu_letterbox is None:
        cfg._gpu_letterbox = lb.GpuLetterbox(cfg.imgsz, cfg.io_dtype)
    device = torch.device(cfg.device)
    with torch.cuda.device(device):
        out = torch.empty((len(images), 3, *cfg.imgsz), dtype=getattr(torch, cfg.io_dtype), device=device)
        cfg._gpu_letterbox(images, out=out, stream=torch.cuda.current_stream(device))
    return {INPUT: out}, Context([im.shape[:2] for im in images], cfg._gpu_letterbox.geometry)


def postprocess(outputs: dict, ctx: Context, cfg: Config) -> list[dict]:
    """Network outputs -> per image {"boxes" (original pixels), "scores", "classes"[, "masks"]}
    ({"probs", "top5"} for cls)."""
    if cfg.task == "cls":
        prob = np.asarray(outputs["prob"])
        return [{"probs": p, "top5": np.argsort(-p, kind="stable")[:5]} for p in prob]
    if cfg.postprocess == "none":
        raise NetdefError("this engine was built with --postprocess none: it outputs the raw head; decode it "
                          "yourself or rebuild with --postprocess native")  # fmt: skip
    on_gpu = getattr(outputs.get("scores"), "is_cuda", False)
    dets = gpu_detections(outputs, cfg) if on_gpu else detections_from_outputs(outputs, cfg, batch=len(ctx.shapes))
    if on_gpu and cfg.task == "seg":
        outputs = dict(outputs, proto=outputs["proto"].float().cpu().numpy())
    results = []
    for b, det in enumerate(dets):
        shape = ctx.shapes[b]
        res = {
            "boxes": lb.scale_boxes(det[:, :4], cfg.imgsz, shape),
            "scores": det[:, 4].copy(),
            "classes": det[:, 5].astype(np.int64),
        }
        if cfg.task == "seg":
            res["masks"] = process_masks(np.asarray(outputs["proto"])[b], det[:, 6:], det[:, :4], cfg.imgsz, shape)
        results.append(res)
    return results


def process_masks(protos: np.ndarray, coefs: np.ndarray, boxes: np.ndarray, imgsz, shape) -> np.ndarray:
    """yolov5's process_mask(upsample=True) then scale_image: [k, H0, W0] bool masks on the original image."""
    import cv2

    n = len(coefs)
    h0, w0 = shape
    if n == 0:
        return np.zeros((0, h0, w0), bool)
    c, mh, mw = protos.shape
    ih, iw = imgsz
    masks = 1 / (1 + np.exp(-(coefs @ protos.reshape(c, -1)))).reshape(n, mh, mw)
    down = boxes * np.array([mw / iw, mh / ih, mw / iw, mh / ih], np.float32)
    r, cc = np.arange(mw)[None, None, :], np.arange(mh)[None, :, None]
    x1, y1, x2, y2 = (down[:, k, None, None] for k in range(4))
    masks = masks * ((r >= x1) & (r < x2) & (cc >= y1) & (cc < y2))
    up = np.stack([cv2.resize(m.astype(np.float32), (iw, ih), interpolation=cv2.INTER_LINEAR) for m in masks])
    up = up > 0.5
    gain = min(ih / h0, iw / w0)
    pad_w, pad_h = (iw - w0 * gain) / 2, (ih - h0 * gain) / 2
    top, left, bottom, right = int(pad_h), int(pad_w), int(ih - pad_h), int(iw - pad_w)
    crop = up[:, top:bottom, left:right].astype(np.uint8)
    return np.stack([cv2.resize(m, (w0, h0), interpolation=cv2.INTER_LINEAR) for m in crop]).astype(bool)


def _color(i: int) -> tuple[int, int, int]:
    palette = ("FF3838 FF9D97 FF701F FFB21D CFD231 48F90A 92CC17 3DDB86 1A9334 00D4BB 2C99A8 00C2FF 344593 "
               "6473FF 0018EC 8438FF 520085 CB38FF FF95C8 FF37C7").split()  # fmt: skip
    h = palette[i % len(palette)]
    return int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16)  # BGR


def render(image: np.ndarray, result: dict, cfg: Config) -> np.ndarray:
    """Boxes, labels (and masks) drawn on a copy of the BGR image, yolov5's colors."""
    import cv2

    out = image.copy()
    if cfg.task == "cls":
        text = ", ".join(f"{cfg.names[i]} {result['probs'][i]:.2f}" for i in result["top5"])
        cv2.putText(out, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
        return out
    lw = max(round(sum(out.shape[:2]) / 2 * 0.003), 2)
    for k, mask in enumerate(result.get("masks", [])):
        color = np.array(_color(int(result["classes"][k])), np.float32)
        out[mask] = (out[mask] * 0.5 + color * 0.5).astype(np.uint8)
    for box, score, cls in zip(result["boxes"], result["scores"], result["classes"]):
        color = _color(int(cls))
        p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
        cv2.rectangle(out, p1, p2, color, lw, cv2.LINE_AA)
        label = f"{cfg.names[int(cls)]} {score:.2f}" if score >= 0.01 else f"{cfg.names[int(cls)]} {score:.1e}"
        tw, th = cv2.getTextSize(label, 0, lw / 3, max(lw - 1, 1))[0]
        outside = p1[1] - th >= 3
        q2 = (p1[0] + tw, p1[1] - th - 3 if outside else p1[1] + th + 3)
        cv2.rectangle(out, p1, q2, color, -1, cv2.LINE_AA)
        cv2.putText(out, label, (p1[0], p1[1] - 2 if outside else p1[1] + th + 2), 0, lw / 3, (255, 255, 255),
                    max(lw - 1, 1), cv2.LINE_AA)  # fmt: skip
    return out


def result_json(result: dict, cfg: Config) -> dict:
    """COCO-style: bbox [x, y, w, h] in original pixels, category_id (0-based class), category name, score."""
    if cfg.task == "cls":
        return {"top5": [{"category_id": int(i), "category": cfg.names[i], "score": float(result["probs"][i])}
                         for i in result["top5"]]}  # fmt: skip
    dets = []
    for k, (box, score, cls) in enumerate(zip(result["boxes"], result["scores"], result["classes"])):
        x1, y1, x2, y2 = (float(v) for v in box)
        det = {"bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": int(cls), "category": cfg.names[int(cls)],
               "score": float(score)}  # fmt: skip
        if "masks" in result:
            det["segmentation"] = _polygons(result["masks"][k])
            det["area"] = int(result["masks"][k].sum())
        dets.append(det)
    return {"model": cfg.model_name, "detections": dets}


def _polygons(mask: np.ndarray) -> list[list[float]]:
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def summary(result: dict, cfg: Config) -> str:
    if cfg.task == "cls":
        return ", ".join(f"{cfg.names[i]} {result['probs'][i]:.3f}" for i in result["top5"])
    counts: dict[str, int] = {}
    for c in result["classes"]:
        counts[cfg.names[int(c)]] = counts.get(cfg.names[int(c)], 0) + 1
    return f"{len(result['classes'])} detections" + (": " + ", ".join(f"{n} {k}" for k, n in counts.items())
                                                     if counts else "")  # fmt: skip


def source_model(arch: str | None = None):
    """Random-init yolov5 model (``gen_wts.py --model netdef:yolov5:yolov5s``); same as ``yolov5:<arch>``."""

    return model_sources.build_model(f"yolov5:{arch or 'yolov5s'}", seed=0)


NETDEF = Netdef(
    name=NAME,
    description=__doc__.strip().splitlines()[0],
    configure=configure,
    define=define,
    models=tuple(Model(m, options, m == DEFAULT_MODEL) for m, options in MODELS.items()),
    torch=TorchSide(torch_model, torch_forward, feeds=example_feeds, extra=check_extra, source=source_model),
    app=App(preprocess, postprocess, render=render, result_json=result_json, summary=summary),
    add_arguments=add_arguments,
    script="python netdefs/yolov5.py",
)

if __name__ == "__main__":
    from trtx.cli import main

    sys.exit(main(NETDEF))
