"""``inspect``: the layer table, totals against hand counts, and the Graphviz picture."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from trtx import inspect as tinspect
from trtx.graph import to_dot, write_graph
from trtx.net import Net


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def counted_net(precision: str = "fp32", batch: int = -1) -> Net:
    """conv, grouped conv, batch norm, deconv, global average, linear: each with a hand-countable size."""
    rng = np.random.default_rng(0)
    weights = {
        "c1.weight": _rand(rng, 8, 3, 3, 3),
        "c1.bias": _rand(rng, 8),
        "c2.weight": _rand(rng, 8, 2, 3, 3),  # groups=4: 8 in / 4 = 2 per group
        "bn.weight": _rand(rng, 8),
        "bn.bias": _rand(rng, 8),
        "bn.running_mean": _rand(rng, 8),
        "bn.running_var": np.abs(_rand(rng, 8)) + 0.5,
        "fc.weight": _rand(rng, 10, 4),
        "fc.bias": _rand(rng, 10),
    }
    net = Net(weights, precision=precision, name="counted")
    trt, nw = net.trt, net.network
    x = net.input("x", (batch, 3, 8, 8))
    x = net.conv(x, "c1", 3, padding=1).get_output(0)
    x = net.conv(x, "c2", 3, stride=2, padding=1, groups=4).get_output(0)
    x = net.batchnorm(x, "bn").get_output(0)
    up = nw.add_deconvolution_nd(x, 4, (2, 2), net.trt_weights(_rand(rng, 8, 4, 2, 2)), net.trt_weights(_rand(rng, 4)))
    up.stride_nd = (2, 2)
    x = net.name(up, "up").get_output(0)
    x = net.name(nw.add_reduce(x, trt.ReduceOperation.AVG, 0b1100, False), "gap").get_output(0)
    x = net.linear(x, "fc").get_output(0)
    net.output(x, "logits")
    return net


# hand counts for counted_net
C1_W, C1_MACS = 8 * 3 * 3 * 3 + 8, (8 * 8 * 8) * 3 * 9  # output 1x8x8x8, 3 in-channels x 3x3 each
C2_W, C2_MACS = 8 * 2 * 3 * 3, (8 * 4 * 4) * 2 * 9  # output 1x8x4x4, 8/4 in-channels per group
BN_W = 3 * 8  # shift, scale, power
UP_W, UP_MACS = 8 * 4 * 2 * 2 + 4, (8 * 4 * 4) * 4 * (2 * 2)  # every input value scatters 4 maps x 2x2
FC_W, FC_MACS = 10 * 4 + 10, 10 * 4


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_totals_match_hand_counts(precision):
    summary = tinspect.describe(counted_net(precision))
    by_name = {layer.name: layer for layer in summary.layers}
    assert by_name["c1"].weights == C1_W and by_name["c1"].macs == C1_MACS
    assert by_name["c2"].weights == C2_W and by_name["c2"].macs == C2_MACS
    assert by_name["bn"].weights == BN_W and by_name["bn"].macs is None
    assert by_name["up"].weights == UP_W and by_name["up"].macs == UP_MACS
    assert by_name["fc.weight"].weights == 40 and by_name["fc.bias"].weights == 10
    assert by_name["fc.matmul"].macs == FC_MACS
    assert summary.parameters == C1_W + C2_W + BN_W + UP_W + FC_W == 574
    assert summary.macs == C1_MACS + C2_MACS + UP_MACS + FC_MACS == 18216
    assert summary.macs_unknown == []
    expected_types = {"CONVOLUTION": 2, "CONSTANT": 2, "SCALE": 1, "DECONVOLUTION": 1, "REDUCE": 1}
    expected_types |= {"MATRIX_MULTIPLY": 1, "ELEMENTWISE": 1}
    if precision == "fp16":
        expected_types["CAST"] = 2  # input to fp16, output back to fp32
    assert summary.layers_by_type == dict(sorted(expected_types.items(), key=lambda kv: -kv[1])) or (
        summary.layers_by_type == expected_types
    )
    assert sum(summary.layers_by_type.values()) == len(summary.layers)


def test_macs_do_not_depend_on_a_fixed_batch():
    assert tinspect.describe(counted_net(batch=4)).macs == 4 * tinspect.describe(counted_net()).macs


def test_layer_rows_show_io_shapes_dtypes_and_attributes():
    summary = tinspect.describe(counted_net("fp16"))
    c2 = next(layer for layer in summary.layers if layer.name == "c2")
    assert c2.type == "CONVOLUTION" and c2.index == 2  # after the input cast
    assert c2.inputs[0].shape == (-1, 8, 8, 8) and c2.inputs[0].dtype == "float16"
    assert c2.outputs[0].shape == (-1, 8, 4, 4) and c2.outputs[0].dtype == "float16"
    assert c2.attributes["kernel"] == (3, 3) and c2.attributes["stride"] == (2, 2)
    assert c2.attributes["groups"] == 4
    assert [t.name for t in summary.inputs] == ["x"] and summary.outputs[0].dtype == "float32"
    table = summary.table()
    row = next(line for line in table.splitlines() if " c2 " in line)
    assert "CONVOLUTION" in row and "c1[-1x8x8x8 f16] -> [-1x8x4x4 f16]" in row
    assert "kernel=3x3" in row and "stride=2x2" in row and "groups=4" in row and "144" in row
    assert "parameters: 574" in table and "MACs:       18,216" in table


def test_json_is_strict_and_complete():
    doc = json.loads(json.dumps(tinspect.describe(counted_net()).to_json(), allow_nan=False))
    assert set(doc) == {"name", "inputs", "outputs", "layers", "totals"}
    assert doc["totals"]["parameters"] == 574 and doc["totals"]["macs"] == 18216
    conv = doc["layers"][0]
    assert {"index", "name", "type", "inputs", "outputs", "attributes", "weights", "macs"} <= set(conv)
    assert conv["attributes"]["kernel"] == [3, 3] and conv["attributes"]["padding_mode"] == "EXPLICIT_ROUND_DOWN"
    assert conv["outputs"][0] == {"name": "c1", "shape": [-1, 8, 8, 8], "dtype": "float32"}


def test_dynamic_spatial_dims_have_no_mac_estimate():
    net = Net({"c.weight": np.ones((4, 3, 1, 1), np.float32)}, name="dyn")
    net.output(
        net.conv(net.input("x", (1, 3, -1, -1), ranges={2: (8, 32, 64), 3: (8, 32, 64)}), "c", 1).get_output(0), "y"
    )
    summary = tinspect.describe(net)
    assert summary.layers[0].macs is None and summary.macs_unknown == ["c"]
    assert "no estimate for c" in summary.table()


# ---- the picture --------------------------------------------------------------------------------
def block_net() -> Net:
    """A small YOLO-style network: layers named like module paths model.0 ... model.4."""
    from netdefs.common import activation, concat, conv_bn_act, max_pool, upsample_nearest

    rng = np.random.default_rng(0)
    weights = {}

    def conv(x, path, c_out, k=3, s=1):
        c_in = int(x.shape[1])
        weights[f"{path}.conv.weight"] = _rand(rng, c_out, c_in, k, k)
        for p, v in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            weights[f"{path}.bn.{p}"] = np.full(c_out, v, np.float32)
        y = conv_bn_act(net, x, conv=f"{path}.conv", bn=f"{path}.bn", act=None, kernel=k, stride=s)
        return activation(net, y, "silu", f"{path}.act")

    net = Net(weights, name="tiny-yolo")
    x = net.input("images", (-1, 3, 64, 64))
    x0 = conv(x, "model.0", 16, 3, 2)
    x1 = conv(x0, "model.1", 32, 3, 2)
    a = conv(x1, "model.2.cv1", 16, 1)
    b = conv(a, "model.2.m.0.cv1", 16, 1)
    b = conv(b, "model.2.m.0.cv2", 16, 3)
    b = net.name(net.network.add_elementwise(a, b, net.trt.ElementWiseOperation.SUM), "model.2.m.0").get_output(0)
    c = conv(x1, "model.2.cv2", 16, 1)
    x2 = conv(concat(net, [b, c], "model.2.cat"), "model.2.cv3", 32, 1)
    x3 = max_pool(net, x2, "model.3", 5, 1, 2)
    x4 = upsample_nearest(net, x3, "model.4", 2.0)
    net.output(concat(net, [x4, x0], "model.5"), "features")
    return net


def test_dot_clusters_by_module_prefix_and_labels_type_name_shape():
    dot = to_dot(block_net())
    assert 'subgraph "cluster_model.2" {' in dot and 'label="model.2";' in dot
    assert 'subgraph "cluster_model.0" {' in dot
    assert "rankdir=TB" in dot
    # in cluster model.2 the label drops the prefix: type, short name, output shape
    assert 'label="Conv 1x1\\nm.0.cv1.conv\\n?×16×16×16"' in dot
    assert 'label="Conv 3x3/2\\nconv\\n?×16×32×32"' in dot  # model.0.conv
    assert 'label="Eltwise sum\\nm.0\\n?×16×16×16"' in dot
    assert 'label="input images\\n?×3×64×64"' in dot and 'label="output features' in dot
    edges = [line for line in dot.splitlines() if "->" in line]
    assert len(edges) >= 30


def test_blocks_view_collapses_each_cluster_into_one_node():
    dot = to_dot(block_net(), blocks=True)
    assert "subgraph" not in dot
    assert 'label="model.2\\n22 layers: Eltwise×6, Conv×5, Scale×5, …\\n?×32×16×16"' in dot
    block_nodes = [line for line in dot.splitlines() if line.strip().startswith("B") and "->" not in line]
    assert len(block_nodes) == 3  # model.0, model.1, model.2; model.3-5 are single layers
    edges = {line.strip() for line in dot.splitlines() if "->" in line}
    assert {"in0 -> B0;", "B0 -> B1;", "B1 -> B2;", "B2 -> L30;", "B0 -> L32;", "L32 -> out0;"} <= edges
    assert len(edges) == 8


def test_dot_folds_constants_unless_asked():
    net = counted_net()
    assert "fc.weight" not in to_dot(net)
    assert "fc.weight" in to_dot(net, show_constants=True)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")
@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_write_graph_renders_with_dot(tmp_path, suffix, magic):
    out = write_graph(block_net(), tmp_path / f"g{suffix}")
    assert out.rendered and out.path == tmp_path / f"g{suffix}"
    data = out.path.read_bytes()
    assert data.startswith(magic) and len(data) > 5000
    if suffix == ".svg":
        assert "model.2" in data.decode() and "m.0.cv1.conv" in data.decode()


def test_write_graph_without_dot_writes_dot_and_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = write_graph(block_net(), tmp_path / "g.png")
    assert not out.rendered and out.path == tmp_path / "g.dot" and not (tmp_path / "g.png").exists()
    assert out.path.read_text().startswith('digraph "tiny-yolo"')
    assert f"dot -Tpng {tmp_path / 'g.dot'} -o {tmp_path / 'g.png'}" in str(out)


def test_write_graph_dot_and_bad_suffix(tmp_path):
    out = write_graph(counted_net(), tmp_path / "g.dot")
    assert out.path.read_text() == to_dot(counted_net())
    with pytest.raises(ValueError, match="graph format .jpg"):
        write_graph(counted_net(), tmp_path / "g.jpg")
