"""The YOLOv5 v7.0 network, the file to edit: the blocks of ``models/common.py`` and the v6.0 yaml layouts of
``models/yolo.py``, the way tensorrtx's yolov5 writes them. Every module index is written out, so a grep for
model.13 lands on the line that builds it (in the P5 head and in the P6 head); each layer is named after the
module path it mirrors (``model.2.cv1``), which is how ``check`` compares it with PyTorch. Depths (bottlenecks
per C3) and widths come from the weights; what the model is (task, P5/P6) from :mod:`netdefs.yolov5.arch`.
"""

from __future__ import annotations

from netdefs.common import activation, concat, count_indices, flatten, global_avg_pool, max_pool, upsample_nearest
from trtx.net import Net, NetdefError

BN_EPS = 1e-3  # yolov5's initialize_weights() sets every BatchNorm2d to eps=1e-3 (Classify's excepted)


# ---- blocks (models/common.py) ---------------------------------------------------------------------------------
def conv(net: Net, x, path: str, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, eps: float = BN_EPS):
    """Conv: Conv2d(bias=False) -> BatchNorm2d (an IScale) -> SiLU."""
    y = net.conv(x, f"{path}.conv", k, stride=s, padding=k // 2 if p is None else p, groups=g, bias=False)
    y = net.batchnorm(y.get_output(0), f"{path}.bn", eps=eps).get_output(0)
    return activation(net, y, "silu", path)


def bottleneck(net: Net, x, path: str, shortcut: bool = True):
    """Bottleneck(c_, c_, shortcut, e=1.0): x + cv2(cv1(x)) (the add only with shortcut)."""
    y = conv(net, conv(net, x, f"{path}.cv1", 1), f"{path}.cv2", 3)
    if not shortcut:
        return net.alias(y, path)
    return net.name(net.network.add_elementwise(x, y, net.trt.ElementWiseOperation.SUM), path).get_output(0)


def c3(net: Net, x, path: str, shortcut: bool = True):
    """C3: cv3(cat(m(cv1(x)), cv2(x))); the number of bottlenecks comes from the weights."""
    n = count_indices(net.weights, f"{path}.m.{{}}.cv1.conv.weight")
    if n == 0:
        raise NetdefError(f"layer {path} (C3): the weights have no {path}.m.0.cv1.conv.weight")
    y = conv(net, x, f"{path}.cv1", 1)
    for j in range(n):
        y = bottleneck(net, y, f"{path}.m.{j}", shortcut)
    y = concat(net, [y, conv(net, x, f"{path}.cv2", 1)], f"{path}.cat")
    return net.alias(conv(net, y, f"{path}.cv3", 1), path)


def sppf(net: Net, x, path: str, k: int = 5):
    """SPPF: cv2(cat(x, m(x), m(m(x)), m(m(m(x))))) after x = cv1(x); m = MaxPool2d(k, 1, k // 2)."""
    x = conv(net, x, f"{path}.cv1", 1)
    y1 = max_pool(net, x, f"{path}.m.y1", k, 1, k // 2)  # the one MaxPool2d runs three times: no module path
    y2 = max_pool(net, y1, f"{path}.m.y2", k, 1, k // 2)
    y3 = max_pool(net, y2, f"{path}.m.y3", k, 1, k // 2)
    return net.alias(conv(net, concat(net, [x, y1, y2, y3], f"{path}.cat"), f"{path}.cv2", 1), path)


def proto(net: Net, x, path: str):
    """Proto: cv3(cv2(upsample(cv1(x)))), the mask prototypes of a Segment head."""
    y = upsample_nearest(net, conv(net, x, f"{path}.cv1", 3), f"{path}.upsample", 2.0)
    return net.alias(conv(net, conv(net, y, f"{path}.cv2", 3), f"{path}.cv3", 1), path)


def detect(net: Net, features: list, path: str, seg: bool) -> tuple[list, object]:
    """Detect / Segment up to its convs: m.i per level ([B, na * no, ny, nx]), and Segment's prototypes."""
    raw = [net.conv(f, f"{path}.m.{i}", 1).get_output(0) for i, f in enumerate(features)]
    return raw, proto(net, features[0], f"{path}.proto") if seg else None


def classify(net: Net, x, path: str):
    """Classify: linear(flatten(pool(conv(x)))) (dropout is the identity at inference). ClassificationModel adds
    it after initialize_weights() ran, so its BatchNorm2d keeps PyTorch's eps 1e-5."""
    y = global_avg_pool(net, conv(net, x, f"{path}.conv", 1, eps=1e-5), f"{path}.pool")
    return net.linear(flatten(net, y, f"{path}.flatten"), f"{path}.linear").get_output(0)


# ---- the networks (models/yolo.py with yolov5s.yaml, yolov5s6.yaml) --------------------------------------------
def backbone(net: Net, x, p6: bool) -> dict:
    """Conv 6x6/2 stem, then per level a Conv 3x3/2 and a C3. Returns every module's output by index, as
    BaseModel._forward_once keeps them."""
    y = {}
    y[0] = conv(net, x, "model.0", 6, 2, 2)  # P1/2
    y[1] = conv(net, y[0], "model.1", 3, 2)  # P2/4
    y[2] = c3(net, y[1], "model.2")
    y[3] = conv(net, y[2], "model.3", 3, 2)  # P3/8
    y[4] = c3(net, y[3], "model.4")
    y[5] = conv(net, y[4], "model.5", 3, 2)  # P4/16
    y[6] = c3(net, y[5], "model.6")
    y[7] = conv(net, y[6], "model.7", 3, 2)  # P5/32
    y[8] = c3(net, y[7], "model.8")
    if p6:
        y[9] = conv(net, y[8], "model.9", 3, 2)  # P6/64
        y[10] = c3(net, y[9], "model.10")
    return y


def head_p5(net: Net, y: dict, seg: bool):
    """SPPF, the PANet head (top-down, then bottom-up) and Detect/Segment at model.24 on P3, P4, P5."""
    y[9] = sppf(net, y[8], "model.9")
    y[10] = conv(net, y[9], "model.10", 1, 1)
    y[11] = upsample_nearest(net, y[10], "model.11")
    y[12] = concat(net, [y[11], y[6]], "model.12")  # cat backbone P4
    y[13] = c3(net, y[12], "model.13", shortcut=False)
    y[14] = conv(net, y[13], "model.14", 1, 1)
    y[15] = upsample_nearest(net, y[14], "model.15")
    y[16] = concat(net, [y[15], y[4]], "model.16")  # cat backbone P3
    y[17] = c3(net, y[16], "model.17", shortcut=False)  # P3/8-small
    y[18] = conv(net, y[17], "model.18", 3, 2)
    y[19] = concat(net, [y[18], y[14]], "model.19")  # cat head P4
    y[20] = c3(net, y[19], "model.20", shortcut=False)  # P4/16-medium
    y[21] = conv(net, y[20], "model.21", 3, 2)
    y[22] = concat(net, [y[21], y[10]], "model.22")  # cat head P5
    y[23] = c3(net, y[22], "model.23", shortcut=False)  # P5/32-large
    return detect(net, [y[17], y[20], y[23]], "model.24", seg)


def head_p6(net: Net, y: dict, seg: bool):
    """SPPF, the PANet head over four levels and Detect/Segment at model.33 on P3, P4, P5, P6."""
    y[11] = sppf(net, y[10], "model.11")
    y[12] = conv(net, y[11], "model.12", 1, 1)
    y[13] = upsample_nearest(net, y[12], "model.13")
    y[14] = concat(net, [y[13], y[8]], "model.14")  # cat backbone P5
    y[15] = c3(net, y[14], "model.15", shortcut=False)
    y[16] = conv(net, y[15], "model.16", 1, 1)
    y[17] = upsample_nearest(net, y[16], "model.17")
    y[18] = concat(net, [y[17], y[6]], "model.18")  # cat backbone P4
    y[19] = c3(net, y[18], "model.19", shortcut=False)
    y[20] = conv(net, y[19], "model.20", 1, 1)
    y[21] = upsample_nearest(net, y[20], "model.21")
    y[22] = concat(net, [y[21], y[4]], "model.22")  # cat backbone P3
    y[23] = c3(net, y[22], "model.23", shortcut=False)  # P3/8-small
    y[24] = conv(net, y[23], "model.24", 3, 2)
    y[25] = concat(net, [y[24], y[20]], "model.25")  # cat head P4
    y[26] = c3(net, y[25], "model.26", shortcut=False)  # P4/16-medium
    y[27] = conv(net, y[26], "model.27", 3, 2)
    y[28] = concat(net, [y[27], y[16]], "model.28")  # cat head P5
    y[29] = c3(net, y[28], "model.29", shortcut=False)  # P5/32-large
    y[30] = conv(net, y[29], "model.30", 3, 2)
    y[31] = concat(net, [y[30], y[12]], "model.31")  # cat head P6
    y[32] = c3(net, y[31], "model.32", shortcut=False)  # P6/64-xlarge
    return detect(net, [y[23], y[26], y[29], y[32]], "model.33", seg)


def yolov5(net: Net, x, task: str, p6: bool):
    """DetectionModel / SegmentationModel forward up to the Detect convs: (raw outputs per level, prototypes or
    None); ClassificationModel: the logits (Classify replaces the backbone's last module, SPPF)."""
    y = backbone(net, x, p6)
    if task == "cls":
        return classify(net, y[10], "model.11") if p6 else classify(net, y[8], "model.9")
    return head_p6(net, y, task == "seg") if p6 else head_p5(net, y, task == "seg")
