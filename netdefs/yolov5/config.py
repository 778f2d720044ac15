"""YOLOv5's configuration: the options of every command, what the weights (or an engine's metadata) say, and
the metadata a build records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdefs.detection.names import class_names, decode_names
from netdefs.detection.nms import TRT_NMS_TOPK_LIMIT, NmsRule, nms_in_engine
from netdefs.detection.options import count, flag, fraction, imgsz, meta_section, names_file
from netdefs.yolov5.arch import VARIANTS, Arch, multiples, read_arch, variant_name
from trtx import letterbox as lb
from trtx import nms as exact
from trtx.net import NetdefError
from trtx.netdef import Model
from trtx_base.cli import positive_int, unit_float

INPUT = "images"
TASKS = ("detect", "seg", "cls")
POSTPROCESS = ("native", "plugin", "none")
#: model names for ``python -m netdefs <model> ...`` -> the options that select (and double-check) them
MODELS = tuple(
    Model(name, options, name == "yolov5s")
    for name, options in {
        **{f"yolov5{v}": ("--variant", v, "--task", "detect") for v in (*VARIANTS, *(f"{v}6" for v in VARIANTS))},
        **{f"yolov5{v}-{t}": ("--variant", v, "--task", t) for t in ("seg", "cls") for v in VARIANTS},
    }.items()
)
#: what the engine metadata records of the model (in this order), and of its head
MODEL_FIELDS = ("task", "variant", "p6", "depth_multiple", "width_multiple", "num_classes", "names")
HEAD_FIELDS = ("anchors", "strides", "num_anchors", "num_masks")
MAX_WH = exact.MAX_WH  # yolov5's class offset of its batched NMS
MAX_NMS = 30000  # yolov5's max_nms: candidates per image that enter NMS


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

    @property
    def rule(self) -> NmsRule:
        """yolov5's non_max_suppression: class-aware by the 7680-pixel class offset, the best 30000 candidates."""
        return NmsRule(self.conf, self.iou, self.max_det, MAX_NMS, class_offset=MAX_WH)


def read_names(path: str | None, num_classes: int) -> list[str]:
    """Class names: ``--names`` (a .txt, .yaml or .json); default COCO's 80 names when the weights have 80
    classes, ImageNet's for 1000, else ``class0``..."""
    if path is None:
        imagenet = Path(__file__).parent.with_name("imagenet_classes.txt")  # yolov5-cls models are ImageNet models
        if num_classes == 1000 and imagenet.is_file():
            return [line.strip() for line in imagenet.read_text().splitlines() if line.strip()][:1000]
        return class_names(num_classes)
    return names_file(path, num_classes)


def _names(args, weights, head: str, num_classes: int) -> list[str]:
    """``--names``, else the class names gen_wts.py wrote from a trained checkpoint (``<head>.names``), else the
    defaults of :func:`read_names`."""
    key = f"{head}.names"
    if getattr(args, "names", None) is None and key in weights:
        names = decode_names(weights[key], key)
        if len(names) != num_classes:
            raise NetdefError(f"weight {key!r} holds {len(names)} class names but the head has {num_classes} classes")
        return names
    return read_names(getattr(args, "names", None), num_classes)


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
            gd, gw = multiples(arch)
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
        names=_names(args, weights, head, arch.num_classes),
        imgsz=(0, 0),
        postprocess=postprocess if arch.task != "cls" else "none",
        conf=fraction(flag(args, "conf", 0.25), "--conf"),
        iou=fraction(flag(args, "iou", 0.45), "--iou"),
        max_det=count(flag(args, "max_det", 300), "--max-det"),
        anchors=arch.anchors,
        strides=arch.strides,
        num_anchors=arch.num_anchors,
        num_masks=arch.num_masks,
        depth_multiple=gd,
        width_multiple=gw,
        model_spec=getattr(args, "model", None),
        arch=arch,
    )
    cfg.imgsz = imgsz(getattr(args, "imgsz", None) or default_size, cfg.max_stride)
    _runtime_options(cfg, args)
    cfg.nms_in_engine = nms_in_engine(cfg.postprocess, command)
    from trtx_base import backend

    try:
        be = backend.get()
    except backend.BackendUnavailable:  # configuring only (bench's PyTorch parts): no network will be defined
        be = None
    if cfg.postprocess == "plugin" and not (be and be.has_plugin_layers):
        what = f"{be.name} {be.version} does not have" if be else "no TensorRT module is installed to provide"
        raise NetdefError(
            f"--postprocess plugin needs plugin layers, which {what}; "
            "use --postprocess native (decode in TensorRT layers, NMS after the engine) or none"
        )
    return cfg


def _config_from_meta(args, meta: dict) -> Config:
    m = meta_section(meta, "yolov5")
    try:
        return _config_from_section(args, meta, m)
    except (KeyError, TypeError) as exc:
        raise NetdefError(f"engine metadata: the 'yolov5' section lacks or garbles {exc}") from None


def _config_from_section(args, meta: dict, m: dict) -> Config:
    post = m["postprocess"]
    cfg = Config(
        **{k: m[k] for k in (*MODEL_FIELDS[:3], *MODEL_FIELDS[5:], *HEAD_FIELDS)},
        imgsz=tuple(m["imgsz"]),
        postprocess=post["mode"],
        nms_in_engine=post["nms"] == "engine",
        conf=fraction(flag(args, "conf", post.get("conf", 0.25)), "--conf"),
        iou=fraction(flag(args, "iou", post.get("iou", 0.45)), "--iou"),
        max_det=count(flag(args, "max_det", post.get("max_det", 300)), "--max-det"),
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
    parser.add_argument("--classes", type=positive_int, help="expected number of classes (checked against the weights)")
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
    parser.add_argument("--conf", type=unit_float, default=None, help="confidence threshold (default 0.25)")
    parser.add_argument("--iou", type=unit_float, default=None, help="NMS IoU threshold (default 0.45)")
    parser.add_argument("--max-det", type=positive_int, default=None, help="detections kept per image (default 300)")
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


def meta(cfg: Config) -> dict:
    """What the engine's metadata records under ``yolov5`` (``infer -e`` configures from it)."""
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
        **{k: getattr(cfg, k) for k in MODEL_FIELDS},
        "imgsz": list(cfg.imgsz),
        "input": INPUT,
        **{k: getattr(cfg, k) for k in HEAD_FIELDS},
        "postprocess": post,
    }


def detector_meta(cfg: Config) -> dict:
    """The engine as a detection server sees it (``python -m trtx export deepstream``; docs/deploy.md); the input
    is what preprocess does to a BGR image: letterbox (centred, pad 114), BGR -> RGB, x / 255."""
    image = {"name": INPUT, "color": "RGB", "scale": 1 / 255, "mean": [0.0] * 3, "letterbox": "center"}
    return {
        "num_classes": cfg.num_classes,
        "names": cfg.names,
        "outputs": {role: ("det_" if cfg.nms_in_engine else "") + role for role in ("boxes", "scores", "classes")},
        "box_format": "cxcywh",
        "nms": "engine" if cfg.nms_in_engine else "after-engine",
        "conf": cfg.conf,
        "iou": cfg.iou,
        "max_det": cfg.max_det,
        "input": {**image, "pad_value": lb.PAD_VALUE},
    }
