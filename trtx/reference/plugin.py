"""Plugin layers run their plugin's registered torch reference (``plugins.core.reference_for_layer``)."""

from __future__ import annotations

import importlib

import torch

from trtx.reference.core import LayerCall, NotImplementedInReference, implements


@implements("PLUGIN_V2", "PLUGIN_V3")
def plugin(call: LayerCall) -> list[torch.Tensor]:
    try:
        core = importlib.import_module("plugins.core")
    except ImportError as exc:
        raise NotImplementedInReference(
            f"{call.where()}: plugin layers need plugins.core.reference_for_layer, which cannot be imported ({exc})"
        ) from None
    reference_for_layer = getattr(core, "reference_for_layer", None)
    if reference_for_layer is None:
        raise NotImplementedInReference(f"{call.where()}: plugins.core has no reference_for_layer")
    fn = reference_for_layer(call.raw)
    if fn is None:
        raise NotImplementedInReference(f"{call.where()}: its plugin registers no torch reference")
    outputs = list(fn([x.contiguous() for x in call.inputs]))  # TensorRT hands plugins linear (row-major) tensors
    return outputs
