"""Configuration: what the weights contain, checked against the flags; the command-line options; the engine
metadata infer reads back."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdefs.detection.names import COCO_NAMES
from netdefs.detection.options import count, flag, fraction, imgsz, meta_section, names_file
from netdefs.ultralytics.arch import (
    FAMILIES,
    FAMILY_TASKS,
    SCALE_NAMES,
    SCALES,
    SUFFIX,
    TASKS,
    Arch,
    describe,
    multiples,
    read_arch,
    scale_name,
)
from trtx.net import NetdefError
from trtx.netdef import Model
from trtx_base.cli import positive_int, unit_float

INPUT = "images"
POSTPROCESS = ("native", "plugin", "none")
ATTENTION = ("matmul", "trt")
HEADS = ("auto", "one2one", "one2many")
#: TensorRT's TopK layer takes k up to this: an end-to-end head keeps at most this many detections per image
TOPK_LIMIT = 3840
DEFAULT_MODEL = "yolo11n"
#: every published model: family x task x scale (the tasks and scales of its yaml files)
MODELS = tuple(
    Model(
        f"{family}{scale}{SUFFIX[task]}",
        ("--family", family, "--scale", scale, "--task", task),
        f"{family}{scale}{SUFFIX[task]}" == DEFAULT_MODEL,
    )
    for family in FAMILIES
    for task in FAMILY_TASKS[family]
    for scale in SCALES[family]
)
#: DOTAv1's 15 classes (yolov8-obb / yolo11-obb are trained on them)
DOTA_NAMES = (
    "plane",
    "ship",
    "storage tank",
    "baseball diamond",
    "tennis court",
    "basketball court",
    "ground track field",
    "harbor",
    "bridge",
    "large vehicle",
    "small vehicle",
    "helicopter",
    "roundabout",
    "soccer ball field",
    "swimming pool",
)


@dataclass
class Config:
    family: str  # yolov8 | yolo11 | yolov10 | yolo12 | yolo26
    task: str  # detect | seg | pose | obb | cls
    scale: str  # n s m l x | custom
    num_classes: int
    names: list[str]
    imgsz: tuple[int, int]
    reg_max: int = 16
    num_masks: int = 0
    kpt_shape: tuple[int, int] | None = None
    strides: list[int] = field(default_factory=lambda: [8, 16, 32])
    postprocess: str = "native"
    head: str = "one2many"  # one2one: an end-to-end head's NMS-free branch, ending in a top-k; one2many: NMS
    nms_in_engine: bool = False
    candidates: bool = False  # end-to-end heads under check: the top-k's candidates are outputs too
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    attention: str = "matmul"
    multiples: tuple[float, float, float] | None = None  # (depth, width, max_channels) parse_model needs
    model_spec: str | None = None
    arch: Arch | None = None
    outputs: list[str] = field(default_factory=list)
    device: str = "cpu"
    io_dtype: str = "float32"

    @property
    def model_name(self) -> str:
        return f"{self.family}{self.scale}{SUFFIX[self.task]}"

    @property
    def end2end(self) -> bool:
        """The network ends in the top-k of the one-to-one branch (no NMS)."""
        return self.head == "one2one"

    @property
    def bn_eps(self) -> float:
        from netdefs.ultralytics.model import BN_EPS, BN_EPS_CLS

        return BN_EPS_CLS if self.task == "cls" else BN_EPS


def configure(args, weights, meta: dict | None = None) -> Config:
    """From the weights (build, check, inspect, infer -w), or an engine's metadata (infer -e)."""
    if meta is not None:
        return _from_meta(args, meta)
    arch = read_arch(weights)
    if arch.task == "cls" and arch.family == "yolo11" and flag(args, "family") == "yolo26":
        arch.family = "yolo26"  # yolo26-cls.yaml has yolo11-cls.yaml's rows: the weights cannot tell them apart
    scale = scale_name(arch)
    for option, got in (("family", arch.family), ("task", arch.task), ("scale", scale)):
        if flag(args, option) not in (None, "auto", got):
            raise NetdefError(f"--{option} {flag(args, option)}, but the weights contain {describe(arch)}")
    classes = flag(args, "classes", None)
    if classes is not None and classes != arch.num_classes:
        key = f"{arch.prefix}.linear.bias" if arch.task == "cls" else f"{arch.prefix}.cv3.0.2.bias"
        raise NetdefError(f"--classes {classes}, but the weights contain {arch.num_classes} classes ({key})")
    kpt_shape = _kpt_shape(arch, flag(args, "kpt_shape", None))
    postprocess = flag(args, "postprocess", "native")
    cls = arch.task == "cls"
    head = _head(arch, flag(args, "head", None) or "auto", postprocess)
    cfg = Config(
        family=arch.family,
        task=arch.task,
        scale=scale,
        num_classes=arch.num_classes,
        names=read_names(flag(args, "names", None), arch),
        imgsz=imgsz(flag(args, "imgsz", None) or (224 if cls else 640), 1 if cls else 32),
        reg_max=arch.reg_max,
        num_masks=arch.num_masks,
        kpt_shape=kpt_shape,
        postprocess="none" if cls else postprocess,
        head=head,
        conf=fraction(flag(args, "conf", 0.25), "--conf"),
        iou=fraction(flag(args, "iou", 0.7), "--iou"),
        max_det=count(flag(args, "max_det", 300), "--max-det"),
        attention=flag(args, "attention", "matmul"),
        multiples=multiples(arch),
        model_spec=flag(args, "model", None),
        arch=arch,
    )
    if cfg.end2end and not 1 <= cfg.max_det <= TOPK_LIMIT:
        raise NetdefError(f"--max-det {cfg.max_det}: an end-to-end head's top-k keeps 1 to {TOPK_LIMIT} detections "
                          "(TensorRT's TopK layer)")  # fmt: skip
    _runtime_options(cfg, args)
    _backend_options(cfg, flag(args, "command", "build"))
    return cfg


