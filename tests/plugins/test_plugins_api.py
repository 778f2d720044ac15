"""The Python side of every plugin, on the CPU with the real TensorRT(-RTX) bindings: fields, serialization,
clone, dtypes/formats, the shape rule, the plugin registry, engine metadata and reference lookup."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plugin_cases import Builder, Expr

from plugins import adapter, core
from plugins.core import Bool, Float, Floats, Int, Ints, Plugin, PluginError, Str, SymDim
from plugins.ops.nms import Nms
from plugins.ops.swish import Swish
from plugins.ops.yolo_decode import YoloDecode
from plugins.shapes import as_expr

try:
    from trtx_base import backend

    trt = backend.trt
except ImportError as exc:  # the GPU machine has no TensorRT
    pytest.skip(f"no TensorRT backend: {exc}", allow_module_level=True)
ROOT = Path(__file__).resolve().parents[2]

#: one non-default configuration per plugin
CONFIGS = [
    Swish(beta=1.7),
    YoloDecode(num_classes=3, anchors=(10, 13, 16, 30), stride=16, conf_threshold=0.3, max_det=77, level=1),
    Nms(iou_threshold=0.6, score_threshold=0.1, max_det=50, agnostic=True),
]


class Everything(Plugin):
    """A plugin with a field of every type, for the serialization tests."""

    name, version, namespace = "everything", "3", "trtx_test"
    i = Int(-5)
    f = Float(0.1)
    b = Bool(True)
    s = Str("hello")
    ii = Ints((1, 2, 3))
    ff = Floats((0.5, 1e-3))


def test_fields_have_defaults_types_and_fp32_rounding():
    p = Everything()
    assert p.values() == {"i": -5, "f": float(np.float32(0.1)), "b": True, "s": "hello", "ii": (1, 2, 3),
                          "ff": (0.5, float(np.float32(1e-3)))}  # fmt: skip
    with pytest.raises(PluginError, match=r"plugin everything: field 'i' must be an int"):
        Everything(i=1.5)
    with pytest.raises(PluginError, match=r"has no field nope"):
        Everything(nope=1)
    with pytest.raises(PluginError, match=r"field 'anchors' is required"):
        YoloDecode(stride=8)
    with pytest.raises(PluginError, match=r"'anchors' needs 2 to 32 values"):
        YoloDecode(anchors=(1, 2, 3), stride=8)
    with pytest.raises(AttributeError, match="read-only"):
        p.i = 3


@pytest.mark.parametrize("plugin", [*CONFIGS, Everything(i=7, f=2.5, b=False, s="trtx", ii=(), ff=(3.25,))], ids=str)
def test_fields_round_trip_through_serialization(plugin):
    trt_plugin = plugin.trt_plugin()
    collection = trt_plugin.get_fields_to_serialize()
    assert [f.name for f in collection] == list(plugin.fields)
    creator = adapter.trt_classes()[1](type(plugin))
    rebuilt = creator.create_plugin(plugin.name, collection, trt.TensorRTPhase.RUNTIME)
    assert isinstance(rebuilt, trt.IPluginV3)
    assert rebuilt.impl == plugin and rebuilt.impl is not plugin
    assert rebuilt.impl.values() == plugin.values()
    assert (rebuilt.plugin_name, rebuilt.plugin_version, rebuilt.plugin_namespace) == (
        plugin.name,
        plugin.version,
        plugin.namespace,
    )


@pytest.mark.parametrize("plugin", CONFIGS, ids=str)
def test_clone_keeps_the_fields(plugin):
    original = plugin.trt_plugin()
    clone = original.clone()
    assert clone is not original and clone.impl is not original.impl
    assert clone.impl == plugin and clone.num_outputs == len(plugin.outputs)
    attached = original.attach_to_context(None)
    assert attached.impl == plugin
    assert original.get_capability_interface(trt.PluginCapabilityType.BUILD) is original


def _desc(dtype, fmt=None, dims=(1,)):
    desc = trt.DynamicPluginTensorDesc()
    inner = trt.PluginTensorDesc()
    inner.type = dtype
    inner.format = fmt or trt.TensorFormat.LINEAR
    inner.dims = trt.Dims(list(dims))
    desc.desc = inner
    desc.min = desc.max = desc.opt = trt.Dims(list(dims))
    return desc


F32, F16, I32, I8 = trt.DataType.FLOAT, trt.DataType.HALF, trt.DataType.INT32, trt.DataType.INT8


def test_supports_format_combination_swish():
    p = Swish().trt_plugin()
    ok = lambda types, pos, fmt=None: p.supports_format_combination(  # noqa: E731
        pos, [_desc(t, fmt if i == pos else None) for i, t in enumerate(types)], 1
    )
    assert ok([F32, F32], 0) and ok([F16, F16], 0) and ok([F32, F32], 1) and ok([F16, F16], 1)
    assert not ok([I8, I8], 0)
    assert not ok([F32, F16], 1)  # y must have x's dtype
    assert not ok([F32, F32], 0, trt.TensorFormat.HWC)
    assert p.get_output_data_types([F16]) == [F16] and p.get_output_data_types([F32]) == [F32]


def test_supports_format_combination_decode_and_nms():
    d = CONFIGS[1].trt_plugin()
    assert d.supports_format_combination(0, [_desc(F16), _desc(I32), _desc(F32)], 1)
    assert d.supports_format_combination(1, [_desc(F16), _desc(I32), _desc(F32)], 1)
    assert not d.supports_format_combination(1, [_desc(F16), _desc(F32), _desc(F32)], 1)
    assert d.supports_format_combination(2, [_desc(F32), _desc(I32), _desc(F32)], 1)
    assert not d.supports_format_combination(2, [_desc(F16), _desc(I32), _desc(F16)], 1)
    assert d.get_output_data_types([F16]) == [I32, F32]
    n = CONFIGS[2].trt_plugin()
    pattern = [_desc(I32), _desc(F32)] * 3 + [_desc(I32), _desc(F32)]
    assert all(n.supports_format_combination(pos, pattern, 6) for pos in range(8))
    assert not n.supports_format_combination(1, [_desc(I32), _desc(F16), _desc(I32), _desc(F32)], 2)
    assert not n.supports_format_combination(0, [_desc(I32), _desc(F32), _desc(I32), _desc(I32), _desc(F32)], 3)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_shape_rule_on_concrete_shapes(batch):
    swish, decode, nms = CONFIGS
    assert swish.concrete_shapes([(batch, 16, 5, 7)]) == [(batch, 16, 5, 7)]
    head = (batch, 2 * (5 + 3), 40, 40)
    assert decode.concrete_shapes([head]) == [(batch,), (batch, 77, 8)]
    inputs = [(batch,), (batch, 1000, 8), (batch,), (batch, 500, 8), (batch,), (batch, 77, 8)]
    assert nms.concrete_shapes(inputs) == [(batch,), (batch, 50, 8)]
    assert nms.workspace_size(inputs, ["int32", "float32"] * 3) >= batch * 1577 * (8 + 2 * 32)


def test_shape_rule_errors_name_the_problem():
    with pytest.raises(PluginError, match=r"head has 255 channels, expected na\*\(5\+nc\) = 2\*\(5\+3\) = 16"):
        CONFIGS[1].concrete_shapes([(1, 255, 20, 20)])
    with pytest.raises(PluginError, match=r"dets \[B, rows, 8\]"):
        CONFIGS[2].concrete_shapes([(1,), (1, 10, 6)])
    with pytest.raises(PluginError, match="more than 32768"):
        CONFIGS[2].concrete_shapes([(1,), (1, 40000, 8)])
    with pytest.raises(PluginError, match=r"takes a multiple of 2 \(num, dets, ...\) inputs, got 3"):
        CONFIGS[2].check_dtypes(["int32", "float32", "int32"])
    with pytest.raises(PluginError, match=r"input 0 \(head\) is int8; supported: float32, float16"):
        CONFIGS[1].check_dtypes(["int8"])


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_one_shape_rule_serves_symbolic_and_concrete_dimensions(batch):
    """SymDim turns the author's arithmetic into IExprBuilder operations with TensorRT's DimensionOperation;
    evaluated, the expressions equal the concrete rule (a real IExprBuilder needs full TensorRT)."""
    b = Builder()
    sym = lambda name: SymDim(Expr("sym", name), b)  # noqa: E731
    const = lambda v: SymDim(Expr("const", v), b)  # noqa: E731
    decode, nms = CONFIGS[1], CONFIGS[2]
    outs = decode.output_shapes((sym("B"), const(16), sym("H"), sym("W")))
    expected = decode.concrete_shapes([(batch, 16, 20, 24)])
    env = {"B": batch, "H": 20, "W": 24}
    evaluated = [tuple(as_expr(d, b).eval(env) for d in shape) for shape in outs]
    assert evaluated == expected
    outs = nms.output_shapes(
        (sym("B"),), (sym("B"), const(100), const(8)), (sym("B"),), (sym("B"), const(30), const(8))
    )
    assert [tuple(as_expr(d, b).eval(env) for d in s) for s in outs] == [(batch,), (batch, 50, 8)]
    # arithmetic, ceil_div/dim_max on SymDims, with ints on either side
    x = sym("B")
    e = core.ceil_div(2 * x + 1 - x // 2, 3) * core.dim_max(x, 4) - core.dim_min(x, 2)
    assert as_expr(e, b).eval(env) == -(-(2 * batch + 1 - batch // 2) // 3) * max(batch, 4) - min(batch, 2)
    assert core.known(const(7)) == 7 and core.known(x) is None and core.known(5) == 5
    with pytest.raises(PluginError, match="only known at run time"):
        int(x)


def test_workspace_size_from_trt_descs():
    n = CONFIGS[2].trt_plugin()
    descs = [_desc(I32, dims=(8,)), _desc(F32, dims=(8, 1000, 8)), _desc(I32, dims=(8,)), _desc(F32, dims=(8, 500, 8))]
    assert n.get_workspace_size(descs, []) == CONFIGS[2].workspace_size([(8,), (8, 1000, 8), (8,), (8, 500, 8)], [])


def test_registry_and_engine_metadata(tmp_path):
    creator = core.register(YoloDecode)
    assert core.register(YoloDecode) is creator  # once
    registry = trt.get_plugin_registry()
    assert registry.get_creator("yolo_decode", "1", "trtx") is creator
    assert [f.name for f in creator.field_names] == list(YoloDecode.fields)
    meta = {"plugins": [core.metadata_entry(Nms), core.metadata_entry(Swish), core.metadata_entry(YoloDecode)]}
    assert core.register_from_metadata(meta) == [Nms, Swish, YoloDecode]
    plugin = registry.get_creator("nms", "1", "trtx").create_plugin(
        "nms", CONFIGS[2].trt_plugin().get_fields_to_serialize(), trt.TensorRTPhase.RUNTIME
    )
    assert plugin.impl == CONFIGS[2]
    with pytest.raises(PluginError, match=r"needs plugin trtx::yolo_decode v2.*known: .*trtx::yolo_decode v1"):
        core.register_from_metadata({"plugins": [{"name": "yolo_decode", "version": "2", "namespace": "trtx"}]})
    with pytest.raises(PluginError, match="malformed plugin entry"):
        core.register_from_metadata({"plugins": [{"version": "1"}]})
    assert core.register_from_metadata({"plugins": []}) == []


def test_add_to_network_records_the_plugin_or_says_why_it_cannot():
    from trtx.net import Net

    net = Net()
    x = net.network.add_input("head", trt.DataType.FLOAT, (1, 255, 20, 20))
    fields = {"anchors": (116, 90, 156, 198, 373, 326), "stride": 32}
    if not net.backend.has_plugin_layers:  # TensorRT-RTX: the error says what to do instead
        with pytest.raises(PluginError, match=r"has no plugin layers.*plugins\.yolo_decode\.run"):
            YoloDecode.add_to_network(net, [x], name="model.24.decode.2", **fields)
        assert net.plugins == []
        return
    layer = YoloDecode.add_to_network(net, [x], name="model.24.decode.2", **fields)  # full TensorRT
    assert layer.num_outputs == 2 and net.plugins == [core.metadata_entry(YoloDecode)]
    assert core.reference_for_layer(layer)


def test_reference_for_layer_binds_the_fields():
    import torch

    from plugins import yolo_decode

    plugin = CONFIGS[1].trt_plugin()
    head = torch.randn(2, 16, 6, 5)
    got = core.reference_for_layer(plugin)([head])
    want = yolo_decode.reference([head], **CONFIGS[1].values())
    assert all(torch.equal(a, b) for a, b in zip(got, want))


class ForeignPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneRuntime):
    """An IPluginV3 that is not ours (what TensorRT may hand back): only its interfaces to go by."""

    def __init__(self, fields):
        trt.IPluginV3.__init__(self)
        trt.IPluginV3OneCore.__init__(self)
        trt.IPluginV3OneRuntime.__init__(self)
        self.plugin_name, self.plugin_version, self.plugin_namespace = "swish", "1", "trtx"
        self.fields = fields

    def get_capability_interface(self, type):
        return self

    def get_fields_to_serialize(self):
        return self.fields


def test_reference_for_a_plugin_known_only_by_its_interfaces():
    import torch

    collection = Swish(beta=0.5).trt_plugin().get_fields_to_serialize()
    reference = core.reference_for_layer(ForeignPlugin(collection))
    x = torch.randn(4, 3)
    assert torch.equal(reference([x])[0], (x * torch.sigmoid(0.5 * x)))
    with pytest.raises(PluginError, match="not an IPluginV3 plugin layer"):
        core.reference_for_layer(object())


def test_list_cli_prints_plugins_fields_and_dtypes():
    proc = subprocess.run([sys.executable, "-m", "plugins", "list"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in (
        "trtx::yolo_decode v1",
        "field  anchors: floats (required)",
        "field  conf_threshold: float (default 0.25)",
        "input  head: float32 | float16",
        "output num: int32",
        "trtx::nms v1",
        "input  dets: float32 (repeated)",
        "field  agnostic: bool (default False)",
        "trtx::swish v1",
        "output y: dtype of x",
        "kernel yolo_decode in plugins/ops/yolo_decode.cu [float32, float16]",
        "ahead-of-time: yes",
    ):
        assert text in out, text
    assert subprocess.run([sys.executable, "-m", "plugins", "--help"], capture_output=True, cwd=ROOT).returncode == 0


def test_every_module_of_plugins_ops_is_a_plugin_and_importable_from_plugins():
    import plugins
    from plugins import nms, swish
    from plugins.ops import nms as ops_nms

    assert nms is ops_nms and swish.Swish is Swish
    modules = core.discover()
    assert modules == [
        f"plugins.ops.{n}" for n in ("dfl_decode", "nms", "retinaface_decode", "rotated_nms", "swish", "yolo_decode")
    ]
    declared = {cls.__module__ for cls in core.PLUGINS.values() if cls.__module__.startswith("plugins.ops.")}
    assert declared == set(modules)
    with pytest.raises(ImportError):
        from plugins import no_such_plugin  # noqa: F401
    with pytest.raises(AttributeError):
        plugins.no_such_plugin  # noqa: B018


def test_the_tutorial_in_the_docs_is_the_real_plugin_file():
    """docs/plugins.md writes plugins/ops/swish.py and swish.cu in full; a plugin written from it is what runs."""
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for intro, fence, path in (
        ("The kernel, `plugins/ops/swish.cu`:", "```cuda\n", "swish.cu"),
        ("The plugin, `plugins/ops/swish.py` (the whole file):", "```python\n", "swish.py"),
    ):
        start = docs.index(fence, docs.index(intro)) + len(fence)
        assert docs[start : docs.index("```\n", start)] == (ROOT / "plugins" / "ops" / path).read_text(), path


def test_net_keeps_plugin_objects_alive():
    import gc
    import weakref

    from trtx.net import Net

    class Held:
        pass

    net, obj = Net(), Held()
    ref = weakref.ref(obj)
    net.keep_plugin(obj)
    del obj
    gc.collect()
    assert ref() is not None
