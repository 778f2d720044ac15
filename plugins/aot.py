"""Ahead-of-time plugins: the plugin's kernel built into the engine, run by TensorRT with no Python and no .so.

TensorRT >= 10.9 (``tensorrt.plugin``, "quickly deployable plugins") accepts, for a plugin layer, one compiled
kernel and the way to launch it: ``@trtp.register`` describes the outputs, ``@trtp.aot_impl`` returns the
kernel's name, its PTX, ``KernelLaunchParams`` (grid, block, shared memory: symbolic expressions of the input
shapes) and extra ``int32`` arguments, also symbolic. TensorRT stores all of it in the engine and launches

    entry<<<grid, block, shared_mem, stream>>>(*input pointers, *int32 arguments, *output pointers)

itself, so ``trtexec`` and Triton run the engine as it is. That is the **contract** this module makes from a
plugin declaration: the plugin says which kernel entry point and launch (:meth:`Plugin.aot_launch` returning
an :class:`AotLaunch` of ints or :class:`SymDim`\\ s), this module compiles the entry with the plugin's field
values built in as constants (``FIELD_<name>`` macros: TensorRT does not store AOT plugin fields), checks the
entry's signature against the contract, and either

* evaluates it at concrete shapes and launches the PTX with cuda-python exactly as TensorRT would
  (:func:`contract`, :func:`launch`; ``Plugin.execute(..., aot=True)``): the tests compare that with the torch
  reference on a GPU, or
* generates the ``tensorrt.plugin`` registration and adds the layer (:func:`add_layer`, on full TensorRT >= 10.9:
  ``trtx_base.backend.get().has_aot_plugins``).

Neither torch nor TensorRT is imported when this module is imported.
"""

from __future__ import annotations

import importlib
import inspect
import re
import threading
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plugins import compiler, kernel
from plugins.errors import PluginError
from plugins.kernel import Kernel
from plugins.plugin import Plugin
from plugins.shapes import SymDim, as_expr
from trtx_base.dtypes import name_of, trt_dtype

#: the compile-time macro every AOT build defines (a .cu file's AOT entry points sit under #ifdef TRTX_AOT)
AOT_MACRO = "TRTX_AOT"


@dataclass(frozen=True)
class AotLaunch:
    """How TensorRT launches a plugin's AOT kernel: ``entry<<<grid, block, shared_mem>>>(*inputs, *args, *outputs)``.

    ``grid``/``block``: an int or SymDim, or up to three; ``args``: the int32 arguments between the input and the
    output pointers; all may be SymDims (expressions of the input shapes). ``kernel`` gives the source file and
    NVRTC options, ``dtype`` its ``scalar_t`` variant; ``defines`` are more macros besides the fields'
    ``FIELD_<name>``; ``source`` is code appended to the file (an entry point generated for this input count).
    """

    kernel: Kernel
    entry: str
    grid: Any
    block: Any
    args: Sequence[Any] = ()
    shared_mem: Any = 0
    dtype: str | None = None
    defines: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""


def field_defines(plugin: Plugin) -> dict[str, str]:
    """``FIELD_<name>`` -> the field's value as an exact C++ expression, for every field of ``plugin``."""
    return {f"FIELD_{name}": f.c_literal(plugin._values[name]) for name, f in plugin.fields.items()}


def launch_of(plugin: Plugin, shapes: Sequence[Sequence[Any]], dtypes: Sequence[str]) -> AotLaunch:
    """The plugin's AOT launch for these input shapes (ints or SymDims) and dtypes."""
    launch = plugin.aot_launch([tuple(s) for s in shapes], list(dtypes))
    if launch is None:
        raise PluginError(f"plugin {plugin.name} has no ahead-of-time form (its declaration has no aot_launch)")
    return launch


def aot_kernel(plugin: Plugin, launch: AotLaunch) -> Kernel:
    """The kernel TensorRT runs: ``launch.entry`` of the plugin's source with TRTX_AOT and the fields defined."""
    defines = {AOT_MACRO: 1, **field_defines(plugin), **launch.defines}
    return launch.kernel.derive(launch.entry, dtype=launch.dtype, defines=defines, source_suffix=launch.source)


