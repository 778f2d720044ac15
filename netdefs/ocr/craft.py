"""CRAFT, EasyOCR's text detector (easyocr/craft.py, easyocr/model/modules.py ``vgg16_bn``): a VGG16-BN backbone
and a U-Net that upsamples back to half the input size, where it scores each pixel as text (region score) and as
the gap between two characters of a word (affinity score).

Layer names are module paths of the OCR container (``detector.basenet.slice1.0``, ``detector.upconv1.conv.3``).
The input is dynamic in height and width, multiples of 32 (EasyOCR pads the resized image to them).
"""

from __future__ import annotations

from netdefs.common import activation, concat, conv_bn_act, max_pool
from trtx.net import Net

#: torchvision vgg16_bn ``features`` split into CRAFT's slices: (slice, first index, last index)
SLICES = (("slice1", 0, 11), ("slice2", 12, 18), ("slice3", 19, 28), ("slice4", 29, 38))
#: the layers of torchvision's vgg16_bn.features by index: "C" conv3x3 (+ BN at i+1), "R" ReLU, "M" max pool 2
VGG16_BN = "CBRCBRM" + "CBRCBRM" + "CBRCBRCBRM" + "CBRCBRCBRM" + "CBRCBRCBR"


def vgg_slice(net: Net, x, name: str, first: int, last: int):
    """``basenet.<name>``: torchvision's vgg16_bn.features[first .. last] (every module keeps its index).
    Returns the slice's output and its first module's."""
    path = f"detector.basenet.{name}"
    outputs = []
    for i in range(first, last + 1):
        kind = VGG16_BN[i]
        if kind == "C":
            x = net.conv(x, f"{path}.{i}", 3, padding=1).get_output(0)
        elif kind == "B":
            x = net.batchnorm(x, f"{path}.{i}").get_output(0)
        elif kind == "R":
            x = activation(net, x, "relu", f"{path}.{i}")
        else:
            x = max_pool(net, x, f"{path}.{i}", 2, stride=2)
        outputs.append(x)
    return net.alias(x, path), outputs[0]


def basenet(net: Net, x):
    """vgg16_bn.forward -> (fc7, relu5_3, relu4_3, relu3_2, relu2_2).

    torchvision's ReLUs are in-place: slice2..4 begin with the ReLU of the batch norm that ends the slice before,
    so the U-Net's skip inputs relu2_2, relu3_2, relu4_3 are those ReLUs' outputs, while relu5_3 (followed by
    slice5's max pool, not a ReLU) stays the batch norm's output."""
    h, _ = vgg_slice(net, x, *SLICES[0])
    h, relu2_2 = vgg_slice(net, h, *SLICES[1])
    h, relu3_2 = vgg_slice(net, h, *SLICES[2])
    relu5_3, relu4_3 = vgg_slice(net, h, *SLICES[3])
    h = max_pool(net, relu5_3, "detector.basenet.slice5.0", 3, stride=1, padding=1)
    h = net.conv(h, "detector.basenet.slice5.1", 3, padding=6, dilation=6).get_output(0)
    fc7 = net.conv(h, "detector.basenet.slice5.2", 1).get_output(0)
    net.alias(fc7, "detector.basenet.slice5")
    return fc7, relu5_3, relu4_3, relu3_2, relu2_2


def double_conv(net: Net, x, path: str):
    """double_conv: 1x1 conv -> BN -> ReLU -> 3x3 conv -> BN -> ReLU (``<path>.conv.0`` .. ``.5``)."""
    x = conv_bn_act(net, x, conv=f"{path}.conv.0", bn=f"{path}.conv.1", act=f"{path}.conv.2", kernel=1)
    x = conv_bn_act(net, x, conv=f"{path}.conv.3", bn=f"{path}.conv.4", act=f"{path}.conv.5", kernel=3)
    return net.alias(x, path)


def upsample2x(net: Net, x, name: str):
    """``F.interpolate(y, size=skip.size()[2:], mode="bilinear", align_corners=False)``: the skip input is exactly
    twice as large (the input is a multiple of 32), so the resize is a 2x bilinear with half-pixel centres."""
    trt = net.trt
    layer = net.network.add_resize(x)
    layer.resize_mode = trt.InterpolationMode.LINEAR
    layer.scales = [1.0, 1.0, 2.0, 2.0]
    layer.coordinate_transformation = trt.ResizeCoordinateTransformation.HALF_PIXEL
    return net.name(layer, name).get_output(0)


def define(net: Net, cfg) -> None:
    """CRAFT.forward: region and affinity scores [N, H/2, W/2, 2] of an image [N, 3, H, W] (ImageNet-normalized)."""
    side = (32, cfg.craft_opt, cfg.canvas_size)
    x = net.input("image", (-1, 3, -1, -1), ranges={2: side, 3: side})
    fc7, relu5_3, relu4_3, relu3_2, relu2_2 = basenet(net, x)
    y = double_conv(net, concat(net, [fc7, relu5_3], "detector.cat1"), "detector.upconv1")
    y = upsample2x(net, y, "detector.interpolate1")
    y = double_conv(net, concat(net, [y, relu4_3], "detector.cat2"), "detector.upconv2")
    y = upsample2x(net, y, "detector.interpolate2")
    y = double_conv(net, concat(net, [y, relu3_2], "detector.cat3"), "detector.upconv3")
    y = upsample2x(net, y, "detector.interpolate3")
    y = double_conv(net, concat(net, [y, relu2_2], "detector.cat4"), "detector.upconv4")
    for i, kernel in ((0, 3), (2, 3), (4, 3), (6, 1)):
        y = net.conv(y, f"detector.conv_cls.{i}", kernel, padding=kernel // 2).get_output(0)
        y = activation(net, y, "relu", f"detector.conv_cls.{i + 1}")
    y = net.conv(y, "detector.conv_cls.8", 1).get_output(0)
    net.alias(y, "detector.conv_cls")
    permute = net.network.add_shuffle(y)
    permute.first_transpose = (0, 2, 3, 1)
    net.output(net.name(permute, "detector.permute").get_output(0), "score")
