"""RetinaFace's configuration: the options of every command, the backbone read from the weights (or everything
from an engine's metadata), and the metadata a build records."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np

from netdefs.detection.nms import NmsRule, nms_in_engine
from netdefs.detection.options import count, flag, fraction, frozen_thresholds, meta_section
from netdefs.retinaface.priors import MIN_SIZES, STEPS, VARIANCE, num_priors
from trtx.net import NetdefError
from trtx.netdef import Model
from trtx_base import backend
from trtx_base.cli import positive_int, unit_float

#: arch -> what biubug6's cfg_mnet / cfg_re50 say about the network
ARCHS = {
    "mnet": {"backbone": "mobilenet0.25", "out_channel": 64},
    "r50": {"backbone": "resnet50", "out_channel": 256},
}
#: model names for ``python -m netdefs <model> ...``
MODELS = tuple(Model(f"retinaface_{arch}", ("--arch", arch)) for arch in ARCHS)
INPUT = "data"
POSTPROCESS = ("native", "plugin", "none")
#: biubug6's preprocessing: the BGR image minus this per-channel mean, no scaling
MEAN_BGR = (104.0, 117.0, 123.0)
AFTER_ENGINE_NMS = "nms GPU kernel (plugins.nms) when CUDA is present, else exact CPU NMS (trtx.nms)"
THRESHOLDS = ("conf", "iou", "top_k", "keep_top_k")


@dataclass
class Config:
    arch: str
    height: int
    width: int
    postprocess: str = "native"
    out_channel: int = 64
    conf: float = 0.5
    iou: float = 0.4
    top_k: int = 5000
    keep_top_k: int = 750
    #: native: NMS inside the engine (TensorRT's NMS layer); None = where the backend's builder has it
    engine_nms: bool | None = None
    #: after-engine NMS: "auto" (GPU kernel when CUDA is present), "cpu" or "cuda"
    nms_device: str = "auto"

    @property
    def num_priors(self) -> int:
        return num_priors(self.height, self.width)

    @property
    def nms_in_engine(self) -> bool:
        if self.postprocess != "native":
            return False
        return backend.get().has_nms_runner if self.engine_nms is None else self.engine_nms

    @property
    def rule(self) -> NmsRule:
        """biubug6's detect.py: score > conf, the best top_k, class-agnostic NMS, the first keep_top_k."""
        return NmsRule(self.conf, self.iou, self.keep_top_k, self.top_k, class_aware=False)


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "--imgsz",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="network input height and width; the prior boxes are generated for it at build time "
        "(default: 640 640; with -e: the engine's)",
    )
    parser.add_argument(
        "--postprocess",
        choices=POSTPROCESS,
        default=None,
        help="native: decode boxes, 5 landmarks and face scores in TensorRT layers, then TensorRT's NMS layer "
        "where the backend's builder has one, else NMS right after the engine; plugin: the retinaface_decode "
        "and nms plugins (needs plugin layers); none: the raw heads bbox_regressions, classifications (logits), "
        "ldm_regressions (default: native)",
    )
    parser.add_argument("--conf", type=unit_float, default=None, help="face score threshold (default: 0.5)")
    parser.add_argument("--iou", type=unit_float, default=None, help="NMS IoU threshold (default: 0.4)")
    parser.add_argument(
        "--top-k",
        type=positive_int,
        default=None,
        help="candidates kept by score before NMS, per image (default: 5000)",
    )
    parser.add_argument(
        "--keep-top-k", type=positive_int, default=None, help="faces kept after NMS, per image (default: 750)"
    )
    if command in ("infer", "bench"):
        parser.add_argument(
            "--nms-device",
            choices=("auto", "cpu", "cuda"),
            default="auto",
            help="where NMS runs when it is not in the engine: auto = the nms GPU kernel when CUDA is present, "
            "else exact CPU NMS (default: auto)",
        )


def detect_arch(weights) -> str | None:
    """The backbone a biubug6 state_dict was written for (None when the keys fit neither)."""
    if "body.stage1.0.0.weight" in weights:
        return "mnet"
    if "body.conv1.weight" in weights:
        return "r50"
    return None