def check_signature(k: Kernel, num_inputs: int, num_args: int, num_outputs: int) -> None:
    """Raise PluginError unless ``k`` takes (input pointers, int32 arguments, output pointers) in that order."""
    want = ["ptr"] * num_inputs + ["int32"] * num_args + ["ptr"] * num_outputs
    got = [code for _, code in k.signature]
    if got != want:
        raise PluginError(
            f"kernel {k.name} in {k.filename} takes ({', '.join(got)}); an AOT plugin entry takes {num_inputs} "
            f"input pointers, {num_args} int arguments, {num_outputs} output pointers: ({', '.join(want)})"
        )


def ptx_arch(arch: str | int | None = None) -> str:
    """The PTX target: ``compute_XY`` of ``arch`` (sm_XY, compute_XY or XY), default the current device's (or the
    newest architecture NVRTC knows below it). TensorRT takes PTX only; the driver compiles it for the GPU."""
    if arch is None:
        arch = compiler.arch_for_capability(kernel.context_capability())
    return "compute_" + compiler.normalize_arch(arch).split("_", 1)[1]


def ptx_parameters(ptx: bytes | str, entry: str) -> list[str]:
    """The parameter types (``u64``, ``u32``, ...) of ``.entry entry(...)`` in PTX text."""
    text = ptx.decode(errors="replace") if isinstance(ptx, bytes) else ptx
    m = re.search(r"\.entry\s+" + re.escape(entry) + r"\s*\(([^)]*)\)", text)
    if m is None:
        raise PluginError(f"the PTX has no entry {entry}")
    return re.findall(r"\.param\s+\.(\w+)", m.group(1))


# ---- the contract at concrete shapes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Contract:
    """What TensorRT launches for one set of input shapes: ``entry<<<grid, block, shared_mem>>>(*inputs, *args,
    *outputs)`` from ``ptx`` (the PTX text the engine stores)."""

    entry: str
    ptx: bytes
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    args: tuple[int, ...]
    num_inputs: int
    num_outputs: int
    compiled: compiler.Compiled  # the NVRTC result (NUL-terminated image), for loading with the driver

    @property
    def parameters(self) -> list[tuple[str, str]]:
        """The kernel's parameters as :func:`plugins.kernel.pack_arguments` packs them."""
        return (
            [(f"input{i}", "ptr") for i in range(self.num_inputs)]
            + [(f"arg{i}", "int32") for i in range(len(self.args))]
            + [(f"output{i}", "ptr") for i in range(self.num_outputs)]
        )


def _dims(value: Any, what: str, plugin: str) -> tuple:
    dims = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(dims) <= 3:
        raise PluginError(f"plugin {plugin}: AOT {what} needs 1 to 3 sizes, got {value!r}")
    return (*dims, *(1,) * (3 - len(dims)))


def _int32(value: Any, what: str, plugin: str) -> int:
    v = int(value)
    if not -(2**31) <= v < 2**31:
        raise PluginError(f"plugin {plugin}: AOT {what} = {v} does not fit int32")
    return v


def contract(
    plugin: Plugin, shapes: Sequence[Sequence[int]], dtypes: Sequence[str], *, arch: str | int | None = None
) -> Contract:
    """The launch TensorRT would perform for these concrete input shapes and dtypes, with the PTX for ``arch``."""
    shapes = [tuple(int(d) for d in s) for s in shapes]
    dtypes = [name_of(d) for d in dtypes]
    plugin.check_dtypes(dtypes)
    plugin.concrete_shapes(shapes)  # the shape rule's checks
    launch = launch_of(plugin, shapes, dtypes)
    k = aot_kernel(plugin, launch)
    check_signature(k, len(shapes), len(launch.args), len(plugin.outputs))
    compiled = k.compile(ptx_arch(arch))
    grid = tuple(_int32(d, "grid", plugin.name) for d in _dims(launch.grid, "grid", plugin.name))
    block = tuple(_int32(d, "block", plugin.name) for d in _dims(launch.block, "block", plugin.name))
    args = tuple(_int32(a, "argument", plugin.name) for a in launch.args)
    return Contract(
        entry=launch.entry,
        ptx=compiled.image.rstrip(b"\0"),
        grid=grid,  # type: ignore[arg-type]
        block=block,  # type: ignore[arg-type]
        shared_mem=_int32(launch.shared_mem, "shared memory", plugin.name),
        args=args,
        num_inputs=len(shapes),
        num_outputs=len(plugin.outputs),
        compiled=compiled,
    )


