"""The TensorRT side of a declaration: an ``IPluginV3`` (``IPluginV3OneCore/OneBuild/OneRuntime``) and its
``IPluginCreatorV3One``, every method delegating to the :class:`~plugins.plugin.Plugin` it wraps, and the
plugin's fields as TensorRT ``PluginField``\\ s.

The classes derive from the backend's TensorRT classes, so they are made on first use: importing this module
does not import TensorRT.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import numpy as np

from plugins.errors import PluginError
from plugins.plugin import Buffer, Plugin
from plugins.shapes import SymDim, as_expr
from trtx_base.dtypes import TABLE, name_of, trt_dtype


def trt_module():
    from trtx_base import backend

    return backend.trt


def field_collection(plugin: Plugin):
    """The fields as a TensorRT PluginFieldCollection (what the engine stores)."""
    trt = trt_module()
    arrays = [(f, f.to_array(plugin._values[name])) for name, f in plugin.fields.items()]
    plugin._serialized = arrays  # PluginField borrows the arrays' memory
    return trt.PluginFieldCollection(
        [trt.PluginField(f.name, a, getattr(trt.PluginFieldType, f.trt_type)) for f, a in arrays]
    )


def from_field_collection(cls: type[Plugin], collection: Iterable) -> Plugin:
    """Rebuild a ``cls`` plugin from a PluginFieldCollection (a deserialized engine, or a layer's fields)."""
    values = {}
    for pf in collection:
        name = pf.name.decode() if isinstance(pf.name, bytes) else str(pf.name)
        field = cls.fields.get(name)
        if field is None:
            raise PluginError(f"plugin {cls.name}: serialized field {name!r} is not a field of this version")
        values[name] = field.from_array(pf.data, cls.name)
    return cls(**values)


@cache
def trt_classes():
    """(IPluginV3 class, IPluginCreatorV3One class) for any Plugin, built on the loaded backend."""
    trt = trt_module()

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
            return [trt.DimsExprs([as_expr(d, expr_builder) for d in shape]) for shape in outs]

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
    trt = trt_module()
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
            j = impl.input_index(spec.same_as, pos // per)
            return j >= pos or name_of(descs[j].type) == dt
        return True
    out = impl.outputs[pos - num_inputs]
    if out.dtype in TABLE:
        return dt == out.dtype
    return dt == name_of(descs[impl.input_index(out.dtype)].type)
