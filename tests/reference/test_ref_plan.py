"""compile(): what the plan does between runs -- folding, buffer reuse, the input-shape cache, fusions, CUDA
graphs -- never changes what a run returns, and never touches the caller's tensors."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from refcase import Case, assert_close, rand, same

from trtx import reference

gpu = pytest.mark.gpu


def _silu_chain(c: Case, x):
    """relu -> x·sigmoid(x) -> + 1: elementwise layers a plan may run in place."""
    A, E = c.trt.ActivationType, c.trt.ElementWiseOperation
    r = c.nw.add_activation(x, A.RELU).get_output(0)
    s = c.nw.add_activation(r, A.SIGMOID).get_output(0)
    p = c.nw.add_elementwise(r, s, E.PROD).get_output(0)
    return c.nw.add_elementwise(p, c.const(np.ones((1, 1), np.float32)), E.SUM)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_feeds_are_never_written(kind):
    c = Case()
    x = c.input("x", (-1, 8))
    ident = c.nw.add_identity(x).get_output(0)  # the feed itself, under another name
    c.output(c.nw.add_elementwise(_silu_chain(c, ident).get_output(0), x, c.trt.ElementWiseOperation.SUM))
    xv = rand(3, 8)
    feed = xv.copy() if kind == "numpy" else torch.from_numpy(xv.copy())
    plan = reference.compile(c.nw)
    for _ in range(3):
        y = plan({"x": feed})["y"]
    assert np.array_equal(np.asarray(feed), xv)
    r = np.maximum(xv, 0)
    assert_close(y, r / (1 + np.exp(-r)) + 1 + xv)


def test_the_plan_runs_in_place_and_stays_exact():
    """The plan writes elementwise results into inputs nothing else needs (the donation is counted), and its
    outputs are bit-identical to the plain executor's, which allocates every tensor."""
    c = Case()
    x = c.input("x", (4, 16))
    c.output(_silu_chain(c, x))
    plan = reference.compile(c.nw)
    donated = []
    original = reference.LayerCall.scratch

    def counting(call, index, t):
        result = original(call, index, t)
        donated.append(result is not None and t is call.inputs[index])
        return result

    xv = rand(4, 16)
    reference.LayerCall.scratch = counting
    try:
        y = plan({"x": xv})["y"]
    finally:
        reference.LayerCall.scratch = original
    assert sum(donated) >= 2  # the product over the sigmoid's output, the + 1 over the product
    same(y, reference.compile(c.nw, optimize=False)({"x": xv})["y"])


def test_kept_tensors_are_not_overwritten():
    c = Case()
    x = c.input("x", (4, 16))
    chain = _silu_chain(c, x)
    r = chain.get_input(0)  # the product, overwritten in place unless kept
    r.name = "product"
    c.output(chain)
    xv = rand(4, 16)
    out = reference.compile(c.nw, keep=["product"])({"x": xv})
    assert_close(out["y"], out["product"] + 1)


def test_returned_constants_are_copies():
    c = Case()
    x = c.input("x", (2,))
    c.output(c.const(np.array([1.0, 2.0], np.float32)), "k")
    c.output(c.nw.add_identity(x), "y")
    plan = reference.compile(c.nw)
    first = plan({"x": rand(2)})["k"]
    first.zero_()
    assert plan({"x": rand(2)})["k"].tolist() == [1.0, 2.0]


def test_shape_tensors_fold_per_input_shape_and_the_cache_is_bounded():
    """A dynamic reshape from IShapeLayer values: computed on the first run for a shape, replayed after that."""
    c = Case()
    x = c.input("x", (-1, 3, 4))
    shape = c.nw.add_shape(x).get_output(0)
    batch = c.nw.add_slice(shape, (0,), (1,), (1,)).get_output(0)
    dims = c.nw.add_concatenation([batch, c.const(np.array([12], np.int64))]).get_output(0)
    flat = c.nw.add_shuffle(x)
    flat.set_input(1, dims)
    c.output(c.nw.add_unary(flat.get_output(0), c.trt.UnaryOperation.NEG))
    plan = reference.compile(c.nw, cache_size=2)
    assert plan.describe()["shape_tensors"] >= 3
    for b in (1, 2, 3, 2, 5):
        xv = rand(b, 3, 4)
        for _ in range(2):
            assert_close(plan({"x": xv})["y"], -xv.reshape(b, 12))
    assert plan.describe()["input_shapes_cached"] == 2
    entry = plan._entries[((5, 3, 4),)]
    assert len(entry.program) < len(plan._general)  # the shape layers no longer run