def _head(arch: Arch, asked: str, postprocess: str) -> str:
    """Which branch of the head the network runs: the one-to-one branch where the weights have it (its top-k:
    no NMS), else the one-to-many one (NMS); ``--head`` picks either where both are there."""
    if arch.task == "cls":
        return "one2many"
    have = [b for b, there in (("one2one", arch.one2one), ("one2many", arch.one2many)) if there]
    head = have[0] if asked == "auto" else asked
    if head not in have:
        if arch.family not in ("yolov10", "yolo26"):
            raise NetdefError(f"--head {asked}: {describe(arch)} has a one-to-many head only (NMS); one2one is "
                              "YOLOv10's and YOLO26's end-to-end branch")  # fmt: skip
        where = f"{arch.prefix}.one2one_cv2" if head == "one2one" else f"{arch.prefix}.cv2"
        raise NetdefError(f"--head {asked}: the weights have no {where} (a checkpoint fused for the other branch)")
    if head == "one2one" and postprocess == "plugin":
        raise NetdefError(
            "--postprocess plugin runs NMS (the nms plugin), which the one-to-one branch does without: use "
            "--head one2many with it, or --postprocess native (the top-k in the network)"
        )
    return head


def _kpt_shape(arch: Arch, flag: str | None) -> tuple[int, int] | None:
    """(keypoints, dims): the flag, else the weights' own entry, else the one split of the values that fits."""
    if arch.task != "pose":
        if flag:
            raise NetdefError(f"--kpt-shape {flag}, but the weights contain {describe(arch)}, not a pose model")
        return None
    n = arch.num_keypoint_values
    where = f"{arch.prefix}.cv4.0.2 predicts {n} keypoint values"
    if flag:
        try:
            k, d = (int(v) for v in re.split(r"[,x ]", flag.strip()))
        except ValueError:
            raise NetdefError(f"--kpt-shape {flag}: expected KEYPOINTS,DIMS (e.g. 17,3)") from None
        if k * d != n or d not in (2, 3):
            raise NetdefError(f"--kpt-shape {flag}, but {where}")
        if arch.kpt_shape is not None and arch.kpt_shape != (k, d):
            raise NetdefError(
                f"--kpt-shape {flag}, but the weights say {list(arch.kpt_shape)} ({arch.prefix}.kpt_shape)"
            )
        return k, d
    if arch.kpt_shape is not None:
        return arch.kpt_shape
    fits = [(n // d, d) for d in (3, 2) if n % d == 0]
    if len(fits) != 1:
        raise NetdefError(
            f"{where}: "
            + (
                f"{fits[0][0]}x{fits[0][1]} or {fits[1][0]}x{fits[1][1]}? pass --kpt-shape KEYPOINTS,DIMS"
                if fits
                else "not keypoints x 2 or 3 dims"
            )
        )
    return fits[0]


def _backend_options(cfg: Config, command: str) -> None:
    from trtx_base import backend

    try:
        be = backend.get()
    except backend.BackendUnavailable:  # configuring only (the PyTorch side of bench): no network is defined
        be = None
    # TensorRT's NMS layer goes into engines only: check and the reference executor compare up to it
    engine_nms = (
        bool(be and be.has_nms_runner) and cfg.postprocess == "native" and cfg.task != "obb" and not cfg.end2end
    )
    cfg.nms_in_engine = engine_nms and command in ("build", "inspect")
    cfg.candidates = cfg.end2end and command == "check"
    if cfg.postprocess == "plugin" and not (be and be.has_plugin_layers):
        what = f"{be.name} {be.version} does not have" if be else "no TensorRT module is installed to provide"
        raise NetdefError(
            f"--postprocess plugin needs plugin layers, which {what}; use --postprocess native "
            "(decode in TensorRT layers, NMS after the engine) or none"
        )
    if cfg.attention == "trt" and be is not None and not hasattr(be.trt.INetworkDefinition, "add_attention"):
        raise NetdefError(
            f"--attention trt needs TensorRT's attention layer, which {be.name} {be.version} does not "
            "have; use --attention matmul"
        )


def read_names(path: str | None, arch: Arch) -> list[str]:
    """Class names: ``--names`` (.txt one per line, .yaml/.json with ``names``), else the weights' own (written
    by gen_wts.py from a checkpoint), else COCO's 80 / DOTA's 15 / ImageNet's 1000 when the count fits, else
    ``class0``..."""
    n = arch.num_classes
    if path is None:
        if arch.names is not None:
            return list(arch.names)
        if n == 1000 and arch.task == "cls":
            imagenet = Path(__file__).resolve().parents[1] / "imagenet_classes.txt"
            return [line.strip() for line in imagenet.read_text().splitlines() if line.strip()][:1000]
        if n == len(COCO_NAMES):
            return list(COCO_NAMES)
        if n == len(DOTA_NAMES) and arch.task == "obb":
            return list(DOTA_NAMES)
        if n == 1 and arch.task == "pose":
            return ["person"]
        return [f"class{i}" for i in range(n)]
    return names_file(path, n)


def _runtime_options(cfg: Config, args) -> None:
    cfg.device = str(flag(args, "device", "cpu"))
    cfg.io_dtype = "float16" if flag(args, "io_dtype", "fp32") == "fp16" else "float32"


# ---- engine metadata ----------------------------------------------------------------------------------------
def meta(cfg: Config) -> dict[str, Any]:
    """The ``ultralytics`` section of the engine's .json: what infer needs without the weights."""
    post: dict[str, Any] = {"mode": cfg.postprocess}
    if cfg.task != "cls":
        if cfg.end2end:
            nms = "none"  # the one-to-one branch's top-k, in the engine
        else:
            nms = "engine" if cfg.nms_in_engine else ("none" if cfg.postprocess == "none" else "after-engine")
        post.update(
            nms=nms,
            conf=cfg.conf,
            iou=cfg.iou,
            max_det=cfg.max_det,
        )
    return {
        "model": cfg.model_name,
        "family": cfg.family,
        "task": cfg.task,
        "scale": cfg.scale,
        "multiples": list(cfg.multiples) if cfg.multiples else None,
        "num_classes": cfg.num_classes,
        "names": cfg.names,
        "imgsz": list(cfg.imgsz),
        "input": INPUT,
        "reg_max": cfg.reg_max,
        "strides": cfg.strides,
        "num_masks": cfg.num_masks,
        "kpt_shape": list(cfg.kpt_shape) if cfg.kpt_shape else None,
        "attention": cfg.attention,
        "head": cfg.head,
        "bn_eps": cfg.bn_eps,
        "postprocess": post,
    }


def _from_meta(args, meta_doc: dict) -> Config:
    m = meta_section(meta_doc, "ultralytics")
    try:
        post = m["postprocess"]
        cfg = Config(
            family=m["family"],
            task=m["task"],
            scale=m["scale"],
            num_classes=m["num_classes"],
            names=m["names"],
            imgsz=tuple(m["imgsz"]),
            reg_max=m["reg_max"],
            num_masks=m["num_masks"],
            kpt_shape=tuple(m["kpt_shape"]) if m["kpt_shape"] else None,
            strides=m["strides"],
            postprocess=post["mode"],
            head=m.get("head", "one2many"),
            nms_in_engine=post.get("nms") == "engine",
            conf=fraction(flag(args, "conf", post.get("conf", 0.25)), "--conf"),
            iou=fraction(flag(args, "iou", post.get("iou", 0.7)), "--iou"),
            max_det=count(flag(args, "max_det", post.get("max_det", 300)), "--max-det"),
            attention=m["attention"],
            outputs=[o["name"] for o in meta_doc["outputs"]],
        )
    except (KeyError, TypeError) as exc:
        raise NetdefError(f"engine metadata: the 'ultralytics' section lacks or garbles {exc}") from None
    _runtime_options(cfg, args)
    cfg.io_dtype = meta_doc["inputs"][0]["dtype"]
    return cfg


def add_arguments(parser, command: str) -> None:
    """The netdef's own options (every command)."""
    parser.add_argument(
        "--family",
        choices=FAMILIES,
        help="expected family; default: what the weights contain (a YOLO26 classifier's weights are a YOLO11 "
        "classifier's: --family yolo26 names them so)",
    )
    parser.add_argument("--task", choices=TASKS, help="expected task; default: what the weights contain")
    parser.add_argument(
        "--scale",
        default="auto",
        choices=(*SCALE_NAMES, "custom", "auto"),
        help="expected scale (b: YOLOv10's); 'auto' (default) takes what the weights contain, custom included",
    )
    parser.add_argument("--classes", type=positive_int, help="expected number of classes (checked against the weights)")
    parser.add_argument(
        "--names",
        help="class names: .txt (one per line) or .yaml/.json with 'names'; default: "
        "COCO's 80, DOTA's 15 (obb), ImageNet's 1000 (cls) when the count fits",
    )
    parser.add_argument(
        "--kpt-shape",
        help="pose: KEYPOINTS,DIMS (e.g. 17,3); needed only when the weights' "
        "keypoint values split both ways and they do not record it",
    )
    parser.add_argument(
        "--imgsz", help="input size N or H,W, multiples of 32; default 640 (224 for cls); an engine's own size is fixed"
    )
    parser.add_argument(
        "--postprocess",
        choices=POSTPROCESS,
        default="native",
        help="native (default): DFL decode in TensorRT layers, TensorRT's NMS layer where the "
        "backend builds it, else NMS right after the engine; plugin: the dfl_decode + nms (obb: rotated_nms) "
        "plugins, tensorrtx's way (backends with plugin layers); none: the head's raw outputs",
    )
    parser.add_argument(
        "--head",
        choices=HEADS,
        default="auto",
        help="YOLOv10's and YOLO26's end-to-end heads: one2one (the NMS-free branch; the network ends in its "
        "top-k, ultralytics' end2end post-processing) or one2many (the branch NMS selects from, as for YOLOv8); "
        "auto (default): one2one where the weights have it",
    )
    parser.add_argument(
        "--attention",
        choices=ATTENTION,
        default="matmul",
        help="the attention of C2PSA, PSA and YOLO12's area attention: matmul (default: matrix multiply + "
        "softmax layers) or trt (TensorRT's attention layer, where the backend has one)",
    )
    parser.add_argument("--conf", type=unit_float, default=None, help="confidence threshold (default 0.25)")
    parser.add_argument("--iou", type=unit_float, default=None, help="NMS IoU threshold (default 0.7, ultralytics')")
    parser.add_argument(
        "--max-det",
        type=positive_int,
        default=None,
        help="detections kept per image (default 300; an end-to-end head's top-k: its k, fixed in the engine)",
    )
    if command == "check":
        parser.add_argument(
            "--model",
            help="PyTorch model to compare with, a trtx.sources spec (e.g. "
            "ultralytics:yolo11n); default: the yaml rebuilt with the weights' scale and classes",
        )
