"""``check``: does the network compute what the PyTorch model it mirrors computes?

The network runs in the reference executor (:mod:`trtx.reference`, PyTorch ops in fp32), the model runs in
PyTorch, both on the same inputs. Outputs are compared by name, and so is every intermediate tensor the netdef
named after a PyTorch module path (the naming rule in docs/developing.md): a layer named ``model.2.cv1.conv``
(its output 0), or a tensor renamed with ``net.alias``, is compared with what a forward hook on
``torch_model.get_submodule("model.2.cv1.conv")`` saw. The first such layer, in network order, that is over
tolerance is where the netdef and the model part ways.

Errors are stated relative to the scale of the expected tensor: ``max_abs_err = max |net - torch|`` and
``max_rel_err = max_abs_err / max |torch|``; a tensor passes when ``max_abs_err <= atol + rtol * max |torch|``.

fp16 and int8 judge each tensor by its relative RMS error instead (``rms_rel_err = ||net - torch|| / ||torch||``;
a tensor passes when ``rms|net - torch| <= atol + rtol * rms|torch|``): reduced precision makes single elements
differ by many rounding steps somewhere in every large tensor, so the largest element error says little about the
layer. Every row carries both errors.

A tensor whose shape differs from the module's (beyond size-1 dims) fails: a wrong stride or padding shows as a
shape first, and that layer is the first divergent one. A network output holding NaN or infinities never passes,
even where PyTorch's holds the same. An integer output taken from a top-1 (argmax) over scores passes where its
class ids differ from PyTorch's only at positions whose two scores tie within what the precision can reach
(:data:`TIE_RTOL` of the largest score): fp16 rounding flips near ties, a wrong network flips clear winners.

When the network cannot be completed (``define`` stopped: TensorRT could not compute a shape, a weight does not
fit) or not run, :func:`diagnose` compares the shapes TensorRT computed for the layers that exist with PyTorch's
and names the first layer whose shape differs.

Error growth: each compared tensor's ``rms_rel_err`` divided by the largest one among the nearest compared
tensors upstream of it (the layers feeding it); a convolution and the batch norm / activation right after it
count as one unit, as TensorRT fuses them. For an fp16 or int8 network the units where it grows most are where
the accuracy is lost; ``table()`` lists them.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trtx.net import np_dtype
from trtx_base.errors import UserError

#: fp32 defaults: 1e-4 of the expected tensor's scale, plus an absolute floor for all-zero tensors
DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-7
#: precision -> (atol, rtol) used when the caller gives none. The network computes in that precision, PyTorch
#: in fp32. fp16 rounds each layer to ~5e-4 relative: deep networks reach a few 1e-3 RMS. int8 (Q/DQ) rounds
#: each quantized tensor to 1/127 of its range: 0.1-0.35 RMS in the last layers of a real MobileNetV2, ~1 for a
#: wrong scale or layer, so int8 rows catch broken quantization and the error-growth table shows the rest.
TOLERANCES = {"fp32": (DEFAULT_ATOL, DEFAULT_RTOL), "fp16": (1e-5, 1e-2), "int8": (1e-4, 0.5)}
#: precision -> the error a tensor is judged by: "max" (largest element error) or "rms" (relative RMS error)
METRICS = {"fp32": "max", "fp16": "rms", "int8": "rms"}
#: precision -> a class id (top-1 index) may differ from PyTorch's where the network's scores of the two classes are
#: within this fraction of the largest |score|: fp32 rounding (1e-4, as DEFAULT_RTOL), fp16's accumulated rounding
#: (1e-2, its per-tensor tolerance), int8's quantization steps (5e-2: 1/127 of a range, a few layers deep)
TIE_RTOL = {"fp32": DEFAULT_RTOL, "fp16": 1e-2, "int8": 5e-2}
#: layers that pass values through unchanged (a top-1 index reaches an output through these)
_PASS_THROUGH = ("SHUFFLE", "CAST", "IDENTITY")
#: layers that continue the unit of the layer before them (TensorRT fuses conv + batch norm + activation)
_UNIT_CONTINUES = ("SCALE", "ACTIVATION")

Forward = Callable[[torch.nn.Module, dict[str, torch.Tensor]], Mapping[str, torch.Tensor]]
#: an extra comparison: (network outputs, torch outputs) -> passed, or (passed, message)
Extra = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], "bool | tuple[bool, str]"]


class CheckError(UserError, ValueError):
    """``check`` cannot run as asked (feeds that don't fit the network inputs); the message says why."""


@dataclass(frozen=True)
class Unordered:
    """What ``forward`` returns for an output whose rows come in no fixed order -- a top-k or NMS selection, which
    near-tied scores may order and cut either way: it is not compared element by element (its row says so); the
    netdef's extra comparisons hold it to PyTorch's candidates. ``value``: PyTorch's own selection, or None."""

    value: Any = None


@dataclass
class Row:
    """One compared tensor: a network output, or a layer/tensor named like a PyTorch module."""

    name: str
    shape: tuple[int, ...] | None
    max_abs_err: float | None
    max_rel_err: float | None
    status: str
    #: True/False when compared; None when it could not be compared (the status says why)
    passed: bool | None
    #: the network layer that produced the tensor, its index in network order and its type
    layer: str | None = None
    index: int | None = None
    layer_type: str | None = None
    torch_shape: tuple[int, ...] | None = None
    #: max_rel_err / the largest max_rel_err of the nearest compared tensors upstream (None: nothing upstream
    #: has an error, or no error here), and the upstream row that has it
    growth: float | None = None
    upstream: str | None = None
    #: ||net - torch|| / ||torch|| over the whole tensor
    rms_rel_err: float | None = None
    #: the first row of the conv [+ batch norm + activation] unit this row belongs to
    unit: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": _list(self.shape),
            "torch_shape": _list(self.torch_shape),
            "max_abs_err": _finite(self.max_abs_err),
            "max_rel_err": _finite(self.max_rel_err),
            "rms_rel_err": _finite(self.rms_rel_err),
            "status": self.status,
            "passed": self.passed,
            "layer": self.layer,
            "index": self.index,
            "type": self.layer_type,
            "growth": _finite(self.growth),
            "upstream": self.upstream,
        }


