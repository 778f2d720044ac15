"""Conformance: loops (trip limits, recurrences, iterators, loop outputs) and conditionals.

docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-with-loops.html and
work-with-conditionals.html; the expected values are numpy/torch computations of the same recurrences, and an
LSTM written with a loop is checked against torch.nn.LSTM.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from refcase import DEVICES, Case, assert_close, rand, t

from trtx.reference import ReferenceExecutionError, compile

pytestmark = pytest.mark.parametrize("device", DEVICES)


def _i32(value) -> np.ndarray:
    return np.array(value, np.int32)


def _running_sum(c: Case, x, steps: int, reverse: bool = False, axis: int = 0):
    """A counted loop over ``x`` along ``axis``: rec = 0; each iteration rec += x[i]."""
    E = c.trt.ElementWiseOperation
    loop = c.nw.add_loop()
    loop.add_trip_limit(c.const(_i32(steps)), c.trt.TripLimit.COUNT)
    it = loop.add_iterator(x, axis, reverse)
    zeros = np.zeros(tuple(d for i, d in enumerate(x.shape) if i != axis), np.float32)
    rec = loop.add_recurrence(c.const(zeros))
    total = c.nw.add_elementwise(rec.get_output(0), it.get_output(0), E.SUM).get_output(0)
    rec.set_input(1, total)
    return loop, rec, total


@pytest.mark.parametrize("reverse", [False, True])
def test_loop_counted_outputs(device, reverse):
    """LAST_VALUE is the recurrence after the last iteration; CONCATENATE stacks each iteration's value along the
    new axis, REVERSE in reverse order; a reverse iterator reads x[M - 1 - i]."""
    c = Case()
    x = c.input("x", (4, 3))
    loop, rec, total = _running_sum(c, x, 4, reverse=reverse)
    c.output(loop.add_loop_output(rec.get_output(0), c.trt.LoopOutput.LAST_VALUE), "last")
    for name, kind, axis in (("cat0", "CONCATENATE", 0), ("cat1", "CONCATENATE", 1), ("rev", "REVERSE", 0)):
        out = loop.add_loop_output(total, getattr(c.trt.LoopOutput, kind), axis)
        out.set_input(1, c.const(_i32(4)))
        c.output(out, name)
    xv = rand(4, 3)
    out = c.run({"x": xv}, device)
    sums = np.cumsum(xv[::-1] if reverse else xv, axis=0)
    assert_close(out["last"], sums[-1])
    assert_close(out["cat0"], sums)
    assert_close(out["cat1"], sums.T)
    assert_close(out["rev"], sums[::-1].copy())


def test_loop_hand_case(device):
    """The guide's counted loop: 1 + 2 + 3 + 4 over an iterator on axis 1 of [[1 2 3 4]]."""
    c = Case()
    x = c.input("x", (1, 4))
    loop, rec, _ = _running_sum(c, x, 4, axis=1)
    c.output(loop.add_loop_output(rec.get_output(0), c.trt.LoopOutput.LAST_VALUE))
    y = c.run({"x": np.array([[1, 2, 3, 4]], np.float32)}, device)["y"]
    assert y.tolist() == [10.0]


def _counter_loop(c: Case, limit, count: int | None):
    """i = 0, p = 1; while i < limit [and at most count times]: i += 1, p *= 2."""
    E = c.trt.ElementWiseOperation
    loop = c.nw.add_loop()
    i = loop.add_recurrence(c.const(_i32([0])))
    p = loop.add_recurrence(c.const(np.ones(1, np.float32)))
    going = c.nw.add_elementwise(i.get_output(0), limit, E.LESS).get_output(0)
    scalar = c.nw.add_shuffle(going)
    scalar.reshape_dims = ()
    loop.add_trip_limit(scalar.get_output(0), c.trt.TripLimit.WHILE)
    if count is not None:
        loop.add_trip_limit(c.const(_i32(count)), c.trt.TripLimit.COUNT)
    i.set_input(1, c.nw.add_elementwise(i.get_output(0), c.const(_i32([1])), E.SUM).get_output(0))
    p.set_input(1, c.nw.add_elementwise(p.get_output(0), c.const(np.full(1, 2, np.float32)), E.PROD).get_output(0))
    c.output(loop.add_loop_output(i.get_output(0), c.trt.LoopOutput.LAST_VALUE), "i")
    c.output(loop.add_loop_output(p.get_output(0), c.trt.LoopOutput.LAST_VALUE), "p")
    stack = loop.add_loop_output(p.get_output(0), c.trt.LoopOutput.CONCATENATE, 0)
    stack.set_input(1, c.const(_i32(8)))
    c.output(stack, "stack")