def launch(c: Contract, inputs: Sequence[Any], outputs: Sequence[Any], stream: Any = None) -> None:
    """Launch the contract's PTX with cuda-python as TensorRT does: the driver JIT-compiles the PTX, arguments are
    the input pointers, the int32 arguments and the output pointers, no shared-memory opt-in."""
    if len(inputs) != c.num_inputs or len(outputs) != c.num_outputs:
        raise PluginError(
            f"AOT kernel {c.entry} takes {c.num_inputs} inputs and {c.num_outputs} outputs, "
            f"got {len(inputs)} and {len(outputs)}"
        )
    if 0 in c.grid:
        return  # an empty batch
    fn = kernel.load_function(kernel.current_context(), c.compiled, c.entry, f"{c.entry} (AOT PTX)")
    args = [*inputs, *c.args, *outputs]
    kernel.launch_function(fn, c.entry, c.parameters, args, c.grid, c.block, stream, c.shared_mem)


# ---- TensorRT: the tensorrt.plugin registration generated from a declaration ---------------------------------


def _trtp():
    from trtx_base import backend

    be = backend.get()
    if not be.has_aot_plugins:
        raise PluginError(
            f"{be.name} {be.version} has no ahead-of-time plugins (tensorrt.plugin.aot_impl, TensorRT >= 10.9)"
        )
    return importlib.import_module(f"{be.module_name}.plugin")


class _Expr:
    """IDimensionExpr's two queries over a ``tensorrt.plugin`` ShapeExpr (what :class:`SymDim` asks)."""

    __slots__ = ("e",)

    def __init__(self, e: Any) -> None:
        self.e = e

    def is_constant(self) -> bool:
        return bool(self.e.is_constant)

    def get_constant_value(self) -> int:
        return int(self.e.constant_value())


class _Builder:
    """IExprBuilder's two calls over ``tensorrt.plugin``'s public ShapeExpr arithmetic."""

    def __init__(self, trtp: Any) -> None:
        self.trtp = trtp

    def constant(self, value: int) -> _Expr:
        return _Expr(self.trtp.ShapeExpr(int(value)))

    def operation(self, op: Any, a: _Expr, b: _Expr) -> _Expr:
        x, y, t = a.e, b.e, self.trtp
        ops = {
            "SUM": lambda: x + y,
            "SUB": lambda: x - y,
            "PROD": lambda: x * y,
            "FLOOR_DIV": lambda: x // y,
            "CEIL_DIV": lambda: t.cdiv(x, y),
            "MAX": lambda: t.max(x, y),
            "MIN": lambda: t.min(x, y),
        }
        return _Expr(ops[op.name]())


def _qdp_annotation(f: Any) -> Any:
    import numpy.typing as npt

    return {"int": int, "float": float, "bool": bool, "str": str,
            "ints": npt.NDArray[np.int32], "floats": npt.NDArray[np.float32]}[f.kind]  # fmt: skip


def _to_qdp(f: Any, value: Any) -> Any:
    return np.asarray(value, dtype=f.np_dtype) if f.kind in ("ints", "floats") else value


def _from_qdp(f: Any, value: Any) -> Any:
    return tuple(np.asarray(value).ravel().tolist()) if f.kind in ("ints", "floats") else value


def qdp_id(cls: type[Plugin], num_inputs: int) -> tuple[str, str]:
    """(namespace, name) of the tensorrt.plugin registration of ``cls`` with ``num_inputs`` inputs: namespace
    ``<namespace>_aot`` (the IPluginV3 creator keeps ``<namespace>``), ``_v<version>`` unless version 1 (such
    plugins are all version 1), ``_x<inputs>`` for a repeated input pattern (the signature is fixed)."""
    name = cls.name + ("" if str(cls.version) == "1" else f"_v{cls.version}")
    if cls.repeat_inputs:
        name += f"_x{num_inputs}"
    return f"{cls.namespace}_aot", name


#: (namespace, name) of each tensorrt.plugin registration -> its declaration
_registered: dict[tuple[str, str], type[Plugin]] = {}
_register_lock = threading.Lock()


