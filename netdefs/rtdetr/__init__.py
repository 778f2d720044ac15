"""RT-DETR (ultralytics 8.4.190: rtdetr-l, rtdetr-resnet50, rtdetr-resnet101): a detection transformer without NMS.

python gen_wts.py --model netdef:rtdetr:rtdetr-l --random-init -o rtdetr-l.wts
python -m netdefs rtdetr-l build -w rtdetr-l.wts --batch 1:4:8 [--precision fp16] [--attention trt]
python -m netdefs rtdetr-l check -w rtdetr-l.wts [--image bus.jpg]
python -m netdefs rtdetr-l infer -w rtdetr-l.wts bus.jpg

The network (netdefs/rtdetr/model.py) mirrors the yaml files module by module: the HGNet or ResNet backbone, the
AIFI transformer encoder on the last map, the CCFF neck (RepC3 blocks), and RTDETRDecoder: query selection,
six deformable-attention decoder layers (grid-sample layers), and its postprocess top-k. Outputs, per image,
the 300 best (query, class) pairs: ``boxes`` [B, 300, 4] (cx, cy, w, h in input pixels), ``scores`` [B, 300]
and ``classes`` [B, 300] (int32), exactly ultralytics' prediction ``y``; the confidence threshold and the
scaling to the original image are ``RTDETRPredictor.postprocess``'s, after the engine.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from netdefs.common import add_attention_argument, count_indices, peek
from netdefs.detection import options
from netdefs.detection.names import class_names, decode_names
from netdefs.rtdetr import model
from netdefs.rtdetr.app import APP
from netdefs.rtdetr.torch_side import TORCH
from trtx.net import Net, NetdefError
from trtx.netdef import Netdef

#: arch -> (backbone, decoder module index, blocks of model.3 for the ResNets)
ARCHS = {
    "rtdetr-l": ("hgnet", 28, None),
    "rtdetr-resnet50": ("resnet", 23, 6),
    "rtdetr-resnet101": ("resnet", 23, 23),
}
NETWORKS = {"hgnet": model.rtdetr_l, "resnet": model.rtdetr_resnet}


def structure(weights) -> tuple[str, int, int | None]:
    """(backbone, decoder index, model.3 blocks) of an ultralytics RT-DETR state_dict."""
    if "model.0.stem1.conv.weight" in weights:
        backbone = "hgnet"
    elif "model.0.layer.0.conv.weight" in weights:
        backbone = "resnet"
    else:
        raise NetdefError("weights have neither 'model.0.stem1.conv.weight' (HGNet) nor 'model.0.layer.0.conv.weight' "
                          "(ResNet): not an ultralytics RT-DETR state_dict")  # fmt: skip
    head = next((i for i in range(64) if f"model.{i}.enc_score_head.weight" in weights), None)
    if head is None:
        raise NetdefError("weights have no RTDETRDecoder (model.<i>.enc_score_head.weight)")
    blocks = count_indices(weights, "model.3.layer.{}.cv1.conv.weight") if backbone == "resnet" else None
    return backbone, head, blocks


def configure(args, weights, meta=None):
    """Structure and classes from the weights (checked against ``--arch``), input size from ``--imgsz``."""
    if weights is None:  # an engine: everything from its metadata
        m = options.meta_section(meta, "rtdetr")
        return SimpleNamespace(arch=args.arch, imgsz=tuple(m["imgsz"]), nc=m["nc"], head=m["head"], names=m["names"],
                               attention=m["attention"], conf=options.flag(args, "conf", 0.25))  # fmt: skip
    found = structure(weights)
    if found != ARCHS[args.arch]:
        names = {v: k for k, v in ARCHS.items()}
        raise NetdefError(
            f"weights have a {found[0]} backbone, the decoder at model.{found[1]}"
            + (f", {found[2]} blocks in model.3" if found[2] else "")
            + f" ({names.get(found, 'no known arch')}); {args.arch} has {ARCHS[args.arch][0]}, model."
            f"{ARCHS[args.arch][1]} (check --arch)"
        )
    head = found[1]
    layers = count_indices(weights, f"model.{head}.dec_score_head.{{}}.bias")
    nc = int(peek(weights, f"model.{head}.dec_score_head.{layers - 1}.bias").size)
    size = options.imgsz(options.flag(args, "imgsz", 640))
    key = f"model.{head}.names"  # a checkpoint's own class names (gen_wts.py writes them)
    names = decode_names(peek(weights, key), key) if key in weights else class_names(nc)
    if len(names) != nc:
        raise NetdefError(f"{key}: {len(names)} class names for {nc} classes")
    attention = options.flag(args, "attention", "matmul")
    conf = options.fraction(options.flag(args, "conf", 0.25), "--conf")
    return SimpleNamespace(arch=args.arch, imgsz=size, nc=nc, head=head, names=names, attention=attention, conf=conf)


def define(net: Net, cfg) -> None:
    """RTDETRDetectionModel.predict, then the outputs boxes / scores / classes."""
    backbone = ARCHS[cfg.arch][0]
    h, w = cfg.imgsz
    x = net.input("images", (-1, 3, h, w))
    boxes, scores, classes = NETWORKS[backbone](net, x, cfg.imgsz, cfg.attention)
    net.output(boxes, "boxes", np.float32)
    net.output(scores, "scores", np.float32)
    net.output(classes, "classes", np.int32)
    if f"model.{cfg.head}.names" in net.weights:  # read by configure: not an unused weight
        net.weights[f"model.{cfg.head}.names"]
    net.meta["rtdetr"] = {"imgsz": list(cfg.imgsz), "nc": cfg.nc, "head": cfg.head, "names": cfg.names,
                          "attention": cfg.attention}  # fmt: skip
    net.meta.update(task="detect", num_classes=cfg.nc)


def unused_reason(cfg, key: str) -> str | None:
    """The decoder's training-only parts: denoising queries, and the class heads of the layers before the last."""
    head = f"model.{cfg.head}."
    if key.startswith(head + "denoising_class_embed"):
        return "denoising queries: training only"
    if key.startswith(head + "dec_score_head."):
        return "class heads of the decoder layers before the last: training losses only"
    return None


def add_arguments(parser, command: str) -> None:
    if command in ("build", "check", "inspect", "infer", "bench"):
        parser.add_argument("--imgsz", default="640",
                            help="input size N or H,W, multiples of 32 (default: %(default)s)")  # fmt: skip
        add_attention_argument(parser)
    if command in ("infer", "bench", "check"):
        parser.add_argument("--conf", type=float, default=0.25,
                            help="confidence threshold of the detections (default: %(default)s)")  # fmt: skip


NETDEF = Netdef(
    name="rtdetr",
    description=__doc__.strip().splitlines()[0],
    archs=tuple(ARCHS),
    default_arch="rtdetr-l",
    configure=configure,
    define=define,
    torch=TORCH,
    app=APP,
    add_arguments=add_arguments,
    unused_reason=unused_reason,
    script="python netdefs/rtdetr.py",
)