@pytest.mark.parametrize("limit,count,runs", [(5, None, 5), (0, None, 0), (6, 3, 3), (2, 7, 2)])
def test_loop_while_and_count(device, limit, count, runs):
    """WHILE is checked before every iteration; with a COUNT limit too, the first to stop wins. CONCATENATE's
    slots beyond the iterations run are zero here (TensorRT: undefined)."""
    c = Case()
    n = c.input("n", (1,), np.int32)
    _counter_loop(c, n, count)
    out = c.run({"n": _i32([limit])}, device)
    assert out["i"].tolist() == [runs] and out["p"].tolist() == [2.0**runs]
    assert out["stack"][:runs].reshape(-1).tolist() == [2.0**k for k in range(runs)]
    assert not bool(out["stack"][runs:].any())


def test_loop_lstm_matches_torch(device):
    """An LSTM layer as TensorRT's sampleCharRNN writes it (gates = W·x + R·h + b; c = f·c + i·g; h = o·tanh(c))
    against torch.nn.LSTM: the sequence of h (CONCATENATE) and the last h and c (LAST_VALUE)."""
    seq, batch, inp, hidden = 5, 2, 3, 4
    torch.manual_seed(int(np.random.default_rng().integers(1 << 30)))
    lstm = torch.nn.LSTM(inp, hidden).eval()
    c = Case()
    E, A, M = c.trt.ElementWiseOperation, c.trt.ActivationType, c.trt.MatrixOperation
    x = c.input("x", (seq, batch, inp))
    w_ih = c.const(lstm.weight_ih_l0.detach().numpy())  # [4h, in], gates i f g o
    w_hh = c.const(lstm.weight_hh_l0.detach().numpy())
    bias = c.const((lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy().reshape(1, 4 * hidden))
    loop = c.nw.add_loop()
    loop.add_trip_limit(c.const(_i32(seq)), c.trt.TripLimit.COUNT)
    xt = loop.add_iterator(x, 0, False).get_output(0)  # [batch, in]
    h = loop.add_recurrence(c.const(np.zeros((batch, hidden), np.float32)))
    cell = loop.add_recurrence(c.const(np.zeros((batch, hidden), np.float32)))
    gates = c.nw.add_elementwise(
        c.nw.add_matrix_multiply(xt, M.NONE, w_ih, M.TRANSPOSE).get_output(0),
        c.nw.add_matrix_multiply(h.get_output(0), M.NONE, w_hh, M.TRANSPOSE).get_output(0),
        E.SUM,
    ).get_output(0)
    gates = c.nw.add_elementwise(gates, bias, E.SUM).get_output(0)

    def gate(k: int, act):
        part = c.nw.add_slice(gates, (0, k * hidden), (batch, hidden), (1, 1)).get_output(0)
        return c.nw.add_activation(part, act).get_output(0)

    i, f, g, o = gate(0, A.SIGMOID), gate(1, A.SIGMOID), gate(2, A.TANH), gate(3, A.SIGMOID)
    c_next = c.nw.add_elementwise(
        c.nw.add_elementwise(f, cell.get_output(0), E.PROD).get_output(0),
        c.nw.add_elementwise(i, g, E.PROD).get_output(0),
        E.SUM,
    ).get_output(0)
    h_next = c.nw.add_elementwise(o, c.nw.add_activation(c_next, A.TANH).get_output(0), E.PROD).get_output(0)
    h.set_input(1, h_next)
    cell.set_input(1, c_next)
    seq_out = loop.add_loop_output(h_next, c.trt.LoopOutput.CONCATENATE, 0)
    seq_out.set_input(1, c.const(_i32(seq)))
    c.output(seq_out, "y")
    c.output(loop.add_loop_output(h.get_output(0), c.trt.LoopOutput.LAST_VALUE), "h")
    c.output(loop.add_loop_output(cell.get_output(0), c.trt.LoopOutput.LAST_VALUE), "c")
    xv = rand(seq, batch, inp)
    out = c.run({"x": xv}, device)
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # cuDNN's LSTM: no TF32
        y, (hn, cn) = lstm.to(device)(t(xv, device))
    # cuDNN's LSTM sums its products in another order than the loop's matmuls: on CUDA, 1e-4 of the output scale
    tol = {} if device == "cpu" else {"rtol": 1e-4, "atol": 1e-4 * max(float(y.abs().max()), 1.0)}
    assert_close(out["y"], y, **tol)
    assert_close(out["h"], hn[0], **tol)
    assert_close(out["c"], cn[0], **tol)


def test_nested_loops(device):
    """An outer loop over rows whose body is an inner loop over the row's elements: the total of a matrix."""
    c = Case()
    E = c.trt.ElementWiseOperation
    x = c.input("x", (3, 4))
    outer = c.nw.add_loop()
    outer.add_trip_limit(c.const(_i32(3)), c.trt.TripLimit.COUNT)
    row = outer.add_iterator(x, 0, False).get_output(0)  # [4]
    acc = outer.add_recurrence(c.const(np.zeros((), np.float32)))
    inner = c.nw.add_loop()
    inner.add_trip_limit(c.const(_i32(4)), c.trt.TripLimit.COUNT)
    v = inner.add_iterator(row, 0, False).get_output(0)  # scalar
    racc = inner.add_recurrence(acc.get_output(0))  # the inner sum starts from the outer accumulator
    racc.set_input(1, c.nw.add_elementwise(racc.get_output(0), v, E.SUM).get_output(0))
    row_total = inner.add_loop_output(racc.get_output(0), c.trt.LoopOutput.LAST_VALUE).get_output(0)
    acc.set_input(1, row_total)
    c.output(outer.add_loop_output(acc.get_output(0), c.trt.LoopOutput.LAST_VALUE), "total")
    per_row = outer.add_loop_output(row_total, c.trt.LoopOutput.CONCATENATE, 0)
    per_row.set_input(1, c.const(_i32(3)))
    c.output(per_row, "partial")
    xv = rand(3, 4)
    out = c.run({"x": xv}, device)
    assert_close(out["total"], xv.sum(dtype=np.float64), rtol=1e-5)
    assert_close(out["partial"], np.cumsum(xv.sum(1, dtype=np.float64)), rtol=1e-5)


def test_iterating_past_the_end_is_an_error(device):
    c = Case()
    x = c.input("x", (3, 2))
    loop, rec, _ = _running_sum(c, x, 5)
    c.output(loop.add_loop_output(rec.get_output(0), c.trt.LoopOutput.LAST_VALUE))
    with pytest.raises(ReferenceExecutionError, match="iteration 3 reads slice 3 of axis 0, which has 3"):
        c.run({"x": rand(3, 2)}, device, build=False)


def test_loop_keep_all_returns_last_iteration(device):
    """check asks for every tensor: those inside a loop hold their last iteration's values."""
    c = Case()
    x = c.input("x", (4, 3))
    loop, rec, total = _running_sum(c, x, 4)
    total.name = "total"
    c.output(loop.add_loop_output(rec.get_output(0), c.trt.LoopOutput.LAST_VALUE))
    xv = rand(4, 3)
    out = compile(c.nw, device, keep="all")({"x": xv})
    assert_close(out["total"], xv.sum(0))
    assert_close(out["y"], xv.sum(0))
    assert_close(compile(c.nw, device, keep=["total"])({"x": xv})["total"], xv.sum(0))  # kept by name too


def _conditional(c: Case, x, cond):
    """if cond: exp(x) + 1 else: -x; a second output: x itself (through an identity) or -x."""
    U, E = c.trt.UnaryOperation, c.trt.ElementWiseOperation
    ifc = c.nw.add_if_conditional()
    ifc.set_condition(cond)
    xin = ifc.add_input(x).get_output(0)
    then = c.nw.add_elementwise(
        c.nw.add_unary(xin, U.EXP).get_output(0), c.const(np.ones((1,) * len(x.shape), np.float32)), E.SUM
    ).get_output(0)
    other = c.nw.add_unary(xin, U.NEG).get_output(0)
    # RTX's builder refuses a conditional input as an output, and one tensor as the else side of two outputs
    same = c.nw.add_identity(xin).get_output(0)
    other2 = c.nw.add_unary(xin, U.NEG).get_output(0)
    return ifc.add_output(then, other), ifc.add_output(same, other2)


@pytest.mark.parametrize("taken", [True, False])
def test_conditional(device, taken):
    c = Case()
    x = c.input("x", (2, 3))
    cond = c.input("c", (), np.bool_)
    first, second = _conditional(c, x, cond)
    c.output(first, "y")
    c.output(second, "z")
    xv = rand(2, 3)
    out = c.run({"x": xv, "c": np.array(taken)}, device)
    assert_close(out["y"], np.exp(xv) + 1 if taken else -xv)
    assert_close(out["z"], xv if taken else -xv)


def test_conditional_runs_only_the_taken_branch(device):
    """A gather whose indices are out of range in the else branch: only an else run fails."""
    c = Case()
    x = c.input("x", (4,))
    cond = c.input("c", (), np.bool_)
    ifc = c.nw.add_if_conditional()
    ifc.set_condition(cond)
    xin = ifc.add_input(x).get_output(0)
    bad = c.nw.add_gather(xin, c.const(_i32([9])), 0)
    bad.name = "bad_gather"
    ok = c.nw.add_gather(xin, c.const(_i32([2])), 0)
    c.output(ifc.add_output(ok.get_output(0), bad.get_output(0)))
    xv = rand(4)
    assert_close(c.run({"x": xv, "c": np.array(True)}, device, build=False)["y"], xv[2:3])
    with pytest.raises(ReferenceExecutionError, match="bad_gather"):
        compile(c.nw, device)({"x": xv, "c": np.array(False)})


def test_conditional_inside_loop(device):
    """Per iteration, the iterator's element decides: add it if positive, else subtract 1 (a clipped sum)."""
    c = Case()
    E = c.trt.ElementWiseOperation
    x = c.input("x", (6,))
    loop = c.nw.add_loop()
    loop.add_trip_limit(c.const(_i32(6)), c.trt.TripLimit.COUNT)
    v = loop.add_iterator(x, 0, False).get_output(0)
    acc = loop.add_recurrence(c.const(np.zeros((), np.float32)))
    positive = c.nw.add_elementwise(v, c.const(np.zeros((), np.float32)), E.GREATER).get_output(0)
    ifc = c.nw.add_if_conditional()
    ifc.set_condition(positive)
    a = ifc.add_input(acc.get_output(0)).get_output(0)
    vin = ifc.add_input(v).get_output(0)
    added = c.nw.add_elementwise(a, vin, E.SUM).get_output(0)
    less = c.nw.add_elementwise(a, c.const(np.ones((), np.float32)), E.SUB).get_output(0)
    acc.set_input(1, ifc.add_output(added, less).get_output(0))
    c.output(loop.add_loop_output(acc.get_output(0), c.trt.LoopOutput.LAST_VALUE))
    xv = rand(6)
    expected = sum(float(v) if v > 0 else -1.0 for v in xv)
    assert_close(c.run({"x": xv}, device)["y"], np.float32(expected), rtol=1e-5)
