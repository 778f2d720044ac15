"""execute(): feeds, keep, dynamic batch, scheduling and the errors it raises instead of guessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from refcase import DEVICES, Case, assert_close, rand, t

from trtx.reference import NotImplementedInReference, ReferenceExecutionError, execute

pytestmark = pytest.mark.parametrize("device", DEVICES)


def _small_net():
    c = Case()
    x = c.input("x", (-1, 3))
    relu = c.nw.add_activation(x, c.trt.ActivationType.RELU)
    relu.name = "relu"
    relu.get_output(0).name = "relu_out"
    neg = c.nw.add_unary(relu.get_output(0), c.trt.UnaryOperation.NEG)
    neg.get_output(0).name = "neg_out"
    c.output(neg, "y")
    return c


def test_keep_returns_intermediates(device):
    c = _small_net()
    xv = rand(4, 3)
    out = c.run({"x": xv}, device, keep=["relu_out"])
    assert list(out) == ["y", "relu_out"]
    assert_close(out["relu_out"], torch.relu(t(xv, device)))
    assert all(v.device.type == device for v in out.values())
    everything = execute(c.net, {"x": torch.from_numpy(xv)}, device=device, keep="all")  # a Net and a torch feed
    assert list(everything) == ["x", "relu_out", "y"]  # c.output renamed neg_out to y


def test_dynamic_batch_sizes(device):
    c = _small_net()
    for batch in (1, 2, 7):
        xv = rand(batch, 3)
        assert_close(c.run({"x": xv}, device, build=batch == 1)["y"], -torch.relu(t(xv, device)))


def test_unknown_keep_and_bad_feeds_are_errors(device):
    c = _small_net()
    with pytest.raises(ReferenceExecutionError, match="does not have"):
        execute(c.nw, {"x": rand(1, 3)}, device=device, keep=["nope"])
    with pytest.raises(ReferenceExecutionError, match="missing \\['x'\\]"):
        execute(c.nw, {}, device=device)
    with pytest.raises(ReferenceExecutionError, match="unknown \\['z'\\]"):
        execute(c.nw, {"x": rand(1, 3), "z": rand(1)}, device=device)
    with pytest.raises(ReferenceExecutionError, match="shape \\(2, 4\\)"):
        execute(c.nw, {"x": rand(2, 4)}, device=device)
    with pytest.raises(ReferenceExecutionError, match="dtype"):
        execute(c.nw, {"x": np.ones((1, 3), np.int32)}, device=device)


def test_unimplemented_attribute_names_layer_type_and_value(device):
    c = Case()
    x = c.input("x", (2, 3))
    fill = c.nw.add_fill((2, 3), c.trt.FillOperation.RANDOM_UNIFORM, c.trt.float32)
    fill.name = "noise"
    c.output(c.nw.add_elementwise(x, fill.get_output(0), c.trt.ElementWiseOperation.SUM))
    with pytest.raises(NotImplementedInReference, match=r"layer 'noise' \(FILL\): operation=RANDOM_UNIFORM"):
        c.run({"x": rand(2, 3)}, device)


def test_unimplemented_layer_type_is_named(device):
    """DYNAMIC_QUANTIZE is refused (docs/reference.md says why) by name, when the plan is compiled."""
    c = Case()
    x = c.input("x", (2, 32))
    dq = c.nw.add_dynamic_quantize(x, 1, 16, c.trt.fp4, c.trt.fp8)
    dq.set_input(1, c.const(np.array(1.0, np.float32)))
    dq.name = "nvfp4"
    c.output(c.nw.add_dequantize(dq.get_output(0), dq.get_output(1), c.trt.float32))
    c.build({})  # the builder takes it
    with pytest.raises(NotImplementedInReference, match=r"layer 'nvfp4' \(DYNAMIC_QUANTIZE\): layer type"):
        execute(c.nw, {"x": rand(2, 32)}, device=device)


def test_layers_run_in_dependency_order(device):
    """set_input may wire a layer to a tensor produced by a layer added later."""
    c = Case()
    x = c.input("x", (2, 2))
    add = c.nw.add_elementwise(x, x, c.trt.ElementWiseOperation.SUM)
    later = c.nw.add_unary(x, c.trt.UnaryOperation.EXP)
    add.set_input(1, later.get_output(0))
    c.output(add)
    xv = rand(2, 2)
    assert_close(c.run({"x": xv}, device)["y"], t(xv, device) + torch.exp(t(xv, device)))


def test_only_needed_layers_run(device):
    """A dead branch with an unimplemented layer does not stop the outputs from being computed."""
    c = _small_net()
    c.nw.add_fill((2,), c.trt.FillOperation.RANDOM_NORMAL, c.trt.float32)  # unused
    xv = rand(1, 3)
    assert_close(execute(c.nw, {"x": xv}, device=device)["y"], -torch.relu(t(xv, device)))
    with pytest.raises(NotImplementedInReference, match="RANDOM_NORMAL"):
        execute(c.nw, {"x": xv}, device=device, keep="all")


def test_every_layer_type_is_implemented_or_refused_with_a_reason(device):
    """The backend's LayerType members are all covered: run by an op or a loop/conditional region, or refused by
    name (with the reason in the error and in docs/reference.md)."""
    from pathlib import Path

    from trtx.reference import REFUSED, implemented_kinds
    from trtx_base import backend

    kinds = {m for m in dir(backend.trt.LayerType) if m.isupper()}
    assert kinds - set(implemented_kinds()) <= set(REFUSED), sorted(kinds - set(implemented_kinds()) - set(REFUSED))
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reference.md").read_text()
    refused = doc[doc.index("## Refused layer types") :]
    for kind in REFUSED:
        assert f"**{kind}**" in refused, kind
