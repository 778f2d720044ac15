"""The ahead-of-time contract of every plugin, on the CPU: what TensorRT >= 10.9 would launch from an engine
(kernel name, PTX, grid / block / shared memory as symbolic expressions of the input shapes, int32 arguments
between the input and the output pointers). The contract's PTX is compiled here by NVRTC for the target
architecture and its entry's parameters read back; the symbolic launch evaluated at concrete shapes equals the
concrete launch. tests/plugins/test_plugins_gpu.py launches the same contracts on a GPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
from plugin_cases import Builder, aot_cases, concrete, evaluate, symbolic

from plugins import aot, core
from plugins.core import AotLaunch, Float, Input, Kernel, Output, Plugin, PluginError
from plugins.fields import Bool, Floats, Int, Ints, Str

CASES = aot_cases()
SHAPE = {"B": 3, "H": 20, "W": 24}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One kernel cache for the module: every contract is compiled once per architecture."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TRTX_KERNEL_CACHE", str(tmp_path_factory.mktemp("kernel-cache")))
    yield
    mp.undo()


def test_every_plugin_has_an_ahead_of_time_form_and_a_case_here():
    core.discover()
    ours = {cls.name for cls in core.PLUGINS.values() if cls.__module__.startswith("plugins.ops.")}
    assert set(CASES) == ours
    assert all(type(plugin).has_aot() for plugin, _, _ in CASES.values())


def expected_launch(name, plugin, shapes):
    """The launch each plugin's docs promise, written out independently of its aot_launch."""
    batch = shapes[0][0]
    if name == "swish":
        n = math.prod(shapes[0])
        return (-(-n // 256), 1, 1), (256, 1, 1), (n,), 0
    if name == "yolo_decode":
        return (batch, 1, 1), (512, 1, 1), (shapes[0][2], shapes[0][3]), 0
    if name == "nms":
        rows = tuple(s[1] for s in shapes[1::2])
        return (batch, 1, 1), (512, 1, 1), rows, sum(rows)  # one shared byte per candidate slot
    if name == "retinaface_decode":
        return (batch, 1, 1), (512, 1, 1), (batch,), 0
    if name == "dfl_decode":
        return (batch, 1, 1), (512, 1, 1), (shapes[0][2],), 0
    if name == "rotated_nms":
        return (batch, 1, 1), (512, 1, 1), (shapes[1][1],), 2 * shapes[1][1]  # two shared bytes per record
    raise AssertionError(f"no expected launch for {name}")


@pytest.mark.parametrize("arch", ["compute_75", "sm_90"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_contract_ptx_arguments_and_launch(name, arch, cache):
    plugin, template, dtype_sets = CASES[name]
    for dtypes in dtype_sets:
        for batch in (1, 3, 8):
            shapes = concrete(template, {**SHAPE, "B": batch})
            c = aot.contract(plugin, shapes, dtypes, arch=arch)
            assert (c.grid, c.block, c.args, c.shared_mem) == expected_launch(name, plugin, shapes)
        text = c.ptx.decode()
        assert c.compiled.kind == "ptx" and c.compiled.arch == "compute_" + arch.split("_")[1]
        assert not c.ptx.endswith(b"\0") and f".target sm_{arch.split('_')[1]}" in text
        assert f".visible .entry {c.entry}(" in text and ".extern .func" not in text  # nothing to link
        assert text.count(".entry") == 1  # only the AOT kernel goes into the engine
        # TensorRT passes input pointers, the int32 arguments, output pointers: the PTX entry takes exactly that
        want = ["u64"] * len(shapes) + ["u32"] * len(c.args) + ["u64"] * len(plugin.outputs)
        assert aot.ptx_parameters(c.ptx, c.entry) == want
        assert c.parameters == [(f"input{i}", "ptr") for i in range(len(shapes))] + [
            (f"arg{i}", "int32") for i in range(len(c.args))
        ] + [(f"output{i}", "ptr") for i in range(len(plugin.outputs))]


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("name", sorted(CASES))
def test_symbolic_launch_evaluates_to_the_concrete_launch(name, batch):
    """Inside TensorRT the launch is built from symbolic input shapes (its IExprBuilder); the same aot_launch
    on SymDims, evaluated at the shapes, gives the launch computed from ints."""
    plugin, template, dtype_sets = CASES[name]
    b, env = Builder(), {**SHAPE, "B": batch}
    sym = plugin.aot_launch(symbolic(template, b), list(dtype_sets[0]))
    ints = plugin.aot_launch(concrete(template, env), list(dtype_sets[0]))
    for what in ("grid", "block", "args", "shared_mem"):
        assert evaluate(getattr(sym, what), b, env) == evaluate(getattr(ints, what), b, env), what
    assert (sym.entry, sym.dtype, sym.source, dict(sym.defines)) == (
        ints.entry,
        ints.dtype,
        ints.source,
        dict(ints.defines),
    )
    if name in ("swish", "yolo_decode"):  # these follow a dynamic shape: the expressions really are symbolic
        free = [a for a in [*sym.args, sym.grid] if not isinstance(a, int) and not a.expr.is_constant()]
        assert free, "expected launch values that depend on the input shape"


@pytest.mark.parametrize("name", sorted(CASES))
def test_contract_arguments_pack_in_tensorrts_order(name, cache):
    """The argument block cuda-python hands cuLaunchKernel for a contract: input pointers, the int32 arguments,
    output pointers, each in its own 8-byte slot (raw addresses stand in for device memory)."""
    import struct

    from plugins.kernel import pack_arguments

    plugin, template, dtype_sets = CASES[name]
    c = aot.contract(plugin, concrete(template, SHAPE), dtype_sets[0], arch="compute_75")
    ins = [0x7F0000001000 + 0x100 * i for i in range(c.num_inputs)]
    outs = [0x7F0000009000 + 0x100 * i for i in range(c.num_outputs)]
    _, addresses, buffer = pack_arguments(c.parameters, [*ins, *c.args, *outs], c.entry)
    assert [a - addresses[0] for a in addresses] == [8 * i for i in range(len(c.parameters))]
    slots = [buffer.raw[8 * i : 8 * i + 8] for i in range(len(c.parameters))]
    n_in, n_args = c.num_inputs, len(c.args)
    assert [struct.unpack("<Q", x)[0] for x in slots[:n_in]] == ins
    assert [struct.unpack("<i", x[:4])[0] for x in slots[n_in : n_in + n_args]] == list(c.args)
    assert [struct.unpack("<Q", x)[0] for x in slots[n_in + n_args :]] == outs


def _bits(value: float) -> str:
    return f"0f{int(np.float32(value).view(np.uint32)):08X}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_float_fields_are_built_into_the_ptx_exactly(name, cache):
    """TensorRT stores no fields for AOT plugins: they are compile-time constants, bit-exact in the PTX."""
    plugin, template, dtype_sets = CASES[name]
    c = aot.contract(plugin, concrete(template, SHAPE), dtype_sets[0], arch="compute_75")
    text = c.ptx.decode()
    scalars = [n for n, f in plugin.fields.items() if isinstance(f, Float)]
    for field_name in scalars:
        value = plugin.values()[field_name]
        assert _bits(value) in text or _bits(-value) in text, (field_name, value)
    assert scalars or name == "nonexistent"


def test_c_literals_are_exact():
    def back(literal):
        return float.fromhex(literal.strip("()").removesuffix("f"))

    f = Float()
    for value in (0.1, 1.3, -2.5, 1e-45, 3.4e38, 0.0, -0.0):
        v = float(np.float32(value))
        assert back(f.c_literal(v)) == v and np.signbit(back(f.c_literal(v))) == np.signbit(v)
    assert f.c_literal(float("inf")) == "__int_as_float(0x7f800000)"
    assert f.c_literal(float("-inf")) == "__int_as_float(0xff800000)"
    assert f.c_literal(float("nan")).startswith("__int_as_float(0x7fc")
    assert Int().c_literal(-(2**31)) == "(-2147483648)" and Int().c_literal(7) == "7"
    assert Bool().c_literal(True) == "1" and Ints().c_literal((1, -2)) == "{1,-2}" and Ints().c_literal(()) == "{}"
    assert Floats().c_literal((0.5,)) == "{(0x1.0000000000000p-1f)}"
    assert Str().c_literal('a"\n') == '"\\141\\042\\012"'


BAD_ORDER = """
#include "trtx.cuh"
#ifdef TRTX_AOT
extern "C" __global__ void scale_aot(const float* x, float* y, int n) {
    const long long i = global_index();
    if (i < n) y[i] = x[i] * FIELD_factor;
}
#endif
"""


class ScaleWrongOrder(Plugin):
    """An AOT entry with the output before the int argument: not what TensorRT passes."""

    name, version, namespace = "scale_wrong_order", "1", "trtx_test"
    factor = Float(2.0)
    inputs = [Input("x", "float32")]
    outputs = [Output("y", "float32")]

    def output_shapes(self, x):
        return [x]

    def aot_launch(self, shapes, dtypes):
        n = math.prod(shapes[0])
        return AotLaunch(Kernel(BAD_ORDER, "scale", _register=False), "scale_aot", grid=n, block=1, args=[n])


class NoAot(ScaleWrongOrder):
    name = "no_aot"
    aot_launch = Plugin.aot_launch


def test_an_entry_that_breaks_the_argument_order_is_refused(cache):
    with pytest.raises(PluginError, match=r"takes \(ptr, ptr, int32\); an AOT plugin entry takes 1 input pointers, "
                                          r"1 int arguments, 1 output pointers: \(ptr, int32, ptr\)"):  # fmt: skip
        aot.contract(ScaleWrongOrder(), [(4,)], ["float32"], arch="compute_80")
    with pytest.raises(PluginError, match="plugin no_aot has no ahead-of-time form"):
        aot.contract(NoAot(), [(4,)], ["float32"], arch="compute_80")
    assert not NoAot.has_aot() and ScaleWrongOrder.has_aot()


def test_contract_values_must_fit_int32(cache):
    plugin, template, dtypes = CASES["swish"]
    with pytest.raises(PluginError, match=r"AOT argument = 3221225472 does not fit int32"):
        aot.contract(plugin, [(3, 1024, 1024, 1024)], dtypes[0], arch="compute_80")


def test_derived_kernels_keep_file_and_options_and_are_not_compiled_by_the_cli():
    from plugins.kernel import ALL_KERNELS
    from plugins.ops import yolo_decode

    k = yolo_decode.KERNEL.derive("yolo_decode_aot", dtype="float16", defines={"YOLO_NA": 3}, source_suffix="//x\n")
    assert k.filename == "plugins/ops/yolo_decode.cu" and k.options == ("--fmad=false",)
    assert k.defines == {"scalar_t": "trtx_half", "YOLO_NA": 3} and k.source.endswith("//x\n")
    assert k not in ALL_KERNELS and k.name == "yolo_decode_aot"
    assert [c for _, c in k.signature] == ["ptr", "int32", "int32", "ptr", "ptr"]


def test_this_backend_builds_no_aot_layers_and_says_why():
    from trtx_base import backend

    be = backend.get()
    assert not be.has_aot_plugins  # TensorRT-RTX: no plugin layers at all
    with pytest.raises(PluginError, match=r"no ahead-of-time plugins \(tensorrt.plugin.aot_impl, TensorRT >= 10.9\)"):
        aot.register(type(CASES["swish"][0]), 1)


def test_aot_engines_need_no_plugin_registration_at_load_time():
    entry = {**core.metadata_entry(type(CASES["nms"][0])), "aot": True}
    assert core.register_from_metadata({"plugins": [entry]}) == []


def test_qdp_names():
    nms, swish = type(CASES["nms"][0]), type(CASES["swish"][0])
    assert aot.qdp_id(swish, 1) == ("trtx_aot", "swish") and aot.qdp_id(nms, 6) == ("trtx_aot", "nms_x6")
