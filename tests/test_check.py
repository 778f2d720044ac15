"""``check``: a netdef against the PyTorch model it mirrors, layer by layer.

The convnet is written twice, like a netdef: with trtx.net.Net + the TensorRT layer API (layers named after
module paths) and as an nn.Module; the weights are the module's state_dict.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from trtx import check
from trtx.build import BuildOptions, build_serialized
from trtx.net import Net


class SmallConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.act2 = nn.ReLU(inplace=True)  # overwrites bn2's output: check must have copied it
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(self.act1(self.bn1(self.conv1(x))))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.head(x.mean((2, 3))), x  # a tuple, as detectors return: the netdef's forward maps it


def forward(model, feeds):
    logits, _ = model(feeds["images"])
    return {"logits": logits}


def define(net: Net) -> None:
    """The netdef: reads like SmallConvNet.forward."""
    trt, nw = net.trt, net.network
    x = net.input("images", (-1, 3, 16, 16))
    x = net.conv(x, "conv1", 3, padding=1).get_output(0)
    x = net.batchnorm(x, "bn1").get_output(0)
    x = net.name(nw.add_activation(x, trt.ActivationType.RELU), "act1").get_output(0)
    pool = nw.add_pooling_nd(x, trt.PoolingType.MAX, (2, 2))
    pool.stride_nd = (2, 2)
    x = net.name(pool, "pool").get_output(0)
    x = net.conv(x, "conv2", 3, stride=2, padding=1).get_output(0)
    x = net.batchnorm(x, "bn2").get_output(0)
    x = net.name(nw.add_activation(x, trt.ActivationType.RELU), "act2").get_output(0)
    x = net.name(nw.add_reduce(x, trt.ReduceOperation.AVG, 0b1100, False), "mean").get_output(0)
    x = net.linear(x, "head").get_output(0)
    net.output(x, "logits")


def make_model(seed: int = 0) -> SmallConvNet:
    torch.manual_seed(seed)
    model = SmallConvNet()
    with torch.no_grad():  # non-trivial batch-norm statistics, so a swapped mean/var would show
        for bn in (model.bn1, model.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def weights_of(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def make_net(weights, precision: str = "fp32") -> Net:
    net = Net(weights, precision=precision, name="small")
    define(net)
    return net


@pytest.fixture
def feeds():
    rng = np.random.default_rng()  # fresh inputs each run
    return {"images": rng.standard_normal((2, 3, 16, 16)).astype(np.float32)}


def test_matching_network_passes_and_compares_every_named_layer(feeds):
    model = make_model()
    net = make_net(weights_of(model))
    assert len(build_serialized(net, BuildOptions(progress=False))) > 0  # the real builder accepts it
    result = check.compare(net.network, model, feeds, forward=forward)
    assert result.passed, result.table()
    assert result.exit_code == 0
    assert result.first_divergent is None
    compared = [r.name for r in result.layers if r.passed]
    assert compared == ["conv1", "bn1", "act1", "pool", "conv2", "bn2", "act2", "head"]  # network order
    assert [r.name for r in result.outputs] == ["logits"]
    assert result.max_rel_err <= check.DEFAULT_RTOL
    assert result.table().splitlines()[-1].startswith("PASSED")


@pytest.mark.parametrize(
    "key,layer",
    [("conv1.weight", "conv1"), ("bn1.running_var", "bn1"), ("conv2.weight", "conv2"), ("head.bias", "head")],
)
def test_broken_weights_fail_and_name_exactly_that_layer(feeds, key, layer):
    model = make_model()
    weights = weights_of(model)
    weights[key] = weights[key] * 1.02 + 0.01  # a few percent off, as a wrong eps or a mixed-up key would be
    result = check.compare(make_net(weights).network, model, feeds, forward=forward)
    assert not result.passed and result.exit_code == 1
    assert result.first_divergent == layer
    rows = {r.name: r for r in result.layers}
    before = [r for r in result.layers if r.index < rows[layer].index]
    assert all(r.passed for r in before)  # everything upstream still matches
    assert rows[layer].status == "over tolerance" and rows[layer].max_rel_err > check.DEFAULT_RTOL
    assert result.outputs[0].passed is False
    table = result.table()
    assert table.splitlines()[-1].startswith(f"first divergent: {layer}  [layer #{rows[layer].index}, ")


def test_output_only_mismatch_names_the_output(feeds):
    """The layers all match but the netdef's forward() maps the output wrongly (softmax over the batch)."""
    model = make_model()
    net = make_net(weights_of(model))
    nw = net.network
    logits = nw.get_output(0)
    nw.unmark_output(logits)
    softmax = nw.add_softmax(logits)
    softmax.axes = 1 << 1
    net.output(net.name(softmax, "prob").get_output(0), "prob")

    def wrong_forward(model, feeds):
        return {"prob": torch.softmax(model(feeds["images"])[0], dim=0)}

    result = check.compare(nw, model, feeds, forward=wrong_forward)
    assert not result.passed
    assert all(r.passed for r in result.layers if r.passed is not None)
    assert result.first_divergent == "prob"
    assert "last matching: head" in result.table()

    def right_forward(model, feeds):
        return {"prob": torch.softmax(model(feeds["images"])[0], dim=1)}

    assert check.compare(nw, model, feeds, forward=right_forward).passed