@dataclass
class ExtraRow:
    """A comparison the netdef adds (e.g. detections after NMS): pass/fail and a message."""

    name: str
    passed: bool
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "message": self.message}


@dataclass
class CheckResult:
    outputs: list[Row]
    layers: list[Row]
    extras: list[ExtraRow] = field(default_factory=list)
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    #: name of the first row in network order over tolerance (a layer or, failing that, an output)
    first_divergent: str | None = None
    #: the tensors compared: network outputs (reference executor) and ``forward()``'s results, by output name
    network_outputs: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    expected_outputs: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: the precision the network computes in (fp16/int8 tables list the largest error growth)
    precision: str = "fp32"
    #: why the network could not be completed or run (rows then compare shapes only; see :func:`diagnose`)
    incomplete: str | None = None

    @property
    def passed(self) -> bool:
        if self.incomplete is not None:
            return False
        rows = [*self.outputs, *self.layers]
        return all(r.passed is not False for r in rows) and all(e.passed for e in self.extras)

    @property
    def exit_code(self) -> int:
        """0 only when every output, compared layer and extra comparison is within tolerance."""
        return 0 if self.passed else 1

    @property
    def max_abs_err(self) -> float | None:
        return _max(r.max_abs_err for r in self.outputs)

    @property
    def max_rel_err(self) -> float | None:
        return _max(r.max_rel_err for r in self.outputs)

    def add_extra(self, name: Any, passed: bool | None = None, message: str = "") -> None:
        """Add extra comparison rows: ``add_extra(name, passed, message)``, or ``add_extra(rows)`` with one row
        or a list of rows, each an :class:`ExtraRow`, a ``(name, passed[, message])`` tuple or a
        ``{"name", "passed", "message"}`` dict (what a netdef's ``check_extra`` returns)."""
        if passed is not None:
            self.extras.append(ExtraRow(str(name), bool(passed), str(message)))
            return
        rows = [name] if isinstance(name, (ExtraRow, dict)) or _is_row_tuple(name) else list(name or [])
        for row in rows:
            if isinstance(row, ExtraRow):
                self.extras.append(row)
            elif isinstance(row, dict):
                self.extras.append(ExtraRow(str(row["name"]), bool(row["passed"]), str(row.get("message", ""))))
            elif _is_row_tuple(row):
                self.extras.append(ExtraRow(str(row[0]), bool(row[1]), str(row[2]) if len(row) > 2 else ""))
            else:
                raise TypeError(f"extra comparison row {row!r}: expected ExtraRow, (name, passed, message) or dict")

    def divergent_row(self) -> Row | None:
        return next((r for r in _in_network_order(self) if r.passed is False), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "first_divergent": self.first_divergent,
            "max_abs_err": _finite(self.max_abs_err),
            "max_rel_err": _finite(self.max_rel_err),
            "atol": self.atol,
            "rtol": self.rtol,
            "precision": self.precision,
            "incomplete": self.incomplete,
            "outputs": [r.to_json() for r in self.outputs],
            "layers": [r.to_json() for r in self.layers],
            "extras": [e.to_json() for e in self.extras],
        }

    def json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_json(), indent=indent)

    def table(self) -> str:
        """Aligned text: outputs, layers, extra comparisons, then a verdict naming the first divergent layer."""
        rms = METRICS.get(self.precision) == "rms"
        errs = ("max abs err", "max rel err", *(("rms rel err",) if rms else ()))
        head = ("#", "name", "type", "shape", *errs, "status")
        parts = []
        for title, rows in (("outputs", self.outputs), ("layers named like PyTorch modules", self.layers)):
            if rows:
                parts.append(f"{title} ({len(rows)}):")
                parts.append(_align([head, *(_cells(r, rms) for r in rows)]))
        if self.extras:
            parts.append(f"extra comparisons ({len(self.extras)}):")
            parts.append(_align([("name", "result", "message")] + [_extra_cells(e) for e in self.extras]))
        if self.precision != "fp32":
            parts.extend(self.growth_lines())
        parts.append(self.verdict())
        return "\n".join(parts)

    def largest_growth(self, count: int = 5) -> list[Row]:
        """The units (conv [+ batch norm + activation]) whose relative RMS error grows most over the tensors
        feeding them, largest first; one row per unit, its last."""
        last: dict[str, Row] = {}
        for r in sorted([*self.layers, *self.outputs], key=lambda r: -1 if r.index is None else r.index):
            if r.growth is not None:
                last[r.unit or r.name] = r
        rows = [r for r in last.values() if r.growth > 1]
        return sorted(rows, key=lambda r: -r.growth)[:count]

    def growth_lines(self, count: int = 5) -> list[str]:
        """Where the network's precision loses accuracy: the rows of :meth:`largest_growth` as a table."""
        rows = self.largest_growth(count)
        if not rows:
            return [f"error growth ({self.precision}): no compared layer grows the relative error of its inputs"]
        head = ("#", "name", "type", "from", "rms err in", "rms err out", "growth")
        by_name = {r.name: r for r in [*self.layers, *self.outputs]}
        cells = [
            ("" if r.index is None else str(r.index), r.name if r.unit in (None, r.name) else f"{r.unit} .. {r.name}",
             r.layer_type or "-", r.upstream or "-",
             _num(by_name[r.upstream].rms_rel_err if r.upstream in by_name else None), _num(r.rms_rel_err),
             f"x{r.growth:.3g}")
            for r in rows
        ]  # fmt: skip
        title = (
            f"error growth ({self.precision}): the {len(rows)} layers where the relative RMS error grows most over "
            "the layers feeding them"
        )
        return [f"{title}:", _align([head, *cells], numeric={4, 5, 6})]

    def verdict(self) -> str:
        """The last lines of :meth:`table`: PASSED/FAILED with counts, then the first divergent layer."""
        if METRICS.get(self.precision) == "rms":
            tol = f"rms error <= atol {self.atol:g} + rtol {self.rtol:g} x rms|torch|"
        else:
            tol = f"atol {self.atol:g} + rtol {self.rtol:g} x max|torch|"
        compared = [r for r in self.layers if r.passed is not None]
        skipped = len(self.layers) - len(compared)
        not_comparable = f" ({skipped} more not comparable, see status)" if skipped else ""
        if self.incomplete is not None:
            lines = [f"FAILED: the network is incomplete: {self.incomplete}"]
            row = self.divergent_row()
            if row is not None:
                lines.append(f"first divergent: {row.name}  [layer #{row.index}, {row.layer_type}; {row.status}]")
            return "\n".join(lines)
        if self.passed:
            return (
                f"PASSED: {_plural(len(self.outputs), 'output')} and {_plural(len(compared), 'layer')}"
                f"{not_comparable} within {tol}"
            )
        bad_outputs = sum(r.passed is False for r in self.outputs)
        bad_layers = sum(r.passed is False for r in compared)
        lines = [
            f"FAILED: {bad_outputs} of {_plural(len(self.outputs), 'output')} and {bad_layers} of "
            f"{_plural(len(compared), 'compared layer')}{not_comparable} over {tol}"
        ]
        failed_extras = [e.name for e in self.extras if not e.passed]
        if failed_extras:
            lines.append("failed extra comparisons: " + ", ".join(failed_extras))
        row = self.divergent_row()
        if row is not None:
            is_output = any(row is r for r in self.outputs)
            if row.index is None:
                where = "network output" if is_output else "layer"
            elif not is_output and row.name == row.layer:
                where = f"layer #{row.index}, {row.layer_type}"
            else:
                what = "network output" if is_output else "tensor"
                where = f"{what} of layer #{row.index} {row.layer!r} ({row.layer_type})"
            lines.append(f"first divergent: {row.name}  [{where}; {_status_detail(row)}]")
            if is_output:
                last_ok = _last_matching_before(self, row)
                lines.append(
                    "  no layer named like a PyTorch module diverges before it"
                    + (f"; last matching: {last_ok.name} (layer #{last_ok.index})" if last_ok else "")
                    + ": the difference lies after that, or in the netdef's forward() mapping"
                )
        return "\n".join(lines)


