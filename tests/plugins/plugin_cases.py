"""Inputs shared by the plugin tests: YOLOv5s-like heads and clustered detection records."""

from __future__ import annotations

import torch

#: YOLOv5 v7.0 P3-P5 anchors (pixels) and strides
ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
STRIDES = (8, 16, 32)


def random_head(batch: int, h: int, w: int, *, nc: int = 80, na: int = 3, seed: int = 0, obj_shift: float = -4.0):
    """Raw Detect conv output [B, na*(5+nc), H, W] on the CPU, fp32; each image gets a different objectness
    shift, so images of a batch have different numbers of candidates."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, na, 5 + nc, h, w, generator=g) * 2
    for b in range(batch):
        x[b, :, 4] += obj_shift + 1.5 * (b % 3)
    return x.view(batch, na * (5 + nc), h, w)


def clustered_records(batch: int, n: int, *, classes: int = 3, seed: int = 0, tie_scores: bool = True):
    """(num [B] int32, dets [B, n, 8]) of heavily overlapping boxes; scores rounded to 0.01 when tie_scores,
    so many records tie on score and the (input, anchor_index) tie-break decides."""
    g = torch.Generator().manual_seed(seed)
    dets = torch.zeros(batch, n, 8)
    num = torch.zeros(batch, dtype=torch.int32)
    for b in range(batch):
        centers = torch.rand(12, 2, generator=g) * 600
        dets[b, :, 0:2] = centers[torch.randint(0, 12, (n,), generator=g)] + torch.randn(n, 2, generator=g) * 12
        dets[b, :, 2:4] = torch.rand(n, 2, generator=g) * 80 + 10
        score = torch.rand(n, generator=g) * 0.8 + 0.2
        dets[b, :, 4] = (score * 100).round() / 100 if tie_scores else score
        dets[b, :, 5] = torch.randint(0, classes, (n,), generator=g).float()
        dets[b, :, 7] = torch.randperm(4 * n, generator=g)[:n].float()
        num[b] = n - 7 * b  # fewer valid rows in later images
    return num, dets


class Expr:
    """A stand-in for TensorRT's IDimensionExpr: a constant or a named symbol, or an operation on two."""

    def __init__(self, op, a=None, b=None):
        self.op, self.a, self.b = op, a, b

    def is_constant(self):
        return self.op == "const"

    def get_constant_value(self):
        return self.a

    def eval(self, env):
        if self.op == "const":
            return self.a
        if self.op == "sym":
            return env[self.a]
        a, b = self.a.eval(env), self.b.eval(env)
        ops = {"SUM": int.__add__, "SUB": int.__sub__, "PROD": int.__mul__, "FLOOR_DIV": int.__floordiv__,
               "CEIL_DIV": lambda a, b: -(-a // b), "MAX": max, "MIN": min}  # fmt: skip
        return ops[self.op.name](a, b)


class Builder:
    """The two IExprBuilder calls the shape rule makes, building Expr trees (a real IExprBuilder needs a TensorRT
    builder that supports plugins)."""

    def constant(self, value):
        return Expr("const", value)

    def operation(self, op, a, b):
        return Expr(op, a, b)


def symbolic(template, builder):
    """Input shapes of SymDims from a template: a str is a symbol (batch "B", "H", "W"), an int a constant."""
    from plugins.shapes import SymDim

    return [tuple(SymDim(Expr("sym" if isinstance(d, str) else "const", d), builder) for d in s) for s in template]


def concrete(template, env):
    return [tuple(env[d] if isinstance(d, str) else d for d in s) for s in template]


def evaluate(value, builder, env):
    """A launch value (int or SymDim, or a sequence of them) evaluated at the symbols' values ``env``."""
    from plugins.shapes import as_expr

    if isinstance(value, (tuple, list)):
        return tuple(evaluate(v, builder, env) for v in value)
    return as_expr(value, builder).eval(env)


RF_SIZE = (64, 96)  # retinaface_decode input: 8x12, 4x6, 2x3 cells x 2 sizes = 252 priors
RF_PRIORS = 252


def aot_cases():
    """Every plugin of plugins/ops: (a non-default instance, its input shape template, the dtype sets to test).
    A new plugin needs an entry here (tests/plugins/test_plugins_aot.py checks the list is complete)."""
    from plugins.ops.dfl_decode import DflDecode
    from plugins.ops.nms import Nms
    from plugins.ops.retinaface_decode import RetinafaceDecode
    from plugins.ops.rotated_nms import RotatedNms
    from plugins.ops.swish import Swish
    from plugins.ops.yolo_decode import YoloDecode

    floats = [("float32",), ("float16",)]
    return {
        "swish": (Swish(beta=1.3), [("B", 3, "H", "W")], floats),
        "yolo_decode": (
            YoloDecode(num_classes=3, anchors=ANCHORS[1], stride=16, conf_threshold=0.3, max_det=77, level=1),
            [("B", 3 * (5 + 3), "H", "W")],
            floats,
        ),
        "nms": (
            Nms(iou_threshold=0.6, score_threshold=0.1, max_det=50, agnostic=True),
            [("B",), ("B", 100, 8), ("B",), ("B", 30, 8)],
            [("int32", "float32") * 2],
        ),
        "dfl_decode": (
            DflDecode(
                num_classes=3,
                reg_max=8,
                strides=(8, 16),
                height=160,
                width=96,
                angle=True,
                conf_threshold=0.3,
                max_det=77,
            ),  # fmt: skip
            [("B", 4 * 8 + 3 + 1, 20 * 12 + 10 * 6)],
            floats,
        ),
        "rotated_nms": (
            RotatedNms(iou_threshold=0.6, score_threshold=0.1, max_det=50, class_offset=0.0),
            [("B",), ("B", 100, 8)],
            [("int32", "float32")],
        ),
        "retinaface_decode": (
            RetinafaceDecode(height=RF_SIZE[0], width=RF_SIZE[1], conf_threshold=0.4, max_det=100),
            [("B", RF_PRIORS, 4), ("B", RF_PRIORS, 2), ("B", RF_PRIORS, 10)],
            [d * 3 for d in floats],
        ),
    }
