"""fast_math's fusions (trtx.reference.fusion): what they fold, what they must leave alone, and that a fused plan
computes what the plain executor computes within fp32 rounding, on small cases and on whole networks."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from refcase import Case, assert_close, rand

from trtx import reference

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _conv_bn(c: Case, x, k: int = 6, *, groups: int = 1, bias: bool = True, power=None, pre=(1, 1), post=(1, 1)):
    """conv 3x3 (k maps) -> a per-channel IScale (x·s + t, power ones unless given): net.batchnorm's form."""
    cin = int(x.shape[1])
    w = c.weights(rand(k, cin // groups, 3, 3))
    b = c.weights(rand(k)) if bias else c.trt.Weights()
    conv = c.nw.add_convolution_nd(x, k, (3, 3), w, b)
    conv.num_groups = groups
    conv.pre_padding, conv.post_padding = pre, post
    conv.name = "conv"
    s, t = rand(k, low=0.5, high=1.5), rand(k)
    p = np.ones(k, np.float32) if power is None else np.asarray(power, np.float32)
    scale = c.nw.add_scale_nd(conv.get_output(0), c.trt.ScaleMode.CHANNEL, c.weights(t), c.weights(s), c.weights(p), 1)
    scale.name = "bn"
    return conv.get_output(0), scale.get_output(0)


TAILS = {  # what follows the batch norm -> (the fused node's name, steps left)
    "sigmoid": ("conv+scale", 2),
    "relu": ("conv+scale+relu", 1),
    "silu": ("conv+scale+silu", 1),
    "sum relu": ("conv+scale+add+relu", 2),  # the residual's own layer, then the fused node
}


@pytest.mark.parametrize("tail", list(TAILS))
@pytest.mark.parametrize(
    "groups, bias, pre, post", [(1, True, (1, 1), (1, 1)), (2, False, (1, 1), (1, 1)), (1, True, (0, 1), (1, 2))]
)
@pytest.mark.parametrize("device", DEVICES)
def test_conv_and_scale_fold_into_one_convolution(device, groups, bias, pre, post, tail):
    """Grouped or not, with or without a bias, symmetric or explicit padding, then a sigmoid, a ReLU, a SiLU or a
    residual sum and a ReLU: one node, the plain executor's result (on CUDA through cuDNN's fused kernels and the
    bias + SiLU kernel)."""
    c = Case()
    x = c.input("x", (3, 4, 9, 11))
    conv, y = _conv_bn(c, x, groups=groups, bias=bias, pre=pre, post=post)
    A = c.trt.ActivationType
    if tail == "sum relu":
        r = c.input("r", tuple(conv.shape))
        z = c.nw.add_activation(r, A.TANH).get_output(0)
        y = c.nw.add_elementwise(z, y, c.trt.ElementWiseOperation.SUM).get_output(0)
    if tail == "silu":  # x · sigmoid(x), as yolov5's netdef writes it
        sig = c.nw.add_activation(y, A.SIGMOID).get_output(0)
        c.output(c.nw.add_elementwise(y, sig, c.trt.ElementWiseOperation.PROD))
    else:
        c.output(c.nw.add_activation(y, A.SIGMOID if tail == "sigmoid" else A.RELU))
    feeds = {"x": rand(3, 4, 9, 11)}
    if tail == "sum relu":
        feeds["r"] = rand(*tuple(conv.shape))
    if device == "cpu":
        c.build(feeds)
    fast, plain = reference.compile(c.nw, device, fast_math=True), reference.compile(c.nw, device, optimize=False)
    name, steps = TAILS[tail]
    assert fast.describe()["fusions"] == {name: 1}
    assert fast.describe()["steps"] == steps
    for _ in range(3):  # on CUDA: the first run, the capture, a replay
        assert_close(fast(feeds)["y"].cpu(), plain(feeds)["y"].cpu(), rtol=1e-6)
    assert reference.compile(c.nw, device).describe()["fused"] == (0 if device == "cpu" else 1)  # CUDA's default


@pytest.mark.parametrize("why", ["read twice", "returned", "power", "element mode", "relu of a sum that broadcasts"])
def test_conv_and_scale_stay_apart_when_folding_would_change_the_answer(why):
    c = Case()
    x = c.input("x", (2, 4, 8, 8))
    power = [1, 1, 2, 1, 1, 1] if why == "power" else None
    conv, y = _conv_bn(c, x, power=power)
    if why == "element mode":  # one coefficient per element, not per channel: not a batch norm
        n = 6 * 8 * 8
        y = c.nw.add_scale_nd(conv, c.trt.ScaleMode.ELEMENTWISE, c.weights(rand(n)), c.weights(rand(n)),
                              c.weights(np.ones(n, np.float32)), 1).get_output(0)  # fmt: skip
    if why == "read twice":  # the convolution's own output is needed too
        y = c.nw.add_elementwise(y, conv, c.trt.ElementWiseOperation.SUM).get_output(0)
    if why == "relu of a sum that broadcasts":  # + a per-channel term is not a residual of the conv's shape
        bias = c.nw.add_activation(c.const(rand(1, 6, 1, 1)), c.trt.ActivationType.TANH).get_output(0)
        s = c.nw.add_elementwise(y, bias, c.trt.ElementWiseOperation.SUM).get_output(0)
        y = c.nw.add_activation(s, c.trt.ActivationType.RELU).get_output(0)
    c.output(y)
    if why == "returned":
        c.output(conv, "conv_out")
    xv = rand(2, 4, 8, 8)
    c.build({"x": xv})
    fast = reference.compile(c.nw, fast_math=True)
    broadcast = why == "relu of a sum that broadcasts"  # the sum and the ReLU: an elementwise tree of their own
    assert fast.describe()["fusions"] == ({"conv+scale": 1, "elementwise": 1} if broadcast else {})
    plain = reference.compile(c.nw, optimize=False)({"x": xv})
    for name, value in fast({"x": xv}).items():
        assert_close(value, plain[name], rtol=1e-6)


def test_a_nan_scale_is_never_folded_into_the_kernel():
    """A non-finite coefficient stays in its own layer, where it gives the plain executor's NaNs."""
    c = Case()
    x = c.input("x", (1, 2, 5, 5))
    conv = c.nw.add_convolution_nd(x, 2, (1, 1), c.weights(rand(2, 2, 1, 1)), c.weights(rand(2)))
    s = np.array([1.0, np.nan], np.float32)
    c.output(c.nw.add_scale_nd(conv.get_output(0), c.trt.ScaleMode.CHANNEL, c.weights(rand(2)), c.weights(s),
                               c.weights(np.ones(2, np.float32)), 1))  # fmt: skip
    fast = reference.compile(c.nw, fast_math=True)
    assert fast.describe()["fused"] == 0
    y = fast({"x": rand(1, 2, 5, 5)})["y"]
    assert torch.isnan(y[:, 1]).all() and torch.isfinite(y[:, 0]).all()


@pytest.fixture(scope="module")
def networks():
    """yolov5n at 64 and resnet18 at 224, random weights: every convolution followed by net.batchnorm."""
    import wts
    from netdefs import resnet, sources
    from netdefs.yolov5 import config, decode
    from trtx.net import Net

    out = {}
    for spec in ("yolov5:yolov5n", "torchvision:resnet18"):
        model = sources.build_model(spec, seed=0)
        for m in model.modules():  # batch norms that are not the identity, so a wrong fold shows
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        weights = wts.WeightMap(sources.state_dict_for_wts(model, spec))
        net = Net(weights)
        if spec.startswith("yolov5"):
            decode.define(net, config.configure(argparse.Namespace(command="check", imgsz="64"), weights))
        else:
            resnet.define(net, resnet.configure(argparse.Namespace(command="check", arch="resnet18"), weights))
        out[spec] = (model.eval(), net, 64 if spec.startswith("yolov5") else 224)
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "spec, expected",
    [
        ("yolov5:yolov5n", {"conv+scale+silu": 57}),
        ("torchvision:resnet18", {"conv+scale+relu": 9, "conv+scale+add+relu": 8, "conv+scale": 3}),
    ],
)
def test_whole_networks_fold_every_batch_norm_and_keep_pytorchs_answer(networks, spec, expected, device):
    """Every convolution + batch norm folds with its activation (resnet: with each residual block's sum and ReLU);
    the fused plan stays within fp32 rounding of the plain one and within check's tolerance of PyTorch."""
    model, net, size = networks[spec]
    keep = [] if spec.startswith("yolov5") else ["fc"]  # resnet's logits: a softmax hides their errors
    fast = reference.compile(net, device, fast_math=True, keep=keep)
    plain = reference.compile(net, device, optimize=False, keep=keep)
    fusions = fast.describe()["fusions"]
    assert {name: n for name, n in fusions.items() if name.startswith("conv")} == expected
    model = model.to(device)
    for batch in (1, 2):
        x = torch.rand(batch, 3, size, size, device=device)
        got, want = fast({net.network.get_input(0).name: x}), plain({net.network.get_input(0).name: x})
        for name in want:
            assert _relative(got[name], want[name]) < 1e-5, name
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # PyTorch's CUDA default: TF32
        pred = model(x)
    if spec.startswith("yolov5"):
        assert _relative(got["boxes"], pred[0][..., :4]) < 1e-4
    else:
        assert _relative(got["fc"], pred) < 1e-4


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| relative to the expected output's scale (check's measure)."""
    expected = expected.to(actual.device, actual.dtype)
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-6))


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(3, 16, 9, 7), (2, 8, 40, 40), (1, 3, 1, 1)])
def test_the_bias_silu_kernel_compiles_and_agrees_with_pytorch(shape):
    """On CUDA the conv+SiLU node runs its bias and SiLU as one kernel: it must compile here (else the plan falls
    back to two kernels, correct but slower) and agree with PyTorch's add + silu on fresh values of every sign,
    in planes the kernel reads as float4 and planes it reads one by one; the output is poisoned first."""
    from trtx.reference import fusion

    kernel = fusion._bias_silu_kernel(torch.device("cuda", torch.cuda.current_device()))
    assert kernel is not None
    x = torch.randn(shape, device="cuda") * 8
    b = torch.randn(shape[1], device="cuda")
    got = fusion._launch(kernel, x, b, out=torch.full_like(x, float("nan")))  # poisoned: each element written
    torch.testing.assert_close(got, torch.nn.functional.silu(x + b.reshape(1, -1, 1, 1)), rtol=1e-6, atol=1e-6)


def _decode_like(c: Case, returned_inner: bool = False, extra_leaves: int = 0):
    """yolov5's decode per level: s = sigmoid(t); y = s·(a + s·q) + gx + gy with broadcast constants, where s is
    read twice inside the tree (and, with ``returned_inner``, also returned). ``extra_leaves`` more sums with
    fed tensors past the 8 inputs one kernel takes."""
    E, A = c.trt.ElementWiseOperation, c.trt.ActivationType
    t = c.input("t", (-1, 3, 4, 5, 7))
    s = c.nw.add_activation(t, A.SIGMOID).get_output(0)
    q, a = c.const(rand(1, 3, 1, 1, 7)), c.const(rand(1, 1, 1, 1, 7))
    gx, gy = c.const(rand(1, 1, 1, 5, 7)), c.const(rand(1, 1, 4, 1, 7))
    y = c.nw.add_elementwise(s, q, E.PROD).get_output(0)
    y = c.nw.add_elementwise(y, a, E.SUM).get_output(0)
    y = c.nw.add_elementwise(s, y, E.PROD).get_output(0)
    y = c.nw.add_elementwise(y, gx, E.SUM).get_output(0)
    y = c.nw.add_elementwise(y, gy, E.SUB).get_output(0)
    for k in range(extra_leaves):
        y = c.nw.add_elementwise(y, c.input(f"e{k}", (1, 1, 1, 1, 7)), E.SUM).get_output(0)
    c.output(y)
    if returned_inner:
        c.output(s, "s")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", ["decode", "returned inner", "too many inputs"])
def test_elementwise_trees_run_as_one_node(device, shape):
    """The decode's six layers are one node (the shared sigmoid inside it); a sigmoid the caller gets back stays
    out (five layers); a tree reading more than 8 tensors stays as it is. On the CPU the node runs the layers
    one by one: bit-identical; on CUDA one generated kernel from the second run of a shape on."""
    c = Case()
    _decode_like(c, returned_inner=shape == "returned inner", extra_leaves=6 if shape == "too many inputs" else 0)
    feeds = {"t": rand(2, 3, 4, 5, 7)}
    feeds.update({f"e{k}": rand(1, 1, 1, 1, 7) for k in range(6 if shape == "too many inputs" else 0)})
    if device == "cpu":
        c.build(feeds)
    fast, plain = reference.compile(c.nw, device, fast_math=True), reference.compile(c.nw, device, optimize=False)
    expected = {"decode": (1, 1), "returned inner": (1, 2), "too many inputs": (0, 12)}[shape]
    assert (fast.describe()["fused"], fast.describe()["steps"]) == expected
    want = plain(feeds)
    for _ in range(3):  # the first run (layer by layer), the kernel's first call (the capture's warm-up), a replay
        got = fast(feeds)
        for name in want:
            if device == "cpu":
                assert torch.equal(got[name], want[name]), name
            else:
                assert_close(got[name].cpu(), want[name].cpu(), rtol=1e-6)
