"""Run a real ``INetworkDefinition`` in PyTorch: ``compile(network, device)`` -> a plan called on feeds, or
``execute(network, feeds, device="cpu", keep=None)`` for one run.

The executor walks the network the builder will see (layers read back through the backend's layer classes,
weights included) and computes each layer with one small function per ``trt.LayerType``; see docs/reference.md.
"""

from trtx.reference import (  # noqa: F401  (register ops)
    attention,
    nms,
    nn,
    plugin,
    pointwise,
    quant,
    reductions,
    resample,
    tensor,
)
from trtx.reference.core import (
    REFUSED,
    FrozenLayer,
    LayerCall,
    NotImplementedInReference,
    ReferenceExecutionError,
    implemented_kinds,
    implements,
    registry,
)
from trtx.reference.plan import Plan, compile, execute  # noqa: A004

__all__ = [
    "REFUSED",
    "FrozenLayer",
    "LayerCall",
    "NotImplementedInReference",
    "Plan",
    "ReferenceExecutionError",
    "compile",
    "execute",
    "implemented_kinds",
    "implements",
    "registry",
]
