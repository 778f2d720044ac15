"""The plugin declaration (:class:`Plugin`) and its execution on torch tensors.

A plugin author subclasses :class:`Plugin` (docs/plugins.md, plugins/ops/swish.py): name, fields, inputs,
outputs, one shape rule, the launch and a torch reference. :meth:`Plugin.execute` runs exactly the launch
TensorRT's ``enqueue`` runs, on torch CUDA tensors; the TensorRT side lives in :mod:`plugins.adapter` and
:mod:`plugins.registry`. Neither torch nor TensorRT is imported when this module is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from plugins.errors import PluginError
from plugins.fields import Field, Input, Output
from plugins.kernel import Kernel
from trtx_base.dtypes import TABLE, name_of, torch_dtype


@dataclass(frozen=True)
class Buffer:
    """A tensor as the launch code sees it: device address, concrete shape, dtype name."""

    ptr: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


#: (namespace, name, version) -> Plugin subclass; every subclass with a ``name`` adds itself when defined
PLUGINS: dict[tuple[str, str, str], type[Plugin]] = {}


class Plugin:
    """Base class of a plugin declaration. An instance is the plugin with its field values.

    Class attributes to declare: ``name``, ``version``, ``namespace``, fields (:class:`~plugins.fields.Int`,
    :class:`~plugins.fields.Float`, ...), ``inputs`` (:class:`Input`), ``outputs`` (:class:`Output`),
    ``kernels`` (the :class:`Kernel` objects, compiled by ``python -m plugins compile``), and
    ``repeat_inputs = True`` when the input list is a pattern repeated any number of times (NMS over several
    levels). Methods to write: :meth:`output_shapes`, :meth:`enqueue`, :meth:`reference`; optionally
    :meth:`validate` and :meth:`workspace_size`.
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

    def aot_launch(self, shapes: list[tuple], dtypes: list[str]):
        """The ahead-of-time form (:class:`plugins.aot.AotLaunch`: one kernel entry and its launch, from input
        shapes of ints or SymDims), which TensorRT >= 10.9 builds into the engine; None: the plugin has none."""
        return None

    @classmethod
    def has_aot(cls) -> bool:
        """Whether the declaration has an ahead-of-time form (writes :meth:`aot_launch`)."""
        return cls.aot_launch is not Plugin.aot_launch

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

    def input_index(self, name: str, group: int = 0) -> int:
        """Position of input ``name`` in the input list (in repetition ``group`` of a repeated pattern)."""
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
                j = self.input_index(spec.same_as, i // per)
                if dtypes[j] != dt:
                    raise PluginError(
                        f"plugin {self.name}: input {i} ({spec.name}) is {dt} but {spec.same_as} is {dtypes[j]}"
                    )

    def output_dtypes(self, dtypes: Sequence[str]) -> list[str]:
        return [o.dtype if o.dtype in TABLE else dtypes[self.input_index(o.dtype)] for o in self.outputs]

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
    def run(
        cls, inputs: Sequence, *, stream: Any = None, poison: bool = True, aot: bool = False, **fields: Any
    ) -> list:
        """Run the kernels on torch CUDA tensors: ``cls(**fields).execute(inputs)``."""
        return cls(**fields).execute(inputs, stream=stream, poison=poison, aot=aot)

    def execute(self, inputs: Sequence, *, stream: Any = None, poison: bool = True, aot: bool = False) -> list:
        """Allocate outputs (NaN / int-min poisoned), run :meth:`enqueue` on torch's current stream, return outputs.

        This is exactly the code TensorRT's ``enqueue`` runs, with torch allocating the memory. ``aot=True``
        launches the ahead-of-time contract instead (:func:`plugins.aot.contract`: the PTX, grid, block, shared
        memory and arguments TensorRT would launch from an engine), with no workspace.
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
        ws_bytes = 0 if aot else int(self.workspace_size(shapes, dtypes))
        workspace = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device=device)
        if poison:
            workspace.fill_(0xFF)
        run_stream = stream if stream is not None else torch.cuda.current_stream(device)
        with torch.cuda.device(device):
            if aot:
                from plugins import aot as ahead_of_time

                contract = ahead_of_time.contract(self, shapes, dtypes)
                ahead_of_time.launch(contract, inputs, outs, run_stream.cuda_stream)
            else:
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

    # -- TensorRT (plugins.adapter, plugins.registry) --
    def trt_plugin(self):
        """This plugin as a TensorRT IPluginV3 object."""
        from plugins import adapter

        return adapter.trt_classes()[0](self)

    def field_collection(self):
        """The fields as a TensorRT PluginFieldCollection (what the engine stores)."""
        from plugins import adapter

        return adapter.field_collection(self)

    @classmethod
    def from_field_collection(cls, collection) -> Plugin:
        """Rebuild the plugin from a PluginFieldCollection (a deserialized engine, or a layer's fields)."""
        from plugins import adapter

        return adapter.from_field_collection(cls, collection)

    @classmethod
    def add_to_network(
        cls, net: Any, inputs: Sequence, *, name: str | None = None, aot: bool | None = None, **fields: Any
    ):
        """Append this plugin to ``net`` (a trtx Net) and record it in ``net.plugins`` for the engine metadata.

        ``aot``: build the kernel into the engine (TensorRT >= 10.9, plugins with an :meth:`aot_launch`); None
        (default) does so wherever the backend and the plugin can, False keeps the IPluginV3 layer.
        """
        from plugins import registry

        return registry.add_to_network(cls, net, inputs, name=name, aot=aot, **fields)

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
        aot = "yes: the kernel is built into the engine on TensorRT >= 10.9" if cls.has_aot() else "no"
        lines.append(f"  ahead-of-time: {aot}")
        return "\n".join(lines)
