"""One shape rule for symbolic and concrete dimensions.

A plugin's ``output_shapes`` receives ints for concrete shapes and :class:`SymDim`\\ s inside TensorRT's
``get_output_shapes``; written with ``+ - * //`` and :func:`ceil_div`, :func:`dim_max`, :func:`dim_min`, one
rule serves both.
"""

from __future__ import annotations

from typing import Any

from plugins.errors import PluginError


class SymDim:
    """A TensorRT dimension expression with Python arithmetic (+, -, *, //, int constants).

    ``expr`` is an ``IDimensionExpr`` (or anything with ``is_constant()`` / ``get_constant_value()``) and
    ``builder`` the ``IExprBuilder`` that makes new ones (``constant(int)``, ``operation(op, a, b)``).
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


def as_expr(value: Any, builder: Any):
    """``value`` (a SymDim or an int) as an expression of ``builder``."""
    if isinstance(value, SymDim):
        return value.expr
    return builder.constant(int(value))


def _sym_op(op: str, a: Any, b: Any) -> SymDim:
    builder = a.builder if isinstance(a, SymDim) else b.builder
    return SymDim(builder.operation(_operation(op), as_expr(a, builder), as_expr(b, builder)), builder)


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