def compare(
    network,
    torch_model: torch.nn.Module,
    feeds: Mapping[str, Any],
    *,
    forward: Forward,
    device: str | torch.device = "cpu",
    atol: float | None = None,
    rtol: float | None = None,
    layers: bool = True,
    extras: Mapping[str, Extra] | None = None,
    precision: str = "fp32",
) -> CheckResult:
    """Run ``network`` (an INetworkDefinition or a :class:`trtx.net.Net`) in the reference executor and
    ``torch_model`` through ``forward(torch_model, feeds_as_torch) -> {output name: tensor}`` on the same
    ``feeds`` ({input name: array}), and compare outputs and (``layers=True``) every tensor named like a
    module path of ``torch_model``. ``extras`` maps a name to ``fn(network_outputs, torch_outputs)`` returning
    ``passed`` or ``(passed, message)``. PyTorch runs in fp32 without TF32, deterministically, in eval mode.

    ``atol``/``rtol`` left out take :data:`TOLERANCES` of ``precision`` (the precision the network computes in).
    """
    from trtx import reference

    if precision not in TOLERANCES:
        raise CheckError(f"precision {precision!r} is not one of {', '.join(TOLERANCES)}")
    atol = TOLERANCES[precision][0] if atol is None else float(atol)
    rtol = TOLERANCES[precision][1] if rtol is None else float(rtol)
    metric = METRICS[precision]

    nw = getattr(network, "network", network)
    device = _device(device)
    graph = _Graph(nw)
    net_feeds, torch_feeds = _feeds(nw, feeds, device)
    picks = graph.topk_indices()
    # only what is compared is kept: the rest of the run reuses memory
    hooked = _Hooks(torch_model, graph.names()).paths if layers else {}
    compared = [graph.tensor_of[n] for n in graph.names() if n in hooked]
    keep = list(dict.fromkeys([*compared, *picks, *(src for src, _ in graph.top1.values())]))
    try:  # the network first: PyTorch then follows its top-k picks where near-ties decided them (_FollowTopK)
        with _fp32_torch():
            got = reference.compile(nw, device, keep=keep)(net_feeds)
    except UserError as exc:  # the network does not run: a shape went wrong somewhere before
        return diagnose(nw, torch_model, feeds, exc, forward=forward, device=device, precision=precision)
    with _FollowTopK([(n, got[n]) for n in picks], atol, rtol) as topk:
        expected, hooks = _torch_outputs(torch_model, torch_feeds, forward, device, graph.names() if layers else ())

    result = CheckResult(outputs=[], layers=[], atol=atol, rtol=rtol, precision=precision)
    outputs = graph.outputs()
    for name in outputs:
        if name not in expected:
            result.outputs.append(
                _row_for(graph, name, status=f"forward() returned no {name!r}", passed=False, shape=_shape(got, name))
            )
        elif name in graph.top1:
            scores = got.get(graph.top1[name][0])
            result.outputs.append(
                _compare_top1(graph, name, got[name], expected[name], scores, graph.top1[name][1], precision)
            )
        elif isinstance(expected[name], Unordered):
            status = "a selection in no fixed order: held to PyTorch's by the extra comparisons"
            result.outputs.append(_row_for(graph, name, status=status, passed=None, shape=_shape(got, name)))
        else:
            result.outputs.append(
                _compare_tensor(graph, name, got[name], expected[name], atol, rtol, exact=True, metric=metric)
            )
    for name in expected:
        if name not in outputs:
            result.outputs.append(
                Row(name, None, None, None, f"forward() returned {name!r}, not a network output "
                    f"(outputs: {', '.join(outputs)})", False)
            )  # fmt: skip
    if layers:
        for name in graph.names():
            if name not in hooks.paths:
                continue
            actual = got.get(graph.tensor_of[name])
            result.layers.append(_compare_hooked(graph, name, actual, hooks, atol, rtol, metric))
    net_outputs = {name: got[name] for name in outputs if name in got}
    result.network_outputs, result.expected_outputs = net_outputs, expected
    result.extras.extend(topk.rows)
    for name, fn in (extras or {}).items():
        result.extras.append(_run_extra(name, fn, net_outputs, expected))
    _error_growth(graph, [*result.layers, *result.outputs])
    row = result.divergent_row()
    result.first_divergent = row.name if row is not None else None
    return result


