"""Run a real ``INetworkDefinition`` in PyTorch: ``execute(network, feeds, device="cpu", keep=None)``.

The executor walks the network the builder will see (layers read back through the backend's layer classes,
weights included) and computes each layer with one small function per ``trt.LayerType``; see docs/reference.md.
"""

from trtx.reference import nms, nn, plugin, pointwise, quant, reductions, resample, tensor  # noqa: F401  (register ops)
from trtx.reference.core import (
    LayerCall,
    NotImplementedInReference,
    ReferenceExecutionError,
    execute,
    implemented_kinds,
    implements,
    registry,
)

__all__ = [
    "LayerCall",
    "NotImplementedInReference",
    "ReferenceExecutionError",
    "execute",
    "implemented_kinds",
    "implements",
    "registry",
]