def test_forward_missing_or_extra_output_fails_clearly(feeds):
    model = make_model()
    net = make_net(weights_of(model))
    result = check.compare(net, model, feeds, forward=lambda m, f: {"logit": m(f["images"])[0]})
    assert not result.passed
    statuses = " | ".join(r.status for r in result.outputs)
    assert "forward() returned no 'logits'" in statuses
    assert "'logit', not a network output" in statuses


def test_feeds_that_do_not_fit_the_inputs_are_a_clear_error(feeds):
    model = make_model()
    net = make_net(weights_of(model))
    with pytest.raises(check.CheckError, match="lack images.*no input named x"):
        check.compare(net, model, {"x": feeds["images"]}, forward=forward)
    with pytest.raises(check.CheckError, match=r"feed 'images' has shape \(2, 3, 8, 8\)"):
        check.compare(net, model, {"images": feeds["images"][:, :, :8, :8]}, forward=forward)


def test_layers_false_compares_outputs_only(feeds):
    model = make_model()
    weights = weights_of(model)
    weights["conv2.weight"] = weights["conv2.weight"] * 1.02 + 0.01
    result = check.compare(make_net(weights), model, feeds, forward=forward, layers=False)
    assert result.layers == [] and not result.passed and result.first_divergent == "logits"


# ---- tolerance edges on a network whose error is known exactly ----------------------------------
class AddConstant(nn.Module):
    def __init__(self, c) -> None:
        super().__init__()
        self.register_buffer("c", torch.tensor(c, dtype=torch.float32))

    def forward(self, x):
        return x + self.c


class Wrapper(nn.Module):
    def __init__(self, c) -> None:
        super().__init__()
        self.add = AddConstant(c)

    def forward(self, x):
        return self.add(x)


def add_network(c) -> Net:
    net = Net(name="add")
    x = net.input("x", (1, 4))
    const = net.constant(np.asarray(c, np.float32).reshape(1, 4), "add.c")
    layer = net.network.add_elementwise(x, const, net.trt.ElementWiseOperation.SUM)
    net.output(net.name(layer, "add").get_output(0), "y")
    return net


EPS = 2.0**-14  # exactly representable: the network's error below is exactly EPS, its scale exactly 1