def topk_indices(network) -> list[str]:
    """The index outputs of ``network``'s TopK layers, in network order: what :func:`follow_topk` needs kept."""
    return _Graph(getattr(network, "network", network)).topk_indices()


def follow_topk(network, got: Mapping[str, torch.Tensor], precision: str = "fp32") -> _FollowTopK:
    """A context in which PyTorch's top-k calls follow ``network``'s TopK picks among near-ties, as :func:`compare`
    does (``got``: the reference executor's outputs, :func:`topk_indices` among them kept). Its ``rows`` say, per
    top-k, whether the picks were PyTorch's or near-ties of them, for a comparison outside ``compare``."""
    atol, rtol = TOLERANCES[precision]
    return _FollowTopK([(n, got[n]) for n in topk_indices(network)], atol, rtol)


def diagnose(
    network,
    torch_model: torch.nn.Module,
    feeds: Mapping[str, Any],
    error: BaseException,
    *,
    forward: Forward,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> CheckResult:
    """The netdef could not complete ``network`` (``define`` raised ``error``): run ``torch_model`` with hooks and
    compare the output shape TensorRT computed for each layer that exists with its module's, in network order.
    Returns a failed :class:`CheckResult` whose first divergent row is the first layer whose shape differs;
    re-raises ``error`` when every shape agrees (the mistake is then not a shape: the message says what it is)."""
    nw = getattr(network, "network", network)
    device = _device(device)
    graph = _Graph(nw)
    _, torch_feeds = _feeds(nw, feeds, device)
    _, hooks = _torch_outputs(torch_model, torch_feeds, forward, device, graph.names())
    atol, rtol = TOLERANCES.get(precision, TOLERANCES["fp32"])
    return _shape_verdict(graph, hooks, error, precision, atol, rtol)


def _torch_outputs(torch_model, torch_feeds, forward: Forward, device: torch.device, names) -> tuple[dict, _Hooks]:
    """``forward``'s outputs of ``torch_model`` (fp32, eval mode) and the hooks that saw the modules ``names``."""
    with _fp32_torch(), _eval(torch_model):
        model = _fp32_model(torch_model, device)
        with _Hooks(model, names) as hooks, torch.no_grad():
            expected = dict(forward(model, {k: v.clone() for k, v in torch_feeds.items()}))
    return expected, hooks


def _shape_verdict(graph: _Graph, hooks: _Hooks, error: BaseException, precision: str, atol: float, rtol: float):
    rows = _shape_rows(graph, hooks)
    if not any(r.passed is False for r in rows):
        raise error
    result = CheckResult(outputs=[], layers=rows, atol=atol, rtol=rtol, precision=precision, incomplete=str(error))
    result.first_divergent = result.divergent_row().name
    return result


def _shape_rows(graph: _Graph, hooks: _Hooks) -> list[Row]:
    """One row per layer named like a module whose single tensor output PyTorch saw: TensorRT's output shape
    (its own shape inference, -1 = the batch) against PyTorch's; rows stop where TensorRT knows no shape."""
    rows = []
    for name in graph.names():
        calls = hooks.seen.get(name, [])
        if name not in hooks.paths or len(calls) != 1 or not isinstance(calls[0], torch.Tensor):
            continue
        shape = _trt_shape(graph.tensors[graph.tensor_of[name]])
        torch_shape = tuple(calls[0].shape)
        if shape is None:
            rows.append(_row_for(graph, name, shape=None, torch_shape=torch_shape, passed=None,
                                 status="TensorRT computes no shape here"))  # fmt: skip
            break
        same = _same_shape(shape, torch_shape)
        status = "shape ok" if same else f"shape differs: torch {list(torch_shape)} vs network {list(shape)}"
        rows.append(_row_for(graph, name, shape=shape, torch_shape=torch_shape, status=status,
                             passed=None if same else False))  # fmt: skip
    return rows


def _trt_shape(tensor) -> tuple[int, ...] | None:
    try:
        return tuple(tensor.shape)
    except (RuntimeError, ValueError):
        return None


def _same_shape(shape: tuple[int, ...], torch_shape: tuple[int, ...]) -> bool:
    """Equal up to size-1 dims, a -1 (dynamic) network dim matching any size."""
    if len(shape) == len(torch_shape):
        shape = tuple(t if d == -1 else d for d, t in zip(shape, torch_shape))
    return _squeezed(shape) == _squeezed(torch_shape)


def _device(device: str | torch.device) -> torch.device:
    from trtx.sources import torch_device

    return torch_device(device)


def _error_growth(graph: _Graph, rows: list[Row]) -> None:
    """Fill ``growth``/``upstream``/``unit`` of compared rows from the nearest compared tensors upstream.

    A batch norm (IScale) or activation right after a compared tensor continues that tensor's unit: its growth
    is measured from the unit's own upstream, as TensorRT runs conv + batch norm + activation as one layer.
    """
    from trtx import layers as layer_api

    compared: dict[str, Row] = {}
    for r in rows:
        tensor = graph.tensor_of.get(r.name, r.name)
        if r.rms_rel_err is not None and math.isfinite(r.rms_rel_err) and tensor not in compared:
            compared[tensor] = r
    from trtx_base import backend

    floats = tuple(
        getattr(backend.trt.DataType, n) for n in ("FLOAT", "HALF", "BF16") if hasattr(backend.trt.DataType, n)
    )
    frontier: dict[str, frozenset[str]] = {}  # tensor -> nearest compared tensors upstream (itself if compared)
    unit_of: dict[str, tuple[str, frozenset[str]]] = {}  # compared tensor -> (unit head row, the unit's upstream)
    nw = graph.nw
    for i in range(nw.num_layers):
        layer = nw.get_layer(i)
        inputs = [layer.get_input(k) for k in range(layer.num_inputs)]
        upstream = frozenset().union(*(frontier.get(t.name, frozenset()) for t in inputs if t is not None))
        first = inputs[0].name if inputs and inputs[0] is not None else None
        continues = layer_api.enum_name(layer_api.layer_type(layer)) in _UNIT_CONTINUES and first in unit_of
        for j in range(layer.num_outputs):
            out = layer.get_output(j)
            name = out.name
            row = compared.get(name) if out.dtype in floats else None  # class ids, counts: no error to grow
            if row is None:
                frontier[name] = upstream
                continue
            head, before = unit_of[first] if continues else (row.name, upstream)
            unit_of[name] = (head, before)
            row.unit = head
            if before:
                worst = max(before, key=lambda u: compared[u].rms_rel_err)
                if compared[worst].rms_rel_err > 0 and row.rms_rel_err > 0:
                    row.growth, row.upstream = row.rms_rel_err / compared[worst].rms_rel_err, compared[worst].name
            frontier[name] = frozenset([name])


# ---- the network side ---------------------------------------------------------------------------
class _Graph:
    """Names in network order: which layer produces which tensor, and which names a module may match."""

    def __init__(self, nw) -> None:
        from trtx import layers as layer_api

        self.nw = nw
        #: tensor name -> (layer index, layer name, layer type)
        self.producer: dict[str, tuple[int, str, str]] = {}
        #: candidate names in network order: layer name (its output 0) and every output tensor name
        self.order: list[tuple[str, str]] = []  # (name, tensor name)
        #: tensor name -> the ITensor
        self.tensors: dict[str, Any] = {}
        #: tensor name -> (the layer producing it, its output index)
        self.source: dict[str, tuple[Any, int]] = {}
        for i in range(nw.num_layers):
            layer = nw.get_layer(i)
            kind = layer_api.enum_name(layer_api.layer_type(layer))
            tensors = [layer.get_output(j) for j in range(layer.num_outputs)]
            for j, t in enumerate(tensors):
                self.producer[t.name] = (i, layer.name, kind)
                self.tensors[t.name] = t
                self.source[t.name] = (layer, j)
            if tensors:
                self.order.append((layer.name, tensors[0].name))
            self.order.extend((t.name, t.name) for t in tensors)
        self.tensor_of: dict[str, str] = {}
        for name, tensor in self.order:
            self.tensor_of.setdefault(name, tensor)
        #: integer output -> (the scores tensor a top-1 (k=1 TopK) picked its values from, the axis)
        self.top1: dict[str, tuple[str, int]] = {}
        for name in self.outputs():
            found = self._top1_of(name)
            if found is not None:
                self.top1[name] = found

    def _top1_of(self, name: str) -> tuple[str, int] | None:
        """Follow ``name`` back through shuffles, casts and identities to a k=1 TopK's index output."""
        from trtx import layers as layer_api

        while name in self.source:
            layer, index = self.source[name]
            kind = layer_api.enum_name(layer_api.layer_type(layer))
            if kind == "TOPK":
                topk = layer_api.typed(layer)
                if index != 1 or int(topk.k) != 1:
                    return None
                axes = layer_api.axes_list(int(topk.axes))
                return (layer.get_input(0).name, axes[0]) if len(axes) == 1 else None
            if kind not in _PASS_THROUGH or layer.num_inputs != 1:
                return None
            name = layer.get_input(0).name
        return None

    def names(self) -> list[str]:
        return list(self.tensor_of)

    def topk_indices(self) -> list[str]:
        """The index outputs of the network's TopK layers, in network order."""
        return [name for name, (_, _, kind) in self.producer.items() if kind == "TOPK" and name.endswith(":1")]

    def outputs(self) -> list[str]:
        return [self.nw.get_output(i).name for i in range(self.nw.num_outputs)]

    def inputs(self) -> dict[str, Any]:
        return {self.nw.get_input(i).name: self.nw.get_input(i) for i in range(self.nw.num_inputs)}


def _feeds(nw, feeds: Mapping[str, Any], device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """Feeds for the network (its input dtypes) and for PyTorch (the same values, floats as fp32)."""
    inputs = {nw.get_input(i).name: nw.get_input(i) for i in range(nw.num_inputs)}
    missing = [n for n in inputs if n not in feeds]
    unknown = [n for n in feeds if n not in inputs]
    if missing or unknown:
        raise CheckError(
            f"network {nw.name!r} has inputs {', '.join(inputs) or '(none)'}; feeds "
            + (f"lack {', '.join(missing)}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"have no input named {', '.join(unknown)}" if unknown else "")
        )
    net_feeds, torch_feeds = {}, {}
    for name, t in inputs.items():
        value = feeds[name]
        if isinstance(value, torch.Tensor):
            value = value.detach()
        else:
            array = np.asarray(value)
            value = torch.from_numpy(np.ascontiguousarray(array).reshape(array.shape))  # 0-d stays 0-d
        dtype = _torch_dtype(np_dtype(t.dtype))
        shape = tuple(t.shape)
        if len(shape) != value.dim() or any(d != -1 and d != v for d, v in zip(shape, value.shape)):
            raise CheckError(f"feed {name!r} has shape {tuple(value.shape)}; network input {name!r} is {shape}")
        value = value.to(device=device, dtype=dtype)
        net_feeds[name] = value
        torch_feeds[name] = value.float() if value.is_floating_point() else value
    return net_feeds, torch_feeds


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


# ---- the PyTorch side ---------------------------------------------------------------------------
@contextlib.contextmanager
def _fp32_torch() -> Iterator[None]:
    """True fp32 (no TF32 matmul/conv), deterministic kernels; the previous settings come back afterwards."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.get_float32_matmul_precision(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        ) = saved[:4]
        torch.set_float32_matmul_precision(saved[4])
        torch.use_deterministic_algorithms(saved[5], warn_only=saved[6])


@contextlib.contextmanager
def _eval(model: torch.nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _fp32_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` itself when it already is fp32 on ``device``; otherwise an fp32 copy there (the caller's
    model is left as it was)."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device == device and (not t.is_floating_point() or t.dtype == torch.float32) for t in tensors):
        return model
    import copy

    return copy.deepcopy(model).to(device=device).float()


class _Hooks:
    """Forward hooks on the modules whose path is one of ``names``; every call's output is kept (cloned,
    since a later in-place op, e.g. ``ReLU(inplace=True)``, would change it)."""

    def __init__(self, model: torch.nn.Module, names) -> None:
        names = set(names)
        modules = dict(model.named_modules(remove_duplicate=False))
        self.paths: dict[str, torch.nn.Module] = {path: m for path, m in modules.items() if path and path in names}
        #: ``<module path>:<i>`` -> i: element i of the module's tuple output (nn.LSTM returns (output, (h, c)))
        self.parts: dict[str, int] = {}
        for name in names - set(self.paths):
            path, sep, index = name.rpartition(":")
            if sep and path and index.isdigit() and path in modules:
                self.paths[name], self.parts[name] = modules[path], int(index)
        self.seen: dict[str, list[Any]] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> _Hooks:
        by_module: dict[int, list[str]] = {}
        modules = {}
        for path, m in self.paths.items():
            by_module.setdefault(id(m), []).append(path)
            modules[id(m)] = m
        for key, m in modules.items():
            self._handles.append(m.register_forward_hook(self._hook(by_module[key])))
        return self

    def _hook(self, paths: list[str]):
        def hook(module, args, output):
            kept = _clone(output)
            for path in paths:
                self.seen.setdefault(path, []).append(kept)

        return hook

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()


class _FollowTopK:
    """PyTorch's top-k calls (``torch.topk``, ``Tensor.topk``), each matched with the first network TopK layer left
    whose indices have its shape (``picks``: their index outputs as the reference executor computed them, in
    network order; a call no layer matches is left alone: a top-k the network does not have). Where the
    network picked other indices among values PyTorch itself sees as equal within tolerance -- a near-tie that
    rounding resolved the other way -- PyTorch continues with the network's picks, so that the layers after a
    data-dependent selection (RT-DETR's query selection) stay comparable. Different values are left alone and
    reported; every matched call leaves an extra row (``rows``)."""

    def __init__(self, picks: list[tuple[str, torch.Tensor]], atol: float, rtol: float) -> None:
        self.picks, self.atol, self.rtol = list(picks), atol, rtol
        self.rows: list[ExtraRow] = []
        self._saved: tuple[Any, Any] | None = None

    def __enter__(self) -> _FollowTopK:
        if self.picks:
            self._saved = (torch.topk, torch.Tensor.topk)

            def topk(x, *args, **kwargs):  # a plain function: as Tensor.topk it binds the tensor
                return self._topk(x, *args, **kwargs)

            torch.topk = torch.Tensor.topk = topk
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None:
            torch.topk, torch.Tensor.topk = self._saved

    def _topk(self, x, k, dim=-1, largest=True, sorted=True):  # noqa: A002 (torch's signature)
        values, index = self._saved[0](x, k, dim=dim, largest=largest, sorted=sorted)
        match = next((j for j, (_, p) in enumerate(self.picks) if tuple(p.shape) == tuple(index.shape)), None)
        if match is None:  # no TopK layer of this shape (left): a top-k the network does not have
            return torch.return_types.topk((values, index))
        name, picked = self.picks.pop(match)
        row = f"top-k {name.rsplit(':', 1)[0]}"
        picked = picked.to(device=index.device, dtype=torch.int64)
        if torch.equal(picked, index):
            self.rows.append(ExtraRow(row, True, "the same indices"))
            return torch.return_types.topk((values, index))
        at_picked = x.gather(dim, picked)
        err = float((at_picked - values).abs().max())
        bound = self.atol + self.rtol * float(values.abs().max())
        differ = int((picked != index).sum())
        if err > bound:
            self.rows.append(ExtraRow(row, False, f"{differ} of {index.numel()} indices differ and torch's values "
                                      f"there differ by {err:.3e} > {bound:.3e}: not a tie"))  # fmt: skip
            return torch.return_types.topk((values, index))
        self.rows.append(ExtraRow(row, True, f"{differ} of {index.numel()} indices differ among near-ties (torch's "
                                  f"values there within {err:.1e} <= {bound:.1e}); torch continued with the "
                                  "network's"))  # fmt: skip
        return torch.return_types.topk((at_picked, picked))


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(v) for v in value) if isinstance(value, list) else tuple(_clone(v) for v in value)
    return value


# ---- comparing ----------------------------------------------------------------------------------
def _row_for(graph: _Graph, name: str, **kw) -> Row:
    index, layer, kind = graph.producer.get(graph.tensor_of.get(name, name), (None, None, None))
    kw.setdefault("max_abs_err", None)
    kw.setdefault("max_rel_err", None)
    return Row(name=name, layer=layer, index=index, layer_type=kind, **kw)


def _shape(got: Mapping[str, torch.Tensor], name: str) -> tuple[int, ...] | None:
    return tuple(got[name].shape) if name in got else None


def _compare_hooked(
    graph: _Graph, name: str, actual, hooks: _Hooks, atol: float, rtol: float, metric: str = "max"
) -> Row:
    shape = tuple(actual.shape) if actual is not None else None
    calls = hooks.seen.get(name, [])
    if actual is None:
        return _row_for(graph, name, shape=None, status="the reference executor kept no such tensor", passed=None)
    if not calls:
        return _row_for(graph, name, shape=shape, status="module did not run in forward(): not compared", passed=None)
    if len(calls) > 1:
        return _row_for(graph, name, shape=shape, status=f"module ran {len(calls)} times: not compared", passed=None)
    out = calls[0]
    if name in hooks.parts and isinstance(out, (tuple, list)) and hooks.parts[name] < len(out):
        out = out[hooks.parts[name]]
    if isinstance(out, (tuple, list)):
        kind = type(out).__name__
        return _row_for(graph, name, shape=shape, status=f"module returned a {kind} of {len(out)}: not compared",
                        passed=None)  # fmt: skip
    if not isinstance(out, torch.Tensor):
        return _row_for(graph, name, shape=shape, status=f"module returned {type(out).__name__}: not compared",
                        passed=None)  # fmt: skip
    return _compare_tensor(graph, name, actual, out, atol, rtol, exact=False, metric=metric)


def _compare_tensor(
    graph: _Graph,
    name: str,
    actual: torch.Tensor,
    expected: Any,
    atol: float,
    rtol: float,
    *,
    exact: bool,
    metric: str = "max",
) -> Row:
    """Compare one tensor. Shapes must agree up to size-1 dims (a differing shape fails: a wrong stride or padding
    shows there first). A network output (``exact``) holding NaN or infinities fails, even where PyTorch's has the
    same; a layer passes with them only where PyTorch has the very same values (the status counts them)."""
    shape = tuple(actual.shape)
    expected = torch.as_tensor(expected)
    torch_shape = tuple(expected.shape)
    if torch_shape != shape:
        if _squeezed(torch_shape) != _squeezed(shape):
            status = f"shape differs: torch {list(torch_shape)} vs network {list(shape)}"
            return _row_for(graph, name, shape=shape, torch_shape=torch_shape, status=status, passed=False)
        expected = expected.reshape(shape)
    abs_err, rel_err, passed = errors(actual, expected, atol=atol, rtol=rtol)
    rms_err, rms_passed = rms_errors(actual, expected, atol=atol, rtol=rtol)
    if metric == "rms":
        passed = rms_passed
    bad = _non_finite(actual) if actual.is_floating_point() else 0
    if bad and passed:  # the same NaN/inf on both sides
        passed = not exact
        status = f"{'' if exact else 'ok, '}{bad} non-finite value(s), the same in PyTorch" + (
            ": an output must be finite" if exact else ""
        )
    elif passed:
        status = "ok"
    elif bad:
        status = f"{bad} non-finite value(s) where PyTorch differs"
    elif math.isnan(rel_err) or math.isinf(abs_err):
        status = "non-finite values differ"
    else:
        status = "over tolerance"
    return _row_for(graph, name, shape=shape, torch_shape=torch_shape, max_abs_err=abs_err, max_rel_err=rel_err,
                    rms_rel_err=rms_err, status=status, passed=passed)  # fmt: skip


def _non_finite(t: torch.Tensor) -> int:
    return int((~torch.isfinite(t)).sum())


def _compare_top1(graph: _Graph, name: str, actual: torch.Tensor, expected: Any, scores, axis: int, precision: str):
    """An integer output of a top-1 over ``scores`` (class ids): equal to PyTorch's, or differing only where the
    network's scores of its class and of PyTorch's class tie within ``TIE_RTOL[precision]`` of max |score|."""
    expected = torch.as_tensor(expected).to(actual.device)
    row = _compare_tensor(graph, name, actual, expected, 0.0, 0.0, exact=True)
    if row.passed is not False or row.status.startswith("shape") or scores is None:
        return row
    actual_ids = actual.reshape(expected.shape).long() if actual.numel() == expected.numel() else None
    if actual_ids is None:
        return row
    s = scores.detach().float().movedim(axis, -1)
    s = s.reshape(-1, s.shape[-1])
    if s.shape[0] != actual_ids.numel():
        return row
    ours, theirs = actual_ids.reshape(-1), expected.long().reshape(-1)
    differ = torch.nonzero(ours != theirs).reshape(-1)
    valid = bool(((theirs >= 0) & (theirs < s.shape[-1])).all())
    if not valid:
        return row
    tol = TIE_RTOL.get(precision, DEFAULT_RTOL) * float(s.abs().max())
    gap = s[differ, ours[differ]] - s[differ, theirs[differ]]
    clear = int((gap > tol).sum())
    if clear:
        row.status = (f"{clear} of {differ.numel()} differing class id(s) are clear wins (score gap up to "
                      f"{float(gap.max()):.3g} > tie tolerance {tol:.3g})")  # fmt: skip
        return row
    row.passed = True
    row.status = (f"ok: {differ.numel()} of {ours.numel()} class id(s) differ where the scores tie within "
                  f"{tol:.3g} ({precision})")  # fmt: skip
    return row


def rms_errors(actual: torch.Tensor, expected: torch.Tensor, *, atol: float, rtol: float) -> tuple[float, bool]:
    """(||actual - expected|| / ||expected||, within ``rms|diff| <= atol + rtol * rms|expected|``). Non-finite values
    count as in :func:`errors`; all-finite tensors take one float32 pass on their own device."""
    n = actual.numel()
    if n == 0:
        return 0.0, True
    a = actual.detach().float().reshape(-1)
    e = expected.detach().to(a.device).float().reshape(-1)
    diff, ref = (float(v) for v in torch.stack([torch.linalg.vector_norm(a - e), torch.linalg.vector_norm(e)]).cpu())
    if not (math.isfinite(diff) and math.isfinite(ref)):
        a, e = a.to("cpu", torch.float64), e.to("cpu", torch.float64)
        same = (a == e) | (torch.isnan(a) & torch.isnan(e))
        diff = float(
            torch.nan_to_num(
                torch.where(same, torch.zeros_like(a), a - e), nan=math.inf, posinf=math.inf, neginf=-math.inf
            ).norm()
        )
        ref = float(e[torch.isfinite(e)].norm())
    rel = diff / ref if ref > 0 else (0.0 if diff == 0 else math.inf)
    return rel, diff / math.sqrt(n) <= atol + rtol * ref / math.sqrt(n)


def errors(actual: torch.Tensor, expected: torch.Tensor, *, atol: float, rtol: float) -> tuple[float, float, bool]:
    """(max abs err, max abs err / max |expected|, within ``atol + rtol * max |expected|``).

    NaN and infinities count as equal only where both sides have the same one; anywhere else the error is inf.
    All-finite tensors (the usual case) take one float32 pass on their own device; others the exact float64 path.
    """
    if actual.numel() == 0:
        return 0.0, 0.0, True
    a = actual.detach().float()
    e = expected.detach().to(a.device).float()
    abs_err, scale = (float(v) for v in torch.stack([(a - e).abs().max(), e.abs().max()]).cpu())
    if not (math.isfinite(abs_err) and math.isfinite(scale)):
        return _errors_nonfinite(a, e, atol=atol, rtol=rtol)
    return _verdict(abs_err, scale, atol, rtol)


def _errors_nonfinite(a: torch.Tensor, e: torch.Tensor, *, atol: float, rtol: float) -> tuple[float, float, bool]:
    a, e = a.to("cpu", torch.float64), e.to("cpu", torch.float64)
    diff = (a - e).abs()
    same = (a == e) | (torch.isnan(a) & torch.isnan(e))
    diff = torch.nan_to_num(torch.where(same, torch.zeros_like(diff), diff), nan=math.inf, posinf=math.inf)
    finite = e[torch.isfinite(e)]
    return _verdict(float(diff.max()), float(finite.abs().max()) if finite.numel() else 0.0, atol, rtol)


def _verdict(abs_err: float, scale: float, atol: float, rtol: float) -> tuple[float, float, bool]:
    if scale > 0:
        rel_err = abs_err / scale
    else:
        rel_err = 0.0 if abs_err == 0 else math.inf
    return abs_err, rel_err, abs_err <= atol + rtol * scale


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _is_row_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[0], str)


def _run_extra(name: str, fn: Extra, net_outputs, torch_outputs) -> ExtraRow:
    try:
        verdict = fn(net_outputs, torch_outputs)
    except Exception as exc:  # noqa: BLE001 - the extra's own failure is a failed row, with its message
        return ExtraRow(name, False, f"raised {type(exc).__name__}: {exc}")
    if isinstance(verdict, tuple):
        passed, message = verdict
        return ExtraRow(name, bool(passed), str(message))
    return ExtraRow(name, bool(verdict), "")


# ---- presentation -------------------------------------------------------------------------------
def _in_network_order(result: CheckResult) -> list[Row]:
    """Layer rows before output rows of the same layer; rows without a layer last."""
    keyed = [(r.index if r.index is not None else math.inf, 0, r) for r in result.layers]
    keyed += [(r.index if r.index is not None else math.inf, 1, r) for r in result.outputs]
    return [r for *_, r in sorted(keyed, key=lambda k: (k[0], k[1]))]


def _last_matching_before(result: CheckResult, row: Row) -> Row | None:
    ok = [r for r in result.layers if r.passed and r.index is not None and row.index is not None]
    ok = [r for r in ok if r.index <= row.index]
    return max(ok, key=lambda r: r.index) if ok else None


def _status_detail(row: Row) -> str:
    if row.max_rel_err is None:
        return row.status
    rms = f", rms rel err {_num(row.rms_rel_err)}" if row.rms_rel_err is not None else ""
    return f"max abs err {_num(row.max_abs_err)}, max rel err {_num(row.max_rel_err)}{rms}"


def _cells(r: Row, rms: bool = False) -> tuple[str, ...]:
    shape = "x".join(str(d) for d in r.shape) if r.shape is not None else "-"
    return (
        "" if r.index is None else str(r.index),
        r.name,
        r.layer_type or "-",
        shape,
        _num(r.max_abs_err),
        _num(r.max_rel_err),
        *((_num(r.rms_rel_err),) if rms else ()),
        r.status if r.passed is not False else f"FAIL: {r.status}",
    )


def _extra_cells(e: ExtraRow) -> tuple[str, ...]:
    return (e.name, "ok" if e.passed else "FAIL", e.message)


def _align(rows: list[tuple[str, ...]], numeric: set[int] | None = None) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    if numeric is None:  # the error columns of a row table
        numeric = {4, 5} if len(widths) == 7 else ({4, 5, 6} if len(widths) == 8 else set())
    lines = []
    for row in rows:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3e}"


def _finite(x: float | None) -> float | str | None:
    """JSON has no inf/NaN: those become the strings "inf" / "nan"."""
    if x is None or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _list(shape: tuple[int, ...] | None) -> list[int] | None:
    return None if shape is None else list(shape)


def _max(values) -> float | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return math.nan if any(math.isnan(v) for v in values) else max(values)
