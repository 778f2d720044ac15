"""A TensorRT plugin from a declaration: fields, dtypes, one shape rule, a kernel launch and a torch reference.

A plugin author subclasses :class:`Plugin` (see docs/plugins.md and plugins/swish.py); this module turns the
declaration into everything else:

* the TensorRT ``IPluginV3`` (``IPluginV3OneCore/OneBuild/OneRuntime``) and its ``IPluginCreatorV3One``: field
  serialization, clone, ``supports_format_combination``, ``get_output_data_types``, ``get_output_shapes``
  (the author's shape rule on TensorRT's symbolic dimensions), workspace size, ``enqueue``;
* registration in TensorRT's plugin registry, and the engine-metadata entry that lets the runtime re-register
  the plugin before deserializing (:meth:`Plugin.add_to_network`, :func:`register_from_metadata`);
* :meth:`Plugin.run`: the same launch code on torch CUDA tensors (tests, benchmarks, and TensorRT-RTX, which
  has no plugin layers, running the op after the engine);
* :func:`reference_for_layer`: the torch reference of a plugin layer, for the reference executor.

Neither torch nor TensorRT is imported when this module is imported.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import numpy as np

from plugins.compiler import CompileError
from plugins.kernel import CudaError, Kernel, LaunchError, blocks, memset32
from trtx_base.dtypes import TABLE, name_of, torch_dtype, trt_dtype
from trtx_base.errors import UserError

__all__ = [
    "Bool",
    "Buffer",
    "CompileError",
    "CudaError",
    "Field",
    "Float",
    "Floats",
    "Input",
    "Int",
    "Ints",
    "Kernel",
    "LaunchError",
    "Output",
    "Plugin",
    "PluginError",
    "Str",
    "blocks",
    "ceil_div",
    "dim_max",
    "dim_min",
    "find",
    "known",
    "memset32",
    "reference_for_layer",
    "register",
    "register_from_metadata",
]

FLOATS = ("float32", "float16")


class PluginError(UserError, ValueError):
    """A plugin used wrongly (bad field, dtype, shape, unknown plugin); the message names plugin and field."""


# ---- fields -------------------------------------------------------------------------------------------------

_REQUIRED = object()


class Field:
    """A plugin attribute: typed, with a default, serialized into the engine as a TensorRT PluginField."""

    kind = "?"
    np_dtype: Any = None
    trt_type = ""  # PluginFieldType member

    def __init__(self, default: Any = _REQUIRED, doc: str = "") -> None:
        self.default = default
        self.doc = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._values[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"field {self.name!r} is read-only; create a new plugin with other values")

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def convert(self, value: Any, plugin: str) -> Any:
        """Check and normalize a value (floats are rounded to float32: what the kernel and engine see)."""
        raise NotImplementedError

    def to_array(self, value: Any) -> np.ndarray:
        return np.array(value if isinstance(value, tuple) else [value], dtype=self.np_dtype)

    def from_array(self, data: Any, plugin: str) -> Any:
        arr = np.asarray(data).astype(self.np_dtype).ravel()
        return self.convert(tuple(arr.tolist()) if self.kind.endswith("s") else _single(arr, self, plugin), plugin)

    def describe(self) -> str:
        default = "required" if self.required else f"default {self.default!r}"
        return f"{self.name}: {self.kind} ({default}){' -- ' + self.doc if self.doc else ''}"

    def _error(self, plugin: str, msg: str) -> PluginError:
        return PluginError(f"plugin {plugin}: field {self.name!r} {msg}")


def _single(arr: np.ndarray, field: Field, plugin: str):
    if arr.size != 1:
        raise field._error(plugin, f"holds {arr.size} values, expected 1")
    return arr[0].item()


def _f32(value: float) -> float:
    return float(np.float32(value))


class Int(Field):
    kind, np_dtype, trt_type = "int", np.int32, "INT32"

    def convert(self, value, plugin):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise self._error(plugin, f"must be an int, got {value!r}")
        if not -(2**31) <= int(value) < 2**31:
            raise self._error(plugin, f"= {value} does not fit int32")
        return int(value)


class Bool(Field):
    kind, np_dtype, trt_type = "bool", np.int32, "INT32"

    def convert(self, value, plugin):
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
            return bool(value)
        raise self._error(plugin, f"must be a bool, got {value!r}")

    def to_array(self, value):
        return np.array([int(value)], dtype=np.int32)


class Float(Field):
    kind, np_dtype, trt_type = "float", np.float32, "FLOAT32"

    def convert(self, value, plugin):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self._error(plugin, f"must be a number, got {value!r}")
        return _f32(value)


class Str(Field):
    kind, np_dtype, trt_type = "str", np.int8, "CHAR"

    def convert(self, value, plugin):
        if not isinstance(value, str):
            raise self._error(plugin, f"must be a str, got {value!r}")
        return value

    def to_array(self, value):
        return np.frombuffer(value.encode(), dtype=np.int8).copy()

    def from_array(self, data, plugin):
        raw = np.asarray(data).astype(np.int8).tobytes()
        return self.convert(raw.split(b"\0", 1)[0].decode(), plugin)


class Ints(Field):
    kind, np_dtype, trt_type = "ints", np.int32, "INT32"

    def convert(self, value, plugin):
        try:
            return tuple(Int.convert(self, v, plugin) for v in value)
        except TypeError:
            raise self._error(plugin, f"must be a sequence of ints, got {value!r}") from None


class Floats(Field):
    kind, np_dtype, trt_type = "floats", np.float32, "FLOAT32"

    def convert(self, value, plugin):
        try:
            return tuple(Float.convert(self, v, plugin) for v in value)
        except TypeError:
            raise self._error(plugin, f"must be a sequence of numbers, got {value!r}") from None


# ---- inputs, outputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    """An input tensor: its name and the dtypes the kernels accept (LINEAR format)."""

    name: str
    dtypes: tuple[str, ...] = FLOATS
    same_as: str | None = None  # must have the dtype of this earlier input

    def __post_init__(self):
        if isinstance(self.dtypes, str):
            object.__setattr__(self, "dtypes", (self.dtypes,))


@dataclass(frozen=True)
class Output:
    """An output tensor: a fixed dtype ('int32') or the name of the input whose dtype it has."""

    name: str
    dtype: str


@dataclass(frozen=True)
class Buffer:
    """A tensor as the launch code sees it: device address, concrete shape, dtype name."""

    ptr: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


# ---- shapes: one rule for symbolic and concrete dimensions --------------------------------------------------


class SymDim:
    """A TensorRT dimension expression with Python arithmetic (+, -, *, //, int constants).

    The author's ``output_shapes`` receives ints for concrete shapes and SymDims inside TensorRT's
    ``get_output_shapes``; written with these operators (and :func:`ceil_div`, :func:`dim_max`, :func:`dim_min`),
    one rule serves both.
    """

    __slots__ = ("expr", "builder")

    def __init__(self, expr: Any, builder: Any) -> None:
        self.expr = expr
        self.builder = builder

    def known(self) -> int | None:
        """The value when the builder knows it (a static dimension), else None."""
        return int(self.expr.get_constant_value()) if self.expr.is_constant() else None

    def __int__(self) -> int:
        value = self.known()
        if value is None:
            raise PluginError("this dimension is only known at run time; the shape rule needs it to be static")
        return value

    __index__ = __int__

    def __repr__(self) -> str:
        value = self.known()
        return f"SymDim({value if value is not None else '?'})"

    def __add__(self, other):
        return _sym_op("SUM", self, other)

    def __radd__(self, other):
        return _sym_op("SUM", other, self)

    def __sub__(self, other):
        return _sym_op("SUB", self, other)

    def __rsub__(self, other):
        return _sym_op("SUB", other, self)

    def __mul__(self, other):
        return _sym_op("PROD", self, other)

    def __rmul__(self, other):
        return _sym_op("PROD", other, self)

    def __floordiv__(self, other):
        return _sym_op("FLOOR_DIV", self, other)

    def __rfloordiv__(self, other):
        return _sym_op("FLOOR_DIV", other, self)


def _operation(name: str):
    from trtx_base import backend

    return getattr(backend.trt.DimensionOperation, name)


def _as_expr(value: Any, builder: Any):
    if isinstance(value, SymDim):
        return value.expr
    return builder.constant(int(value))


def _sym_op(op: str, a: Any, b: Any) -> SymDim:
    builder = a.builder if isinstance(a, SymDim) else b.builder
    return SymDim(builder.operation(_operation(op), _as_expr(a, builder), _as_expr(b, builder)), builder)


def known(dim: Any) -> int | None:
    """The dimension's value if it is known now (an int, or a static SymDim), else None."""
    return dim.known() if isinstance(dim, SymDim) else int(dim)


def ceil_div(a: Any, b: Any) -> Any:
    if isinstance(a, SymDim) or isinstance(b, SymDim):
        return _sym_op("CEIL_DIV", a, b)
    return -(-int(a) // int(b))


def dim_max(a: Any, b: Any) -> Any:
    if isinstance(a, SymDim) or isinstance(b, SymDim):
        return _sym_op("MAX", a, b)
    return max(int(a), int(b))


def dim_min(a: Any, b: Any) -> Any:
    if isinstance(a, SymDim) or isinstance(b, SymDim):
        return _sym_op("MIN", a, b)
    return min(int(a), int(b))


# ---- the plugin declaration ---------------------------------------------------------------------------------

#: (namespace, name, version) -> Plugin subclass
PLUGINS: dict[tuple[str, str, str], type[Plugin]] = {}


class Plugin:
    """Base class of a plugin declaration. An instance is the plugin with its field values.

    Class attributes to declare: ``name``, ``version``, ``namespace``, fields (:class:`Int`, :class:`Float`,
    ...), ``inputs`` (:class:`Input`), ``outputs`` (:class:`Output`), ``kernels`` (the :class:`Kernel` objects,
    compiled by ``python -m plugins compile``), and ``repeat_inputs = True`` when the input list is a pattern
    repeated any number of times (NMS over several levels). Methods to write: :meth:`output_shapes`,
    :meth:`enqueue`, :meth:`reference`; optionally :meth:`validate` and :meth:`workspace_size`.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    namespace: ClassVar[str] = "trtx"
    inputs: ClassVar[Sequence[Input]] = ()
    outputs: ClassVar[Sequence[Output]] = ()
    kernels: ClassVar[Sequence[Kernel]] = ()
    repeat_inputs: ClassVar[bool] = False
    fields: ClassVar[dict[str, Field]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: dict[str, Field] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if isinstance(value, Field):
                    fields[attr] = value
        cls.fields = fields
        if "name" not in vars(cls):
            return  # an abstract intermediate class
        for out in cls.outputs:
            names = [i.name for i in cls.inputs]
            if out.dtype not in TABLE and out.dtype not in names:
                raise PluginError(
                    f"plugin {cls.name}: output {out.name!r} dtype {out.dtype!r} is neither a dtype nor an input"
                )
        key = (cls.namespace, cls.name, str(cls.version))
        old = PLUGINS.get(key)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise PluginError(f"plugin {cls.namespace}::{cls.name} v{cls.version} is defined twice: {old} and {cls}")
        PLUGINS[key] = cls

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(self.fields)
        if unknown:
            raise PluginError(
                f"plugin {self.name} has no field {', '.join(sorted(unknown))}; "
                f"fields: {', '.join(self.fields) or 'none'}"
            )
        resolved = {}
        for fname, field in self.fields.items():
            if fname in values:
                resolved[fname] = field.convert(values[fname], self.name)
            elif field.required:
                raise PluginError(f"plugin {self.name}: field {fname!r} is required ({field.describe()})")
            else:
                resolved[fname] = field.convert(field.default, self.name)
        self._values = resolved
        self.validate()

    # -- to write --
    def validate(self) -> None:
        """Check the fields together; raise :class:`PluginError` naming the field."""

    def output_shapes(self, *shapes: tuple) -> list[tuple]:
        """Output shapes from input shapes (ints, or SymDims inside TensorRT)."""
        raise NotImplementedError

    def workspace_size(self, shapes: Sequence[tuple[int, ...]], dtypes: Sequence[str]) -> int:
        """Scratch bytes ``enqueue`` needs for these (maximum) input shapes."""
        return 0

    def enqueue(self, inputs: list[Buffer], outputs: list[Buffer], workspace: int, stream: int) -> None:
        """Launch the kernel(s) on ``stream``; every output element must be written."""
        raise NotImplementedError

    def reference(self, inputs: list) -> list:
        """The torch implementation the kernels are checked against."""
        raise NotImplementedError

    # -- provided --
    def values(self) -> dict[str, Any]:
        return dict(self._values)

    def copy(self) -> Plugin:
        return type(self)(**self._values)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values == self._values  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self._values.items()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    @classmethod
    def functional_reference(cls, inputs: Sequence, **fields: Any) -> list:
        """``reference(inputs, **fields)`` as a plain function (module-level ``reference`` of each plugin)."""
        return list(cls(**fields).reference(list(inputs)))

    def input_spec(self, index: int) -> Input:
        return self.inputs[index % len(self.inputs)] if self.repeat_inputs else self.inputs[index]

    def _input_index(self, name: str, group: int = 0) -> int:
        names = [i.name for i in self.inputs]
        return group * len(self.inputs) + names.index(name)

    def check_dtypes(self, dtypes: Sequence[str]) -> None:
        """Raise :class:`PluginError` unless the plugin accepts inputs of these dtypes."""
        n, per = len(dtypes), len(self.inputs)
        if (self.repeat_inputs and (n == 0 or n % per)) or (not self.repeat_inputs and n != per):
            pattern = ", ".join(i.name for i in self.inputs)
            expected = f"a multiple of {per} ({pattern}, ...)" if self.repeat_inputs else f"{per} ({pattern})"
            raise PluginError(f"plugin {self.name} takes {expected} inputs, got {n}")
        for i, dt in enumerate(dtypes):
            spec = self.input_spec(i)
            if dt not in spec.dtypes:
                raise PluginError(
                    f"plugin {self.name}: input {i} ({spec.name}) is {dt}; supported: {', '.join(spec.dtypes)}"
                )
            if spec.same_as is not None:
                j = self._input_index(spec.same_as, i // per)
                if dtypes[j] != dt:
                    raise PluginError(
                        f"plugin {self.name}: input {i} ({spec.name}) is {dt} but {spec.same_as} is {dtypes[j]}"
                    )

    def output_dtypes(self, dtypes: Sequence[str]) -> list[str]:
        return [o.dtype if o.dtype in TABLE else dtypes[self._input_index(o.dtype)] for o in self.outputs]

    def concrete_shapes(self, shapes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
        """The shape rule on concrete shapes."""
        outs = self.output_shapes(*[tuple(int(d) for d in s) for s in shapes])
        if len(outs) != len(self.outputs):
            raise PluginError(
                f"plugin {self.name}: output_shapes gave {len(outs)} shapes for {len(self.outputs)} outputs"
            )
        result = [tuple(int(d) for d in s) for s in outs]
        for spec, shape in zip(self.outputs, result):
            if any(d < 0 for d in shape):
                raise PluginError(f"plugin {self.name}: output {spec.name} would have shape {shape}")
        return result

    def prepare(self) -> None:
        """Compile and load every kernel variant in the current CUDA context (before enqueue)."""
        for kernel in self.kernels:
            for variant in kernel.variants():
                variant.function()

    # -- running with torch --
    @classmethod
    def run(cls, inputs: Sequence, *, stream: Any = None, poison: bool = True, **fields: Any) -> list:
        """Run the kernels on torch CUDA tensors: ``cls(**fields).execute(inputs)``."""
        return cls(**fields).execute(inputs, stream=stream, poison=poison)

    def execute(self, inputs: Sequence, *, stream: Any = None, poison: bool = True) -> list:
        """Allocate outputs (NaN / int-min poisoned), run :meth:`enqueue` on torch's current stream, return outputs.

        This is exactly the code TensorRT's ``enqueue`` runs, with torch allocating the memory.
        """
        import torch

        for i, t in enumerate(inputs):
            if not isinstance(t, torch.Tensor) or not t.is_cuda:
                raise PluginError(f"plugin {self.name}: input {i} ({self.input_spec(i).name}) must be a CUDA tensor")
            if not t.is_contiguous():
                raise PluginError(f"plugin {self.name}: input {i} ({self.input_spec(i).name}) must be contiguous")
        dtypes = [name_of(t.dtype) for t in inputs]
        self.check_dtypes(dtypes)
        shapes = [tuple(t.shape) for t in inputs]
        device = inputs[0].device
        outs = []
        for shape, dt in zip(self.concrete_shapes(shapes), self.output_dtypes(dtypes)):
            out = torch.empty(shape, dtype=torch_dtype(dt), device=device)
            if poison:
                out.fill_(float("nan") if out.is_floating_point() else torch.iinfo(out.dtype).min)
            outs.append(out)
        ws_bytes = int(self.workspace_size(shapes, dtypes))
        workspace = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device=device)
        if poison:
            workspace.fill_(0xFF)
        run_stream = stream if stream is not None else torch.cuda.current_stream(device)
        with torch.cuda.device(device):
            self.enqueue(
                [Buffer(t.data_ptr(), tuple(t.shape), dt) for t, dt in zip(inputs, dtypes)],
                [Buffer(t.data_ptr(), tuple(t.shape), name_of(t.dtype)) for t in outs],
                workspace.data_ptr() if ws_bytes else 0,
                run_stream.cuda_stream,
            )
        if stream is not None:  # keep torch's allocator from reusing the memory before the stream is done
            for t in (*inputs, *outs, workspace):
                t.record_stream(stream)
        return outs

    # -- TensorRT --
    def trt_plugin(self):
        """This plugin as a TensorRT IPluginV3 object."""
        return _trt_classes()[0](self)

    def field_collection(self):
        """The fields as a TensorRT PluginFieldCollection (what the engine stores)."""
        trt = _trt()
        arrays = [(f, f.to_array(self._values[name])) for name, f in self.fields.items()]
        self._serialized = arrays  # PluginField borrows the arrays' memory
        return trt.PluginFieldCollection(
            [trt.PluginField(f.name, a, getattr(trt.PluginFieldType, f.trt_type)) for f, a in arrays]
        )

    @classmethod
    def from_field_collection(cls, collection: Iterable) -> Plugin:
        """Rebuild the plugin from a PluginFieldCollection (a deserialized engine, or a layer's fields)."""
        values = {}
        for pf in collection:
            name = pf.name.decode() if isinstance(pf.name, bytes) else str(pf.name)
            field = cls.fields.get(name)
            if field is None:
                raise PluginError(f"plugin {cls.name}: serialized field {name!r} is not a field of this version")
            values[name] = field.from_array(pf.data, cls.name)
        return cls(**values)

    @classmethod
    def add_to_network(cls, net: Any, inputs: Sequence, *, name: str | None = None, **fields: Any):
        """Append this plugin to ``net`` (a trtx Net) and record it in ``net.plugins`` for the engine metadata."""
        impl = cls(**fields)
        be = getattr(net, "backend", None)
        if be is None:
            from trtx_base import backend

            be = backend.get()
        if not be.has_plugin_layers:
            raise PluginError(
                f"plugin {cls.name}: {be.name} {be.version} has no plugin layers (INetworkDefinition.add_plugin_v3); "
                f"mark its inputs as network outputs and run plugins.{cls.__module__.rsplit('.', 1)[-1]}.run(...) "
                "(GPU kernels) or .reference(...) (torch) on them after the engine"
            )
        register(cls)
        plugin = impl.trt_plugin()
        layer = net.network.add_plugin_v3(list(inputs), [], plugin)
        if layer is None:
            said = " | ".join(net.logger.errors()) if hasattr(net, "logger") else ""
            raise PluginError(f"TensorRT refused plugin layer {cls.name} ({name or 'unnamed'}): {said or 'no message'}")
        keep = net.__dict__.setdefault("_trtx_plugin_objects", [])
        keep.append(plugin)
        entry = metadata_entry(cls)
        if entry not in net.plugins:
            net.plugins.append(entry)
        if name:
            net.name(layer, name)
        return layer

    @classmethod
    def describe(cls) -> str:
        lines = [f"{cls.namespace}::{cls.name} v{cls.version}  ({cls.__module__})"]
        doc = (cls.__doc__ or "").strip().splitlines()
        if doc:
            lines.append(f"  {doc[0]}")
        repeat = " (repeated)" if cls.repeat_inputs else ""
        for field in cls.fields.values():
            lines.append(f"  field  {field.describe()}")
        for spec in cls.inputs:
            same = f", same dtype as {spec.same_as}" if spec.same_as else ""
            lines.append(f"  input  {spec.name}: {' | '.join(spec.dtypes)}{same}{repeat}")
        for spec in cls.outputs:
            dt = spec.dtype if spec.dtype in TABLE else f"dtype of {spec.dtype}"
            lines.append(f"  output {spec.name}: {dt}")
        return "\n".join(lines)


def metadata_entry(cls: type[Plugin]) -> dict[str, str]:
    return {"name": cls.name, "version": str(cls.version), "namespace": cls.namespace}


# ---- discovery, registration --------------------------------------------------------------------------------

_INFRASTRUCTURE = {"core", "compiler", "kernel", "__main__"}


def discover() -> list[str]:
    """Import every module of the plugins package (each defines its plugins and kernels); return their names."""
    import plugins

    names = []
    for info in pkgutil.iter_modules(plugins.__path__):
        if info.name in _INFRASTRUCTURE or info.name.startswith("_"):
            continue
        module = f"plugins.{info.name}"
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise PluginError(f"cannot import {module}: {type(exc).__name__}: {exc}") from exc
        names.append(module)
    return names


def find(name: str, version: str = "1", namespace: str = "trtx") -> type[Plugin]:
    """The Plugin class with this name, version and namespace (importing the plugins package's modules)."""
    key = (namespace, name, str(version))
    if key not in PLUGINS:
        discover()
    try:
        return PLUGINS[key]
    except KeyError:
        known_ = ", ".join(f"{ns}::{n} v{v}" for ns, n, v in sorted(PLUGINS)) or "none"
        raise PluginError(
            f"no plugin {namespace}::{name} version {version} in trtx's plugins (known: {known_})"
        ) from None


def _trt():
    from trtx_base import backend

    return backend.trt


_creators: dict[tuple[str, str, str], Any] = {}
_register_lock = threading.Lock()


def register(cls: type[Plugin]):
    """Register ``cls``'s creator in TensorRT's plugin registry (once); returns the creator."""
    key = (cls.namespace, cls.name, str(cls.version))
    with _register_lock:
        if key in _creators:
            return _creators[key]
        trt = _trt()
        registry = trt.get_plugin_registry()
        existing = registry.get_creator(cls.name, str(cls.version), cls.namespace)
        if existing is not None:
            raise PluginError(
                f"TensorRT's plugin registry already holds a different creator for {cls.namespace}::{cls.name} "
                f"v{cls.version} ({type(existing).__name__}); rename or re-version one of them"
            )
        creator = _trt_classes()[1](cls)
        if not registry.register_creator(creator, cls.namespace):
            raise PluginError(f"TensorRT refused to register plugin creator {cls.namespace}::{cls.name} v{cls.version}")
        _creators[key] = creator
        return creator


def register_from_metadata(meta: Mapping[str, Any] | Sequence[Mapping[str, str]]) -> list[type[Plugin]]:
    """Register every plugin an engine uses (``meta["plugins"]`` of its .json) before deserializing it."""
    entries = meta.get("plugins", []) if isinstance(meta, Mapping) else meta
    classes = []
    for entry in entries or []:
        try:
            name, version, namespace = entry["name"], str(entry.get("version", "1")), entry.get("namespace", "")
        except (KeyError, TypeError, AttributeError):
            raise PluginError(f"engine metadata has a malformed plugin entry {entry!r}") from None
        try:
            cls = find(name, version, namespace)
        except PluginError as exc:
            raise PluginError(
                f"the engine needs plugin {namespace}::{name} v{version}, which is not available: {exc}"
            ) from None
        register(cls)
        classes.append(cls)
    return classes


def plugin_of(obj: Any) -> Plugin:
    """Our Plugin instance behind a plugin layer, an IPluginV3 object, or a Plugin."""
    if isinstance(obj, Plugin):
        return obj
    plugin = getattr(obj, "plugin", obj)  # IPluginV3Layer.plugin
    impl = getattr(plugin, "impl", None)
    if isinstance(impl, Plugin):
        return impl
    trt = _trt()
    try:
        core_if = plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
        runtime_if = plugin.get_capability_interface(trt.PluginCapabilityType.RUNTIME)
        name, version, namespace = core_if.plugin_name, core_if.plugin_version, core_if.plugin_namespace
    except Exception as exc:
        where = getattr(obj, "name", type(obj).__name__)
        raise PluginError(f"layer {where}: not an IPluginV3 plugin layer ({type(exc).__name__}: {exc})") from None
    cls = find(name, version, namespace)
    return cls.from_field_collection(runtime_if.get_fields_to_serialize())


def reference_for_layer(layer: Any) -> Callable[[list], list]:
    """The torch reference of a plugin layer (IPluginV3Layer), bound to the layer's field values."""
    impl = plugin_of(layer)
    return lambda inputs: list(impl.reference(list(inputs)))


# ---- the TensorRT classes (built on first use: TensorRT is not imported before) ------------------------------


@cache
def _trt_classes():
    trt = _trt()

    class TrtxPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        """IPluginV3 for any :class:`Plugin`: every method delegates to the declaration in ``self.impl``."""

        def __init__(self, impl: Plugin) -> None:
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.impl = impl
            self.plugin_name = impl.name
            self.plugin_version = str(impl.version)
            self.plugin_namespace = impl.namespace
            self.num_outputs = len(impl.outputs)
            # plugins with equal fields time alike: TensorRT may reuse one timing for all of them
            self.timing_cache_id = json.dumps(impl.values(), sort_keys=True)

        # core
        def get_capability_interface(self, type):
            return self

        def clone(self):
            return TrtxPlugin(self.impl.copy())

        # build
        def get_output_data_types(self, input_types):
            dtypes = [name_of(t) for t in input_types]
            return [trt_dtype(d) for d in self.impl.output_dtypes(dtypes)]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            shapes = [tuple(SymDim(dims[i], expr_builder) for i in range(len(dims))) for dims in inputs]
            outs = self.impl.output_shapes(*shapes)
            return [trt.DimsExprs([_as_expr(d, expr_builder) for d in shape]) for shape in outs]

        def supports_format_combination(self, pos, in_out, num_inputs):
            return supports_combination(self.impl, pos, [d.desc for d in in_out], num_inputs)

        def configure_plugin(self, inp, out):
            pass

        def get_workspace_size(self, inp, out):
            shapes = [tuple(d.max) for d in inp]
            return int(self.impl.workspace_size(shapes, [name_of(d.desc.type) for d in inp]))

        def get_valid_tactics(self):
            return []

        # runtime
        def set_tactic(self, tactic):
            pass

        def on_shape_change(self, inp, out):
            self.impl.prepare()

        def attach_to_context(self, context):
            return self.clone()

        def get_fields_to_serialize(self):
            return self.impl.field_collection()

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            ins = [Buffer(int(p), tuple(d.dims), name_of(d.type)) for d, p in zip(input_desc, inputs)]
            outs = [Buffer(int(p), tuple(d.dims), name_of(d.type)) for d, p in zip(output_desc, outputs)]
            self.impl.enqueue(ins, outs, int(workspace), int(stream))

        def destroy(self):
            pass

    class TrtxPluginCreator(trt.IPluginCreatorV3One):
        """IPluginCreatorV3One for one Plugin class: builds plugins from (deserialized) fields."""

        def __init__(self, cls: type[Plugin]) -> None:
            trt.IPluginCreatorV3One.__init__(self)
            self.cls = cls
            self.name = cls.name
            self.plugin_version = str(cls.version)
            self.plugin_namespace = cls.namespace
            self._empty = [(f, np.zeros(0, dtype=f.np_dtype)) for f in cls.fields.values()]
            self.field_names = trt.PluginFieldCollection(
                [trt.PluginField(f.name, a, getattr(trt.PluginFieldType, f.trt_type)) for f, a in self._empty]
            )

        def create_plugin(self, name, field_collection, phase):
            return TrtxPlugin(self.cls.from_field_collection(field_collection))

    return TrtxPlugin, TrtxPluginCreator


def supports_combination(impl: Plugin, pos: int, descs: Sequence[Any], num_inputs: int) -> bool:
    """TensorRT's supports_format_combination on PluginTensorDescs: LINEAR, declared dtypes, consistent outputs."""
    trt = _trt()
    desc = descs[pos]
    if desc.format != trt.TensorFormat.LINEAR:
        return False
    dt = name_of(desc.type)
    per = len(impl.inputs)
    if pos < num_inputs:
        if (impl.repeat_inputs and num_inputs % per) or (not impl.repeat_inputs and num_inputs != per):
            return False
        spec = impl.input_spec(pos)
        if dt not in spec.dtypes:
            return False
        if spec.same_as is not None:
            j = impl._input_index(spec.same_as, pos // per)
            return j >= pos or name_of(descs[j].type) == dt
        return True
    out = impl.outputs[pos - num_inputs]
    if out.dtype in TABLE:
        return dt == out.dtype
    return dt == name_of(descs[impl._input_index(out.dtype)].type)