@pytest.mark.parametrize(
    "atol,rtol,passes",
    [
        (0.0, 1e-4, True),  # 6.1e-5 relative < 1e-4
        (0.0, 6e-5, False),
        (0.0, EPS, True),  # the bound is inclusive
        (0.0, EPS * (1 - 1e-9), False),
        (EPS, 0.0, True),
        (EPS * (1 - 1e-9), 0.0, False),
    ],
)
def test_tolerance_edges(atol, rtol, passes):
    net = add_network([1.0, 0.5, -0.25, 0.0])
    model = Wrapper([1.0, 0.5 + EPS, -0.25, 0.0])
    feeds = {"x": np.zeros((1, 4), np.float32)}
    result = check.compare(net, model, feeds, forward=lambda m, f: {"y": m(f["x"])}, atol=atol, rtol=rtol)
    for row in (result.outputs[0], result.layers[0]):
        assert row.max_abs_err == EPS and row.max_rel_err == EPS
        assert row.passed is passes
    assert result.passed is passes
    assert result.first_divergent == (None if passes else "add")


def test_all_zero_expected_uses_atol():
    net = add_network([0.0, 1e-8, 0.0, 0.0])
    model = Wrapper([0.0, 0.0, 0.0, 0.0])
    feeds = {"x": np.zeros((1, 4), np.float32)}
    fwd = lambda m, f: {"y": m(f["x"])}  # noqa: E731
    ok = check.compare(net, model, feeds, forward=fwd)  # default atol 1e-7 covers 1e-8 on a zero tensor
    assert ok.passed and math.isinf(ok.outputs[0].max_rel_err)
    assert not check.compare(net, model, feeds, forward=fwd, atol=1e-9).passed


def test_default_tolerance_is_fp32_and_depends_on_precision():
    net = add_network([1.0, 0.5, -0.25, 0.0])
    model = Wrapper([1.0, 0.5 + 1e-3, -0.25, 0.0])  # 1e-3 of scale: fine for fp16, wrong for fp32
    feeds = {"x": np.zeros((1, 4), np.float32)}
    fwd = lambda m, f: {"y": m(f["x"])}  # noqa: E731
    assert not check.compare(net, model, feeds, forward=fwd).passed
    assert check.compare(net, model, feeds, forward=fwd, precision="fp16").passed
    with pytest.raises(check.CheckError, match="precision 'fp64'"):
        check.compare(net, model, feeds, forward=fwd, precision="fp64")


def test_nan_is_never_within_tolerance():
    a = torch.tensor([1.0, float("nan")])
    assert check.errors(a, torch.tensor([1.0, 2.0]), atol=1.0, rtol=1.0) == (math.inf, math.inf, False)
    assert check.errors(torch.tensor([math.inf]), torch.tensor([math.inf]), atol=0, rtol=0)[2]


