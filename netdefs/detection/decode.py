"""In-network decode helpers a detector's ``decode`` uses after its own box decoding (anchors, priors, DFL)."""

from __future__ import annotations

from netdefs.common import reshape
from trtx.net import Net


def best_class(net: Net, class_scores, name: str):
    """Every box's best class and its score: ``class_scores`` [B, N, C] -> (scores [B, N], classes [B, N] int32),
    ``class_scores.max(2)`` as one TensorRT TopK layer named ``name``."""
    n = int(class_scores.shape[1])
    best = net.name(net.network.add_topk(class_scores, net.trt.TopKOperation.MAX, 1, 1 << 2), name)
    return reshape(net, best.get_output(0), (0, n), f"{name}.scores"), reshape(
        net, best.get_output(1), (0, n), f"{name}.classes"
    )
