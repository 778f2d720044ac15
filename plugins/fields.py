"""What a plugin declares besides its code: typed fields (serialized into the engine) and its inputs and outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from plugins.errors import PluginError

FLOATS = ("float32", "float16")
_REQUIRED = object()


class Field:
    """A plugin attribute: typed, with a default, serialized into the engine as a TensorRT PluginField."""

    kind = "?"
    np_dtype: Any = None
    trt_type = ""  # PluginFieldType member

    def __init__(self, default: Any = _REQUIRED, doc: str = "") -> None:
        self.default = default
        self.doc = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._values[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"field {self.name!r} is read-only; create a new plugin with other values")

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def convert(self, value: Any, plugin: str) -> Any:
        """Check and normalize a value (floats are rounded to float32: what the kernel and engine see)."""
        raise NotImplementedError

    def to_array(self, value: Any) -> np.ndarray:
        return np.array(value if isinstance(value, tuple) else [value], dtype=self.np_dtype)

    def from_array(self, data: Any, plugin: str) -> Any:
        arr = np.asarray(data).astype(self.np_dtype).ravel()
        return self.convert(tuple(arr.tolist()) if self.kind.endswith("s") else _single(arr, self, plugin), plugin)

    def c_literal(self, value: Any) -> str:
        """``value`` as a C++ expression of exactly this value (kernels built with the field as a constant)."""
        raise NotImplementedError

    def describe(self) -> str:
        default = "required" if self.required else f"default {self.default!r}"
        return f"{self.name}: {self.kind} ({default}){' -- ' + self.doc if self.doc else ''}"

    def _error(self, plugin: str, msg: str) -> PluginError:
        return PluginError(f"plugin {plugin}: field {self.name!r} {msg}")


def _single(arr: np.ndarray, field: Field, plugin: str):
    if arr.size != 1:
        raise field._error(plugin, f"holds {arr.size} values, expected 1")
    return arr[0].item()


def _f32(value: float) -> float:
    return float(np.float32(value))


def _c_float(value: float) -> str:
    """A float32 value as an exact C++ expression: a hexadecimal literal, or the bits for inf and NaN."""
    if np.isfinite(value):
        return f"({float(value).hex()}f)"
    return f"__int_as_float({int(np.float32(value).view(np.uint32)):#010x})"


class Int(Field):
    kind, np_dtype, trt_type = "int", np.int32, "INT32"

    def convert(self, value, plugin):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise self._error(plugin, f"must be an int, got {value!r}")
        if not -(2**31) <= int(value) < 2**31:
            raise self._error(plugin, f"= {value} does not fit int32")
        return int(value)

    def c_literal(self, value):
        return str(int(value)) if value >= 0 else f"({int(value)})"


class Bool(Field):
    kind, np_dtype, trt_type = "bool", np.int32, "INT32"

    def convert(self, value, plugin):
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
            return bool(value)
        raise self._error(plugin, f"must be a bool, got {value!r}")

    def to_array(self, value):
        return np.array([int(value)], dtype=np.int32)

    def c_literal(self, value):
        return "1" if value else "0"


class Float(Field):
    kind, np_dtype, trt_type = "float", np.float32, "FLOAT32"

    def convert(self, value, plugin):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self._error(plugin, f"must be a number, got {value!r}")
        return _f32(value)

    def c_literal(self, value):
        return _c_float(value)


class Str(Field):
    kind, np_dtype, trt_type = "str", np.int8, "CHAR"

    def convert(self, value, plugin):
        if not isinstance(value, str):
            raise self._error(plugin, f"must be a str, got {value!r}")
        return value

    def to_array(self, value):
        return np.frombuffer(value.encode(), dtype=np.int8).copy()

    def from_array(self, data, plugin):
        raw = np.asarray(data).astype(np.int8).tobytes()
        return self.convert(raw.split(b"\0", 1)[0].decode(), plugin)

    def c_literal(self, value):
        return '"' + "".join(f"\\{b:03o}" for b in value.encode()) + '"'


class Ints(Field):
    kind, np_dtype, trt_type = "ints", np.int32, "INT32"

    def convert(self, value, plugin):
        try:
            return tuple(Int.convert(self, v, plugin) for v in value)
        except TypeError:
            raise self._error(plugin, f"must be a sequence of ints, got {value!r}") from None

    def c_literal(self, value):
        return "{" + ",".join(str(int(v)) for v in value) + "}"


class Floats(Field):
    kind, np_dtype, trt_type = "floats", np.float32, "FLOAT32"

    def convert(self, value, plugin):
        try:
            return tuple(Float.convert(self, v, plugin) for v in value)
        except TypeError:
            raise self._error(plugin, f"must be a sequence of numbers, got {value!r}") from None

    def c_literal(self, value):
        return "{" + ",".join(_c_float(v) for v in value) + "}"


@dataclass(frozen=True)
class Input:
    """An input tensor: its name and the dtypes the kernels accept (LINEAR format)."""

    name: str
    dtypes: tuple[str, ...] = FLOATS
    same_as: str | None = None  # must have the dtype of this earlier input

    def __post_init__(self):
        if isinstance(self.dtypes, str):
            object.__setattr__(self, "dtypes", (self.dtypes,))


@dataclass(frozen=True)
class Output:
    """An output tensor: a fixed dtype ('int32') or the name of the input whose dtype it has."""

    name: str
    dtype: str