# ---- statuses of hooked modules that cannot be compared -----------------------------------------
class Odd(nn.Module):
    """Modules whose outputs don't line up one-to-one with a network tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.split = Chunk()
        self.flat = nn.Flatten(0)  # (1, 4) -> (4,): equal up to size-1 dims, so compared
        self.view = View()  # (1, 4) -> (2, 2): a different shape
        self.twice = nn.Identity()
        self.unused = nn.Identity()

    def forward(self, x):
        a, b = self.split(x)
        self.twice(x)
        self.twice(x)
        return self.flat(x), self.view(x), a


class Chunk(nn.Module):
    def forward(self, x):
        return x.chunk(2, dim=1)


class View(nn.Module):
    def forward(self, x):
        return x.reshape(2, 2)


def test_unmatched_module_outputs_are_reported_not_skipped():
    net = Net(name="odd")
    x = net.input("x", (1, 4))
    for name in ("split", "flat", "view", "twice", "unused"):
        x = net.name(net.network.add_identity(x), name).get_output(0)
    net.output(x, "y")
    feeds = {"x": np.arange(4, dtype=np.float32).reshape(1, 4)}
    result = check.compare(net, Odd(), feeds, forward=lambda m, f: {"y": m(f["x"])[0].reshape(1, 4)})
    status = {r.name: r.status for r in result.layers}
    assert status["split"] == "module returned a tuple of 2: not compared"
    assert status["flat"] == "ok"
    assert status["view"] == "shape differs: torch [2, 2] vs network [1, 4]"  # a shape that differs is a failure
    assert status["twice"] == "module ran 2 times: not compared"
    assert status["unused"] == "module did not run in forward(): not compared"
    assert not result.passed and result.first_divergent == "view"
    assert "FAILED: 0 of 1 output and 1 of 2 compared layers (3 more not comparable, see status)" in result.table()


class TopKGather(nn.Module):
    """Picks the 2 best of ``x + offset`` and returns those entries of ``2 x``: a data-dependent selection."""

    def __init__(self, offset: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("offset", torch.from_numpy(offset))

    def forward(self, x):
        _, index = (x + self.offset).topk(2, dim=1)
        return (2 * x).gather(1, index)


def topk_network(offset: np.ndarray) -> Net:
    net = Net(name="topk")
    trt, nw = net.trt, net.network
    x = net.input("x", (1, 6))
    s = net.name(nw.add_elementwise(x, net.constant(offset, "offset"), trt.ElementWiseOperation.SUM), "scores")
    topk = net.name(nw.add_topk(s.get_output(0), trt.TopKOperation.MAX, 2, 1 << 1), "topk")
    double = nw.add_elementwise(x, net.constant(np.full((1, 1), 2.0, np.float32), "two"), trt.ElementWiseOperation.PROD)
    gather = nw.add_gather(net.name(double, "double").get_output(0), topk.get_output(1), 1)
    gather.num_elementwise_dims = 1
    net.output(net.name(gather, "picked").get_output(0), "y")
    return net


@pytest.mark.parametrize(("network_offset", "follows"), [(1e-6, True), (1.5, False)])
def test_a_near_tie_in_top_k_is_followed_a_real_difference_is_not(network_offset, follows):
    """x has a tie at indices 1 and 2. PyTorch's offset breaks it towards 1, the network's towards 2 (1e-6: a
    near-tie, within tolerance) or moves index 3 ahead (1.5: a real difference). PyTorch continues with the
    network's pick only in the first case; the top-k row says which."""
    x = np.array([[3.0, 2.0, 2.0, 1.0, 0.0, 0.0]], np.float32)
    torch_offset = np.array([[0, 0, -1e-6, 0, 0, 0]], np.float32)
    net_offset = np.zeros((1, 6), np.float32)
    net_offset[0, 2 if follows else 3] = network_offset
    result = check.compare(topk_network(net_offset), TopKGather(torch_offset), {"x": x},
                           forward=lambda m, f: {"y": m(f["x"])})  # fmt: skip
    (row,) = result.extras
    assert row.name == "top-k topk" and row.passed is follows
    assert ("1 of 2 indices differ among near-ties" in row.message) if follows else ("not a tie" in row.message)
    assert result.passed is follows
    assert [r.passed for r in result.outputs] == [follows]


# ---- extras, JSON, the torch settings -----------------------------------------------------------
def test_extra_comparisons_are_rows_that_decide(feeds):
    model = make_model()
    net = make_net(weights_of(model))

    def top1(net_out, torch_out):
        same = bool((net_out["logits"].argmax(1) == torch_out["logits"].argmax(1)).all())
        return same, "top-1 classes agree" if same else "top-1 differs"

    def broken(net_out, torch_out):
        raise RuntimeError("no detections")

    result = check.compare(net, model, feeds, forward=forward, extras={"top1": top1})
    assert result.passed and result.extras[0].message == "top-1 classes agree"
    result.add_extra([("detections", False, "3 boxes vs 4"), {"name": "count", "passed": True}])
    assert not result.passed and result.exit_code == 1
    assert "failed extra comparisons: detections" in result.table()
    failing = check.compare(net, model, feeds, forward=forward, extras={"nms": broken})
    assert not failing.passed and failing.extras[0].message == "raised RuntimeError: no detections"
    assert set(result.network_outputs) == set(result.expected_outputs) == {"logits"}


