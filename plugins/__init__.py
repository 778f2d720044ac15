"""trtx plugins: TensorRT plugins written as one small Python file + a CUDA kernel each.

Layout: the concrete plugins are the modules of ``plugins.ops`` (``plugins/ops/nms.py`` + ``nms.cu``, ...);
the machinery beside them: ``core`` (what a plugin file imports), ``fields``, ``shapes``, ``plugin`` (the
declaration and its torch execution), ``adapter`` (the TensorRT IPluginV3), ``registry``, and ``kernel`` /
``compiler`` (NVRTC compile and launch of any CUDA kernel, usable on its own). ``python -m plugins
list|compile`` lists plugins and compiles every kernel. Importing this package imports neither torch nor TensorRT.

``from plugins import nms`` (any plugin of ``plugins.ops``) imports ``plugins.ops.nms``.
"""

from __future__ import annotations

import importlib
import importlib.util


def __getattr__(name: str):
    if not name.startswith("_") and importlib.util.find_spec(f"plugins.ops.{name}") is not None:
        return importlib.import_module(f"plugins.ops.{name}")
    raise AttributeError(f"module 'plugins' has no attribute {name!r}")
