"""Conformance: MatrixMultiply, Einsum, SoftMax, Reduce, TopK, Normalization, Cumulative.

docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/{MatrixMultiply,Einsum,SoftMax,Reduce,TopK,
Normalization,Cumulative}.html.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from refcase import DEVICES, Case, assert_close, rand, t

pytestmark = pytest.mark.parametrize("device", DEVICES)


@pytest.mark.parametrize(
    "op0,op1,sa,sb",
    [
        ("NONE", "NONE", (2, 3, 4), (2, 4, 5)),
        ("TRANSPOSE", "NONE", (2, 4, 3), (1, 4, 5)),  # batch dim broadcast
        ("NONE", "TRANSPOSE", (3, 4), (5, 4)),
        ("TRANSPOSE", "TRANSPOSE", (1, 4, 3), (2, 5, 4)),
        ("VECTOR", "NONE", (2, 4), (2, 4, 5)),  # batch of vectors x batch of matrices
        ("NONE", "VECTOR", (2, 3, 4), (2, 4)),
        ("VECTOR", "VECTOR", (3, 4), (3, 4)),  # batched dot products
    ],
)
def test_matrix_multiply(device, op0, op1, sa, sb):
    c = Case()
    a, b = c.input("a", sa), c.input("b", sb)
    M = c.trt.MatrixOperation
    c.output(c.nw.add_matrix_multiply(a, getattr(M, op0), b, getattr(M, op1)))
    av, bv = rand(*sa), rand(*sb)
    y = c.run({"a": av, "b": bv}, device)["y"]
    ta, tb = t(av, device), t(bv, device)
    if op0 == "TRANSPOSE":
        ta = ta.transpose(-1, -2)
    if op1 == "TRANSPOSE":
        tb = tb.transpose(-1, -2)
    if op0 == "VECTOR" and op1 == "VECTOR":
        expected = (ta * tb).sum(-1)
    elif op0 == "VECTOR":
        expected = torch.einsum("bk,bkn->bn", ta, tb)
    elif op1 == "VECTOR":
        expected = torch.einsum("bmk,bk->bm", ta, tb)
    else:
        expected = ta @ tb
    assert_close(y, expected)


def test_matrix_multiply_hand_case(device):
    """MatrixMultiply.html: C = A·B on [[1 2],[3 4]] · [[5 6],[7 8]]."""
    c = Case()
    a = c.input("a", (2, 2))
    b = c.const(np.array([[5, 6], [7, 8]], np.float32))
    c.output(c.nw.add_matrix_multiply(a, c.trt.MatrixOperation.NONE, b, c.trt.MatrixOperation.NONE))
    y = c.run({"a": np.array([[1, 2], [3, 4]], np.float32)}, device)["y"]
    assert y.tolist() == [[19, 22], [43, 50]]


def test_einsum(device):
    c = Case()
    a, b = c.input("a", (2, 3, 4)), c.input("b", (2, 4, 5))
    c.output(c.nw.add_einsum([a, b], "bij,bjk->bik"))
    av, bv = rand(2, 3, 4), rand(2, 4, 5)
    y = c.run({"a": av, "b": bv}, device)["y"]
    assert_close(y, torch.einsum("bij,bjk->bik", t(av, device), t(bv, device)))


@pytest.mark.parametrize("axis", [0, 1, 3])
def test_softmax_axes_bitmask(device, axis):
    c = Case()
    x = c.input("x", (2, 3, 4, 5))
    layer = c.nw.add_softmax(x)
    layer.axes = 1 << axis
    c.output(layer)
    xv = rand(2, 3, 4, 5, low=-5, high=5)
    y = c.run({"x": xv}, device)["y"]
    assert_close(y, torch.softmax(t(xv, device), axis))


@pytest.mark.parametrize("op", ["SUM", "PROD", "MAX", "MIN", "AVG"])
@pytest.mark.parametrize("keep", [True, False])
def test_reduce(device, op, keep):
    c = Case()
    x = c.input("x", (2, 3, 4, 5))
    c.output(c.nw.add_reduce(x, getattr(c.trt.ReduceOperation, op), 0b1010, keep))  # axes 1 and 3
    xv = rand(2, 3, 4, 5, low=0.5, high=1.5)
    y = c.run({"x": xv}, device)["y"]
    tx = t(xv, device)
    expected = {
        "SUM": lambda: tx.sum((1, 3), keepdim=keep),
        "PROD": lambda: tx.prod(3, keepdim=True).prod(1, keepdim=True) if keep else tx.prod(3).prod(1),
        "MAX": lambda: tx.amax((1, 3), keepdim=keep),
        "MIN": lambda: tx.amin((1, 3), keepdim=keep),
        "AVG": lambda: tx.mean((1, 3), keepdim=keep),
    }[op]()
    assert_close(y, expected)


@pytest.mark.parametrize("op", ["MAX", "MIN"])
def test_topk(device, op):
    c = Case()
    x = c.input("x", (2, 3, 7))
    layer = c.nw.add_topk(x, getattr(c.trt.TopKOperation, op), 3, 1 << 2)
    c.output(layer.get_output(0), "values")
    c.output(layer.get_output(1), "indices")
    xv = rand(2, 3, 7)
    out = c.run({"x": xv}, device)
    values, indices = torch.topk(t(xv, device), 3, dim=2, largest=op == "MAX")
    assert torch.equal(out["values"], values)
    assert out["indices"].dtype == torch.int32 and torch.equal(out["indices"].long(), indices)


def test_topk_hand_case(device):
    """TopK.html: the k largest along the axis, in decreasing order, with their indices."""
    c = Case()
    x = c.input("x", (1, 5))
    layer = c.nw.add_topk(x, c.trt.TopKOperation.MAX, 2, 1 << 1)
    c.output(layer.get_output(0), "values")
    c.output(layer.get_output(1), "indices")
    out = c.run({"x": np.array([[-1, 5, 3, 8, 0]], np.float32)}, device)
    assert out["values"].tolist() == [[8, 5]] and out["indices"].tolist() == [[3, 1]]


@pytest.mark.parametrize("op", ["MAX", "MIN"])
def test_topk_one_takes_the_first_of_equal_values(device, op):
    """k = 1 (a class argmax): the extreme value and, among equal ones, the first index (as torch.max/argmax)."""
    c = Case()
    x = c.input("x", (3, 6))
    layer = c.nw.add_topk(x, getattr(c.trt.TopKOperation, op), 1, 1 << 1)
    c.output(layer.get_output(0), "values")
    c.output(layer.get_output(1), "indices")
    xv = np.array([[1, 4, 4, 0, 4, 2], [7, 7, 7, 7, 7, 7], [-1, -3, 5, -3, 0, -3]], np.float32)
    out = c.run({"x": xv}, device)
    pick = np.argmax if op == "MAX" else np.argmin
    assert out["indices"].reshape(-1).tolist() == pick(xv, axis=1).tolist()
    assert out["values"].reshape(-1).tolist() == (xv.max(1) if op == "MAX" else xv.min(1)).tolist()


def test_gather_of_evenly_spaced_constant_indices(device):
    """Constant indices 1, 3, 5 (a strided view) and 0..3 (a slice) gather the same as any others."""
    c = Case()
    x = c.input("x", (2, 3, 8))
    c.output(c.nw.add_gather(x, c.const(np.array([1, 3, 5], np.int32)), 2), "odd")
    c.output(c.nw.add_gather(x, c.const(np.array([[0, 1], [2, 3]], np.int32)), 2), "block")
    c.output(c.nw.add_gather(x, c.const(np.array([2, 0, 1], np.int32)), 1), "shuffled")
    xv = rand(2, 3, 8)
    out = c.run({"x": xv}, device)
    assert np.array_equal(out["odd"].cpu().numpy(), xv[:, :, [1, 3, 5]])
    assert np.array_equal(out["block"].cpu().numpy(), xv[:, :, [[0, 1], [2, 3]]])
    assert np.array_equal(out["shuffled"].cpu().numpy(), xv[:, [2, 0, 1]])


def test_layer_normalization(device):
    """Normalization.html: Y = (X - Mean(X, axes)) / sqrt(Var(X, axes) + eps) · S + B over the last axis."""
    c = Case()
    x = c.input("x", (2, 5, 8))
    s, b = rand(1, 1, 8), rand(1, 1, 8)
    layer = c.nw.add_normalization(x, c.const(s), c.const(b), 1 << 2)
    layer.epsilon = 1e-5
    c.output(layer)
    xv = rand(2, 5, 8)
    y = c.run({"x": xv}, device)["y"]
    expected = F.layer_norm(t(xv), (8,), t(s.reshape(8)), t(b.reshape(8)), eps=1e-5)
    assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_instance_normalization(device):
    c = Case()
    x = c.input("x", (2, 3, 4, 5))
    s, b = rand(1, 3, 1, 1), rand(1, 3, 1, 1)
    layer = c.nw.add_normalization(x, c.const(s), c.const(b), 0b1100)
    c.output(layer)
    xv = rand(2, 3, 4, 5)
    y = c.run({"x": xv}, device)["y"]
    expected = F.instance_norm(t(xv), weight=t(s.reshape(3)), bias=t(b.reshape(3)), eps=1e-5)
    assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_group_normalization_per_group_and_per_channel_scale(device):
    """add_normalization: S, B are [1, G, 1, 1]; add_normalization_v2: [1, C, 1, 1] (as torch's GroupNorm)."""
    for v2 in (False, True):
        c = Case()
        x = c.input("x", (2, 6, 3, 4))
        shape = (1, 6, 1, 1) if v2 else (1, 3, 1, 1)
        s, b = rand(*shape), rand(*shape)
        add = c.nw.add_normalization_v2 if v2 else c.nw.add_normalization
        layer = add(x, c.const(s), c.const(b), 0b1100)
        layer.num_groups = 3
        c.output(layer)
        xv = rand(2, 6, 3, 4)
        y = c.run({"x": xv}, device)["y"]
        s6 = s.reshape(-1) if v2 else np.repeat(s.reshape(-1), 2)
        b6 = b.reshape(-1) if v2 else np.repeat(b.reshape(-1), 2)
        expected = F.group_norm(t(xv), 3, t(s6), t(b6), eps=1e-5)
        assert_close(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_cumulative(device, exclusive, reverse):
    """Cumulative.html on [1 2 3 4]: inclusive [1 3 6 10], exclusive [0 1 3 6]; reverse scans from the end."""
    c = Case()
    x = c.input("x", (2, 4))
    layer = c.nw.add_cumulative(x, c.const(np.array(1, np.int32)), c.trt.CumulativeOperation.SUM, exclusive, reverse)
    c.output(layer)
    y = c.run({"x": np.array([[1, 2, 3, 4], [1, 1, 1, 1]], np.float32)}, device)["y"]
    expected = {
        (False, False): [[1, 3, 6, 10], [1, 2, 3, 4]],
        (True, False): [[0, 1, 3, 6], [0, 1, 2, 3]],
        (False, True): [[10, 9, 7, 4], [4, 3, 2, 1]],
        (True, True): [[9, 7, 4, 0], [3, 2, 1, 0]],
    }[(exclusive, reverse)]
    assert y.tolist() == expected


def test_ragged_softmax_hand_case(device):
    """RaggedSoftMax.html: rows of 5 with bounds 5 and 3; past the bound the output is 0."""
    c = Case()
    x = c.input("x", (1, 2, 5))
    bounds = c.input("bounds", (1, 2, 1), np.int32)
    c.output(c.nw.add_ragged_softmax(x, bounds))
    xv = np.array([[[1.0, 1.0, 1.0, 1.0, 0.5], [3.0, 4.0, -20.0, 10.0, 5.0]]], np.float32)
    y = c.run({"x": xv, "bounds": np.array([[[5], [3]]], np.int32)}, device)["y"]
    expected = [[[0.21, 0.21, 0.21, 0.21, 0.13], [0.26, 0.73, 0.01, 0.0, 0.0]]]
    # the page shows two digits, cut rather than rounded (0.2689 as 0.26), and e^-20 / Σ as 0.01
    torch.testing.assert_close(y.cpu(), torch.tensor(expected), rtol=0, atol=0.0101)
    assert y[0, 1, 3:].tolist() == [0.0, 0.0]
    assert_close(y[0, 1, :3], torch.softmax(torch.tensor([3.0, 4.0, -20.0]), 0))


def test_ragged_softmax_random_bounds(device):
    c = Case()
    x = c.input("x", (3, 4, 6))
    bounds = c.input("bounds", (3, 4, 1), np.int32)
    c.output(c.nw.add_ragged_softmax(x, bounds))
    xv = rand(3, 4, 6, low=-5, high=5)
    bv = np.random.default_rng().integers(1, 7, size=(3, 4, 1)).astype(np.int32)
    y = c.run({"x": xv, "bounds": bv}, device)["y"]
    expected = np.zeros_like(xv)
    for idx in np.ndindex(3, 4):
        n = int(bv[idx][0])
        e = np.exp(xv[idx][:n] - xv[idx][:n].max())
        expected[idx][:n] = e / e.sum()
    assert_close(y, expected)