def configure(args, weights, meta: dict | None = None) -> Config:
    """The configuration: backbone from the weights, input size and post-processing from the flags (build,
    check, inspect, infer -w) or from an engine's metadata (infer -e). TensorRT's NMS layer goes into engines
    (build, inspect) only: check and the reference executor compare up to the decoded boxes."""
    if meta is not None:
        return _config_from_meta(args, meta)
    arch = detect_arch(weights)
    if arch is None:
        raise NetdefError(
            "the weights are not a biubug6 RetinaFace state_dict: they have neither body.stage1.0.0.weight "
            "(MobileNet-0.25 backbone) nor body.conv1.weight (ResNet-50 backbone)"
        )
    if flag(args, "arch") not in (None, arch):
        raise NetdefError(f"--arch {flag(args, 'arch')}, but the weights hold a RetinaFace-{arch}")
    height, width = flag(args, "imgsz") or (640, 640)
    if height < 32 or width < 32:
        raise NetdefError(f"--imgsz {height} {width}: both sides must be at least 32 (the coarsest stride)")
    post = flag(args, "postprocess", "native")
    if post == "plugin" and not backend.get().has_plugin_layers:
        be = backend.get()
        raise NetdefError(
            f"--postprocess plugin needs plugin layers, which {be.name} {be.version} does not have; "
            "use --postprocess native (decode in TensorRT layers, NMS after the engine) or none"
        )
    cfg = Config(
        arch=arch,
        height=int(height),
        width=int(width),
        postprocess=post,
        out_channel=int(np.asarray(weights["fpn.merge1.1.weight"]).size),
        engine_nms=nms_in_engine(post, flag(args, "command")),
        nms_device=flag(args, "nms_device", "auto"),
    )
    _thresholds(cfg, args)
    return cfg


def _thresholds(cfg: Config, args) -> None:
    for name in THRESHOLDS:
        value = flag(args, name)
        if value is not None:
            option = "--" + name.replace("_", "-")
            setattr(cfg, name, fraction(value, option) if name in ("conf", "iou") else count(value, option))


def _config_from_meta(args, meta: dict) -> Config:
    m = meta_section(meta, "retinaface")
    cfg = Config(
        arch=m["arch"],
        height=m["imgsz"][0],
        width=m["imgsz"][1],
        postprocess=m["postprocess"],
        out_channel=m["out_channel"],
        engine_nms=m["nms"] == "engine",
        nms_device=flag(args, "nms_device", "auto"),
        **{k: m[k] for k in THRESHOLDS},
    )
    if m["nms"] in ("engine", "plugin"):  # thresholds built into the engine
        frozen_thresholds(args, {k: getattr(cfg, k) for k in THRESHOLDS}, m["nms"])
    else:
        _thresholds(cfg, args)
    flag_size = flag(args, "imgsz")
    if flag_size and tuple(flag_size) != (cfg.height, cfg.width):
        raise NetdefError(f"--imgsz {flag_size[0]} {flag_size[1]}: the engine was built for {m['imgsz']}")
    return cfg


def meta(cfg: Config) -> dict[str, Any]:
    """What the engine's metadata records under ``retinaface`` (``infer -e`` configures from it)."""
    nms = "engine" if cfg.nms_in_engine else "after-engine"
    nms = cfg.postprocess if cfg.postprocess in ("none", "plugin") else nms
    return {
        "arch": cfg.arch,
        "backbone": ARCHS[cfg.arch]["backbone"],
        "out_channel": cfg.out_channel,
        "imgsz": [cfg.height, cfg.width],
        "input": INPUT,
        "mean_bgr": list(MEAN_BGR),
        "postprocess": cfg.postprocess,
        "nms": nms,
        **({"after_engine": AFTER_ENGINE_NMS} if nms in ("after-engine", "none") else {}),
        **{k: getattr(cfg, k) for k in THRESHOLDS},
        "num_priors": cfg.num_priors,
        "min_sizes": [list(m) for m in MIN_SIZES],
        "steps": list(STEPS),
        "variance": list(VARIANCE),
    }