def test_fast_math_fuses_silu_on_request():
    c = Case()
    x = c.input("x", (4, 16))
    c.output(_silu_chain(c, x))
    xv = rand(4, 16)
    exact = reference.compile(c.nw)
    fast = reference.compile(c.nw, fast_math=True)
    assert exact.describe()["fused"] == 0 and fast.describe()["fused"] == 1
    assert_close(fast({"x": xv})["y"], exact({"x": xv})["y"], rtol=1e-6)


@pytest.fixture(scope="module")
def yolov5n():
    """yolov5n at 64 (random weights): convolutions, batch norms, SiLU, C3, SPPF, upsampling, concatenations,
    the decode -- the plan's optimizations all at work on a real network."""
    import wts
    from netdefs import sources
    from netdefs.yolov5 import config, decode
    from trtx.net import Net

    model = sources.build_model("yolov5:yolov5n", seed=0)
    weights = wts.WeightMap(sources.state_dict_for_wts(model, "yolov5:yolov5n"))
    net = Net(weights)
    decode.define(net, config.configure(argparse.Namespace(command="check", imgsz="64"), weights))
    return model, net


def test_yolov5n_plan_is_bit_identical_to_the_plain_executor(yolov5n):
    model, net = yolov5n
    plan, plain = reference.compile(net), reference.compile(net, optimize=False)
    assert plan.describe()["capturable"]  # on CUDA it would become one graph per input shape
    for batch in (2, 1, 2):
        x = torch.rand(batch, 3, 64, 64)
        got, want = plan({"images": x}), plain({"images": x})
        for name in want:
            same(got[name], want[name], what=name)
    with torch.no_grad():
        pred = model(x)[0]
    assert_close(got["boxes"], pred[..., :4], rtol=1e-4, atol=1e-3)


# ---- CUDA ---------------------------------------------------------------------------------------


@gpu
def test_cuda_graph_captured_then_replayed(yolov5n):
    """The second call for an input shape captures, later calls replay: outputs follow the feed values, a new
    shape gets its own graph, the cache keeps ``cache_size`` of them."""
    _, net = yolov5n
    plan = reference.compile(net, "cuda", cache_size=2)
    eager = reference.compile(net, "cuda", cuda_graphs=False)
    assert plan.describe()["capturable"]
    for batch in (1, 1, 1, 2, 2, 3, 3):
        x = torch.rand(batch, 3, 64, 64, device="cuda")
        got, want = plan({"images": x}), eager({"images": x})
        for name in want:
            same(got[name], want[name], exact=False, what=name)
    assert plan.describe()["graphs"] == 2 and plan.describe()["input_shapes_cached"] == 2


@gpu
def test_cuda_capture_failure_falls_back_to_eager():
    """A gather checks its (fed, so not folded) indices on the host: the capture fails, that input shape runs
    eagerly from then on, and every call still gives the right answer."""
    c = Case()
    x, idx = c.input("x", (8,)), c.input("idx", (3,), np.int32)
    c.output(c.nw.add_gather(x, idx, 0))
    plan = reference.compile(c.nw, "cuda")
    assert plan.describe()["capturable"]  # nothing tells in advance
    xv = rand(8)
    for i in ([1, 3, 5], [0, 0, 7], [2, 6, 4], [7, 1, 1]):
        assert_close(plan({"x": xv, "idx": np.array(i, np.int32)})["y"], xv[i])
    assert plan.describe()["graphs"] == 0
    assert plan._entries[((8,), (3,))].graph_failed


@gpu
def test_cuda_fast_math_is_the_default_and_within_tolerance():
    c = Case()
    x = c.input("x", (64, 256))
    c.output(_silu_chain(c, x))
    plan = reference.compile(c.nw, "cuda")
    assert plan.describe()["fused"] == 1
    xv = rand(64, 256)
    assert_close(plan({"x": xv})["y"].cpu(), reference.compile(c.nw)({"x": xv})["y"], rtol=1e-6)
