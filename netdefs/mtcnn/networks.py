"""MTCNN's three networks, P-Net, R-Net and O-Net, as facenet-pytorch writes them (facenet_pytorch/models/mtcnn.py).

Layer names are module paths in facenet-pytorch's ``MTCNN`` (``pnet.conv1``, ``rnet.dense4``, ``onet.prelu5``), and
so are the weight keys (``MTCNN().state_dict()``: ``gen_wts.py --model netdef:mtcnn -w pnet=pnet.pt ...``).
Each network is one engine; P-Net takes any image size of the pyramid (one dynamic H x W profile), R-Net and O-Net
a batch of 24 x 24 and 48 x 48 crops (a dynamic batch).
"""

from __future__ import annotations

from netdefs.common import max_pool
from trtx.net import Net

#: P-Net's input profile: the smallest pyramid level is 12 x 12; ``--pnet-max`` sets the largest side
PNET_MIN = 12


def prelu(net: Net, x, path: str):
    """nn.PReLU(C) at ``path``: one slope per channel (axis 1), on NCHW maps and on [N, C] features."""
    c = int(x.shape[1])
    slope = net.array(f"{path}.weight", (c,), layer=path).reshape((1, c) + (1,) * (len(x.shape) - 2))
    layer = net.network.add_parametric_relu(x, net.constant(slope, f"{path}.weight"))
    return net.name(layer, path).get_output(0)


def conv_prelu(net: Net, x, path: str, conv: str, act: str, kernel: int):
    """Conv2d (no padding) -> PReLU: every stage of the three networks."""
    x = net.conv(x, f"{path}.{conv}", kernel).get_output(0)
    return prelu(net, x, f"{path}.{act}")


def softmax(net: Net, x, path: str):
    """nn.Softmax(dim=1), in fp32 (the face probability is compared with thresholds)."""
    layer = net.network.add_softmax(net.to_fp32(x, f"{path}.to_fp32"))
    layer.axes = 1 << 1
    return net.name(layer, path).get_output(0)


def flatten_whc(net: Net, x, name: str):
    """``x.permute(0, 3, 2, 1).contiguous().view(N, -1)``: the Caffe-era W, H, C order the dense layers expect."""
    layer = net.network.add_shuffle(x)
    layer.first_transpose = (0, 3, 2, 1)
    layer.reshape_dims = (0, -1)
    return net.name(layer, name).get_output(0)


def pnet(net: Net, cfg) -> None:
    """PNet.forward: 3 conv + PReLU stages (a 2 x 2 max pool after the first), a face probability and a box
    regression per 12 x 12 window, stride 2."""
    side = (PNET_MIN, max(PNET_MIN, cfg.pnet_max // 2), cfg.pnet_max)
    x = net.input("data", (-1, 3, -1, -1), ranges={2: side, 3: side})
    x = conv_prelu(net, x, "pnet", "conv1", "prelu1", 3)
    x = max_pool(net, x, "pnet.pool1", 2, stride=2, ceil_mode=True)
    x = conv_prelu(net, x, "pnet", "conv2", "prelu2", 3)
    x = conv_prelu(net, x, "pnet", "conv3", "prelu3", 3)
    a = softmax(net, net.conv(x, "pnet.conv4_1", 1).get_output(0), "pnet.softmax4_1")
    b = net.conv(x, "pnet.conv4_2", 1).get_output(0)
    net.output(b, "reg")
    net.output(a, "prob")


def rnet(net: Net, cfg) -> None:
    """RNet.forward: refines P-Net's candidates, 24 x 24 crops."""
    x = net.input("data", (-1, 3, 24, 24), ranges={0: (1, 64, cfg.max_crops)})
    x = conv_prelu(net, x, "rnet", "conv1", "prelu1", 3)
    x = max_pool(net, x, "rnet.pool1", 3, stride=2, ceil_mode=True)
    x = conv_prelu(net, x, "rnet", "conv2", "prelu2", 3)
    x = max_pool(net, x, "rnet.pool2", 3, stride=2, ceil_mode=True)
    x = conv_prelu(net, x, "rnet", "conv3", "prelu3", 2)
    x = flatten_whc(net, x, "rnet.permute")
    x = prelu(net, net.linear(x, "rnet.dense4").get_output(0), "rnet.prelu4")
    a = softmax(net, net.linear(x, "rnet.dense5_1").get_output(0), "rnet.softmax5_1")
    b = net.linear(x, "rnet.dense5_2").get_output(0)
    net.output(b, "reg")
    net.output(a, "prob")


def onet(net: Net, cfg) -> None:
    """ONet.forward: the final boxes, probabilities and 5 landmarks, 48 x 48 crops."""
    x = net.input("data", (-1, 3, 48, 48), ranges={0: (1, 64, cfg.max_crops)})
    x = conv_prelu(net, x, "onet", "conv1", "prelu1", 3)
    x = max_pool(net, x, "onet.pool1", 3, stride=2, ceil_mode=True)
    x = conv_prelu(net, x, "onet", "conv2", "prelu2", 3)
    x = max_pool(net, x, "onet.pool2", 3, stride=2, ceil_mode=True)
    x = conv_prelu(net, x, "onet", "conv3", "prelu3", 3)
    x = max_pool(net, x, "onet.pool3", 2, stride=2, ceil_mode=True)
    x = conv_prelu(net, x, "onet", "conv4", "prelu4", 2)
    x = flatten_whc(net, x, "onet.permute")
    x = prelu(net, net.linear(x, "onet.dense5").get_output(0), "onet.prelu5")
    a = softmax(net, net.linear(x, "onet.dense6_1").get_output(0), "onet.softmax6_1")
    b = net.linear(x, "onet.dense6_2").get_output(0)
    c = net.linear(x, "onet.dense6_3").get_output(0)
    net.output(b, "reg")
    net.output(c, "landmarks")
    net.output(a, "prob")
