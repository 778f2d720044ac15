"""A TensorRT plugin from a declaration: fields, dtypes, one shape rule, a kernel launch and a torch reference.

The one module a plugin file imports (docs/plugins.md, plugins/ops/swish.py). What it gathers lives in:

* :mod:`plugins.fields` -- typed fields (:class:`Int`, :class:`Float`, ...), :class:`Input`, :class:`Output`;
* :mod:`plugins.shapes` -- :class:`SymDim` and :func:`ceil_div` / :func:`dim_max` / :func:`dim_min` /
  :func:`known`: one shape rule for TensorRT's symbolic dimensions and for ints;
* :mod:`plugins.plugin` -- the :class:`Plugin` base class and its execution on torch tensors;
* :mod:`plugins.adapter` -- the TensorRT ``IPluginV3`` and ``IPluginCreatorV3One`` made from a declaration;
* :mod:`plugins.registry` -- discovery of ``plugins.ops``, TensorRT's plugin registry, engine metadata,
  :func:`reference_for_layer`;
* :mod:`plugins.kernel` -- :class:`Kernel` (NVRTC-compiled CUDA C++), :func:`blocks`, :func:`memset32`;
* :mod:`plugins.aot` -- :class:`AotLaunch`: the kernel TensorRT >= 10.9 builds into the engine (no Python at
  run time), its launch contract, and the ``tensorrt.plugin`` registration generated from the declaration.

Neither torch nor TensorRT is imported when this module is imported.
"""

from __future__ import annotations

from plugins.aot import AotLaunch
from plugins.compiler import CompileError
from plugins.errors import PluginError
from plugins.fields import FLOATS, Bool, Field, Float, Floats, Input, Int, Ints, Output, Str
from plugins.kernel import CudaError, Kernel, LaunchError, blocks, memset32
from plugins.plugin import PLUGINS, Buffer, Plugin
from plugins.registry import (
    add_to_network,
    discover,
    find,
    metadata_entry,
    plugin_of,
    reference_for_layer,
    register,
    register_from_metadata,
)
from plugins.shapes import SymDim, ceil_div, dim_max, dim_min, known

__all__ = [
    "FLOATS",
    "AotLaunch",
    "PLUGINS",
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
    "SymDim",
    "add_to_network",
    "blocks",
    "ceil_div",
    "dim_max",
    "dim_min",
    "discover",
    "find",
    "known",
    "memset32",
    "metadata_entry",
    "plugin_of",
    "reference_for_layer",
    "register",
    "register_from_metadata",
]