def test_unordered_outputs_are_left_to_the_extra_comparisons(feeds):
    """An output forward() marks Unordered (a top-k, an NMS selection, which near-ties may order either way): its
    row is not compared element by element (passed None, the status says where it is held), the rest decides,
    and the extra comparisons get both values."""
    model = make_model()
    net = make_net(weights_of(model))
    top = net.network.add_topk(net.network.get_output(0), net.trt.TopKOperation.MAX, 3, 1 << 1)
    net.output(top.get_output(1), "top3", np.int32)

    def fwd(m, f):
        logits = m(f["images"])[0]
        return {"logits": logits, "top3": check.Unordered(logits.topk(3, 1).indices)}

    def same_sets(net_out, torch_out):
        return net_out["top3"].sort(1).values.tolist() == torch_out["top3"].value.sort(1).values.tolist()

    result = check.compare(net, model, feeds, forward=fwd, extras={"top-3 sets": same_sets})
    row = {r.name: r for r in result.outputs}["top3"]
    assert row.passed is None and "extra comparisons" in row.status and row.shape == (2, 3)
    assert result.passed and result.extras[0].passed, result.table()
    broken = check.compare(net, model, feeds, forward=lambda m, f: {**fwd(m, f), "logits": m(f["images"])[0] + 1})
    assert not broken.passed and broken.first_divergent == "logits"


def test_json_keys_and_strict_json(feeds):
    model = make_model()
    weights = weights_of(model)
    weights["conv2.weight"][:] = 3e38  # overflows to inf in the network only: strict JSON all the same
    result = check.compare(make_net(weights), model, feeds, forward=forward)
    doc = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert {"outputs", "layers", "first_divergent", "max_abs_err", "max_rel_err", "passed"} <= set(doc)
    assert doc["passed"] is False and doc["first_divergent"] == "conv2"
    row = doc["layers"][0]
    assert {"name", "shape", "max_abs_err", "max_rel_err", "status"} <= set(row)
    assert row["name"] == "conv1" and row["shape"] == [2, 8, 16, 16] and row["passed"] is True
    conv2 = next(r for r in doc["layers"] if r["name"] == "conv2")
    assert conv2["max_abs_err"] == "inf" and conv2["status"].endswith("non-finite value(s) where PyTorch differs")
    assert json.loads(result.json())["outputs"][0]["name"] == "logits"


def test_torch_runs_fp32_no_tf32_deterministic_in_eval_and_settings_come_back(feeds):
    model = make_model().double().train()
    net = make_net(weights_of(make_model()))
    seen = {}

    def spy(model, feeds):
        seen.update(
            tf32=(torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32),
            deterministic=torch.are_deterministic_algorithms_enabled(),
            training=model.training,
            dtype=next(model.parameters()).dtype,
            feed=feeds["images"].dtype,
        )
        return forward(model, feeds)

    before = torch.are_deterministic_algorithms_enabled()
    result = check.compare(net, model, feeds, forward=spy)
    assert result.passed, result.table()  # BatchNorm in eval mode: running statistics, as the network
    assert seen == dict(tf32=(False, False), deterministic=True, training=False, dtype=torch.float32,
                        feed=torch.float32)  # fmt: skip
    assert model.training and next(model.parameters()).dtype == torch.float64  # the caller's model untouched
    assert torch.are_deterministic_algorithms_enabled() == before


def test_fp16_network_against_fp32_model(feeds):
    model = make_model()
    net = make_net(weights_of(model), precision="fp16")
    strict = check.compare(net, model, feeds, forward=forward)
    assert not strict.passed  # fp16 rounding is far above the fp32 tolerance...
    loose = check.compare(net, model, feeds, forward=forward, precision="fp16")
    assert loose.passed, loose.table()  # ...and within the fp16 one
    assert 1e-5 < loose.max_rel_err < 1e-2
