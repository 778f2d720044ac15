"""The RetinaFace network, the file to edit: biubug6's ``models/net.py`` blocks (conv_bn, conv_dw, FPN, SSH),
torchvision's ResNet-50 bottleneck, and ``RetinaFace.forward`` (models/retinaface.py) up to its three heads.
Layers are named after biubug6's module paths (``body.stage1.1.3``, ``fpn.merge1.2``, ``ssh1.conv7x7_3.1``,
``ClassHead.0.conv1x1``), which is how ``check`` compares them with PyTorch."""

from __future__ import annotations

from netdefs.common import activation, add, concat, conv_bn_act, count_indices, max_pool
from trtx.net import Net, NetdefError


# ---- blocks (biubug6's models/net.py, torchvision's ResNet) -----------------------------------------------------
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
        blocks = count_indices(net.weights, f"{path}.layer{stage}.{{}}.conv1.weight")
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


# ---- the network (RetinaFace.forward) ---------------------------------------------------------------------------
def retinaface(net: Net, x, arch: str, out_channel: int) -> tuple:
    """Backbone (mnet: MobileNetV1-0.25 stages 1-3; r50: ResNet-50 layers 2-4), FPN, SSH per level, then the heads
    over every level: (bbox_regressions [B, A, 4], classifications [B, A, 2] logits, ldm_regressions [B, A, 10])."""
    leaky = 0.1 if out_channel <= 64 else 0.0
    body = mobilenet_v1(net, x, "body") if arch == "mnet" else resnet50(net, x, "body")
    features = fpn(net, body, "fpn", leaky)
    features = [ssh(net, f, f"ssh{i}", leaky) for i, f in enumerate(features, 1)]

    def heads(path: str, width: int, name: str):
        return concat(net, [head(net, f, f"{path}.{i}", width) for i, f in enumerate(features)], name)

    return (
        heads("BboxHead", 4, "bbox_regressions"),
        heads("ClassHead", 2, "classifications"),
        heads("LandmarkHead", 10, "ldm_regressions"),
    )