def register(cls: type[Plugin], num_inputs: int) -> tuple[str, str]:
    """Register ``cls`` (with ``num_inputs`` inputs) with tensorrt.plugin: a ``register`` function (output
    shapes and dtypes from the declaration's shape rule) and an ``aot_impl`` (the contract); once."""
    key = qdp_id(cls, num_inputs)
    with _register_lock:
        if key in _registered:
            return key
        trtp = _trtp()
        fields = list(cls.fields.items())
        per = len(cls.inputs)
        names = [f"{cls.inputs[i % per].name}{i // per if cls.repeat_inputs else ''}" for i in range(num_inputs)]
        positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
        tensors = [inspect.Parameter(n, positional, annotation=trtp.TensorDesc) for n in names]
        attrs = [inspect.Parameter(n, positional, annotation=_qdp_annotation(f)) for n, f in fields]
        out_descs = typing.Tuple[tuple(trtp.TensorDesc for _ in cls.outputs)]  # noqa: UP006 -- a typing form

        def values(raw: Sequence[Any]) -> Plugin:
            return cls(**{n: _from_qdp(f, v) for (n, f), v in zip(fields, raw)})

        def describe(*descs: Any, **attr_values: Any):
            impl = values([attr_values[n] for n, _ in fields])
            dtypes = [name_of(d.dtype) for d in descs]
            out_dtypes = [trt_dtype(d) for d in impl.output_dtypes(dtypes)]
            if any(e.is_fake for d in descs for e in d.shape_expr):  # TensorRT asks for dtypes only
                return tuple(trtp.TensorDesc(None, dt) for dt in out_dtypes)
            builder = _Builder(trtp)
            shapes = [tuple(SymDim(_Expr(e), builder) for e in d.shape_expr) for d in descs]
            outs = impl.output_shapes(*shapes)
            return tuple(
                trtp.from_shape_expr(tuple(as_expr(d, builder).e for d in shape), dt)
                for shape, dt in zip(outs, out_dtypes)
            )

        def aot_impl(*call: Any):
            descs, raw, _outputs = call[:num_inputs], call[num_inputs : num_inputs + len(fields)], call[-2]
            impl = values(raw)
            builder = _Builder(trtp)
            shapes = [tuple(SymDim(_Expr(e), builder) for e in d.shape_expr) for d in descs]
            launch = launch_of(impl, shapes, [name_of(d.dtype) for d in descs])
            k = aot_kernel(impl, launch)
            check_signature(k, num_inputs, len(launch.args), len(impl.outputs))
            ptx = k.compile(ptx_arch()).image.rstrip(b"\0")

            def sym(v: Any):
                return trtp.SymInt32(as_expr(v, builder).e)

            params = trtp.KernelLaunchParams()
            params.grid_x, params.grid_y, params.grid_z = (sym(d) for d in _dims(launch.grid, "grid", cls.name))
            params.block_x, params.block_y, params.block_z = (sym(d) for d in _dims(launch.block, "block", cls.name))
            params.shared_mem = sym(launch.shared_mem)
            return launch.entry, ptx, params, trtp.SymIntExprs.from_tuple([sym(a) for a in launch.args])

        describe.__signature__ = inspect.Signature([*tensors, *attrs], return_annotation=out_descs)
        aot_impl.__signature__ = inspect.Signature(
            [
                *tensors,
                *attrs,
                inspect.Parameter("outputs", positional, annotation=out_descs),
                inspect.Parameter("tactic", positional, annotation=int),
            ],
            return_annotation=typing.Tuple[  # noqa: UP006 -- a typing form
                typing.Union[str, bytes], typing.Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs  # noqa: UP007
            ],
        )
        plugin_id = f"{key[0]}::{key[1]}"
        trtp.register(plugin_id)(describe)
        trtp.aot_impl(plugin_id)(aot_impl)
        _registered[key] = cls
        return key


def add_layer(impl: Plugin, net: Any, inputs: Sequence[Any]):
    """Add ``impl`` to ``net`` as an AOT plugin layer (``INetworkDefinition.add_plugin(..., aot=True)``)."""
    namespace, name = register(type(impl), len(inputs))
    op = getattr(getattr(_trtp().op, namespace), name)
    attrs = {n: _to_qdp(f, impl._values[n]) for n, f in impl.fields.items()}
    return net.network.add_plugin(op(*inputs, **attrs), aot=True)


def declaration_of(plugin: Any, namespace: str, name: str) -> Plugin:
    """Our declaration behind a tensorrt.plugin AOT plugin object (``layer.plugin`` of an AOT layer)."""
    cls = _registered.get((namespace, name))
    attrs = getattr(plugin, "attrs", None)  # tensorrt.plugin keeps the layer's attributes there
    if cls is None or not isinstance(attrs, Mapping):
        raise PluginError(f"plugin layer {namespace}::{name} was not added by trtx in this process")
    return cls(**{n: _from_qdp(f, attrs[n]) for n, f in cls.fields.items()})
