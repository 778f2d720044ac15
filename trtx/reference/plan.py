"""A network read once, run many times: :func:`compile` -> :class:`Plan`, and :func:`execute` on top of it.

Compiling reads the ``INetworkDefinition`` once: the layers the requested tensors need, in dependency order (loops
and conditionals as one node each, :mod:`trtx.reference.regions`), each with its op, its typed layer behind a
:class:`~trtx.reference.core.FrozenLayer` (attributes read once) and the dtype/shape TensorRT declares for each
output. Then, with ``optimize=True`` (the default):

* **constant folding**: layers whose inputs are all constants (constant weights, their Q/DQ, fills) run once, at
  compile time; layers computing shape tensors (``IShapeLayer`` and what is computed from it) run once per input
  shape, on the first run with that shape, and are replayed from the recorded values after that.
* **memory**: a tensor is released after its last consumer; an elementwise op may write its result into an input
  nothing else uses any more (``LayerCall.donated``: the same kernel writing to another buffer, so the bits are
  those of the plain run).
* **CUDA graphs** (CUDA, ``cuda_graphs=True``): the run for one input shape is captured on its second call and
  replayed after that; one graph per input shape, the ``cache_size`` most recently used kept. Networks with a
  layer that reads device values on the host run eagerly.
* **fast_math** (default on CUDA only): layers fused into one kernel computing the same function with fewer
  roundings (:mod:`trtx.reference.fusion`: a convolution and its batch-norm scale, x · sigmoid(x) as SiLU).

``optimize=False`` is the plain executor: every layer runs on every call, in order, into fresh tensors, and every
computed tensor stays alive until the run ends. Both use the same op functions, so on the CPU their outputs are
bit-identical (tests/reference compares them on every conformance case).
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trtx import layers as L
from trtx.reference.core import (
    REFUSED,
    LayerCall,
    Node,
    NotImplementedInReference,
    ReferenceExecutionError,
    registry,
    to_declared,
    torch_dtype,
)
from trtx.reference.fusion import fuse
from trtx.reference.regions import Graph, Region
from trtx_base import backend

#: layer kinds never folded: plugins (a user's code), assertions (checked on every run), loops and conditionals
_NEVER_FOLD = {"PLUGIN", "PLUGIN_V2", "PLUGIN_V3", "ASSERTION", "LOOP", "CONDITIONAL"}
#: kinds whose output shape depends on input *values*, not just shapes (besides the shape inputs below)
_VALUE_SHAPED = {"NON_ZERO", "NMS", "PLUGIN", "PLUGIN_V2", "PLUGIN_V3", "LOOP", "CONDITIONAL"}
#: kind -> input indices read as shape values (a reshape's dims, a slice's start/size/stride, ...)
_SHAPE_INPUTS = {
    "SHUFFLE": {1},
    "SLICE": {1, 2, 3, 5},
    "RESIZE": {1},
    "FILL": {0},
    "TOPK": {1},
    "ONE_HOT": {2},
    "SQUEEZE": {1},
    "UNSQUEEZE": {1},
}
#: kinds whose ops read device values on the host on every call (a CUDA graph cannot capture that); any other op
#: that turns out to do so makes the capture fail, and that input shape runs eagerly
_HOST_READS = {
    "ASSERTION",
    "NMS",
    "NON_ZERO",
    "PLUGIN",
    "PLUGIN_V2",
    "PLUGIN_V3",
    "LOOP",
    "CONDITIONAL",
    "KV_CACHE_UPDATE",
    "MOE",
}


_HOST_DTYPES = {torch.float32, torch.float16, torch.int32, torch.int64, torch.int8, torch.bool}


@contextlib.contextmanager
def exact_float32():
    """No TF32 inside the reference: cuDNN convolutions default to it on Ampere+ GPUs (≈1e-3 relative error)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# ---- reading the network ------------------------------------------------------------------------


@dataclass(eq=False)
class Step:
    node: Node
    frees: tuple[int, ...]  # slots whose last use this is: dropped before the op runs
    donate: tuple[int, ...]  # input positions the op may overwrite, if no other reference exists at run time


@dataclass(eq=False)
class _Entry:
    """What the plan remembers about one input shape."""

    values: dict[int, torch.Tensor] = field(default_factory=dict)  # folded shape tensors
    program: list[Step] | None = None  # the steps left once they are folded
    runs: int = 0
    graph: Any = None  # (CUDAGraph, static feeds, static results) once captured
    graph_failed: str | None = None


def _feed_tensor(name: str, value, dims: tuple[int, ...], dtype: torch.dtype, trt_name: str, device) -> torch.Tensor:
    if isinstance(value, np.ndarray) or np.isscalar(value):
        value = torch.from_numpy(np.asarray(value, order="C"))  # 0-D stays 0-D (ascontiguousarray would not)
    if not isinstance(value, torch.Tensor):
        raise ReferenceExecutionError(
            f"feed {name!r}: expected a numpy array or torch tensor, got {type(value).__name__}"
        )
    kind = lambda dt: "bool" if dt == torch.bool else ("float" if dt.is_floating_point else "int")  # noqa: E731
    if kind(value.dtype) != kind(dtype):
        raise ReferenceExecutionError(f"feed {name!r} has dtype {value.dtype} but the network input is {trt_name}")
    if value.dim() != len(dims) or any(d >= 0 and d != v for d, v in zip(dims, value.shape)):
        raise ReferenceExecutionError(
            f"feed {name!r} has shape {tuple(value.shape)} but the network input is {dims} (-1 = any)"
        )
    return value.to(device=device, dtype=dtype)


def _check_output(where: str, index: int, value: torch.Tensor, declared: tuple[int, ...], name: str) -> None:
    if len(declared) != value.dim() or any(d >= 0 and d != v for d, v in zip(declared, value.shape)):
        raise ReferenceExecutionError(
            f"{where}: output {index} ({name!r}) computed with shape {tuple(value.shape)} but "
            f"TensorRT declares {declared}; the reference executor disagrees with TensorRT about this layer"
        )


def _exclusive(t: torch.Tensor | None) -> bool:
    """Nothing but the run's argument list refers to ``t`` or its storage (no slot, no view, no caller)."""
    # references: the argument list, this parameter and getrefcount's own argument
    return t is not None and t._base is None and sys.getrefcount(t) == 3


class Plan:
    """A compiled network: ``plan(feeds) -> {name: tensor}``. See :func:`compile`."""

    def __init__(
        self,
        network,
        device: str | torch.device = "cpu",
        *,
        keep: Iterable[str] | str | None = None,
        optimize: bool = True,
        cuda_graphs: bool | None = None,
        fast_math: bool | None = None,
        cache_size: int = 8,
    ) -> None:
        self._owner = network  # keeps the network (and a Net's weight arrays) alive
        nw = getattr(network, "network", network)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.optimize = bool(optimize)
        self.cuda_graphs = self.optimize and self.device.type == "cuda" and cuda_graphs is not False
        #: fusions that change the rounding (not the math): on by default on CUDA, whose results already differ
        #: from the CPU's in the last bits; off on the CPU, where the plan is bit-identical to the plain executor
        self.fast_math = self.optimize and (self.device.type == "cuda" if fast_math is None else bool(fast_math))
        self.cache_size = max(int(cache_size), 1)
        self._host: dict[int, tuple[torch.Tensor, list[int]]] = {}
        self._trt = backend.trt
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()

        self.inputs: list[str] = [nw.get_input(i).name for i in range(nw.num_inputs)]
        self.outputs: list[str] = [nw.get_output(i).name for i in range(nw.num_outputs)]
        self._feeds = []
        for i in range(nw.num_inputs):
            t = nw.get_input(i)
            self._feeds.append((t.name, L.dims(t.shape), torch_dtype(t.dtype, f"network input {t.name!r}"),
                                L.enum_name(t.dtype)))  # fmt: skip

        keep_all = isinstance(keep, str) and keep == "all"
        kept: list[str] = [] if keep is None or keep_all else ([keep] if isinstance(keep, str) else list(keep))
        self._keep_all = keep_all
        self._graph = Graph(list(L.layers(nw)))
        unknown_keep = [n for n in kept if n not in self.inputs and n not in self._graph.producer]
        if unknown_keep:
            raise ReferenceExecutionError(f"keep names tensors the network does not have: {unknown_keep}")

        self._slot: dict[str, int] = {name: i for i, name in enumerate(self.inputs)}
        top = self._graph.top(None if keep_all else set(self.outputs) | set(kept))
        self._nodes = [self._item(item) for item in top]
        for name in self.outputs + kept:
            if name not in self._slot:
                raise ReferenceExecutionError(f"tensor {name!r} is neither a network input nor produced by a layer")
        self._names = list(self._slot)  # slot -> tensor name
        self._returned = (
            list(range(len(self._names))) if keep_all else
            [self._slot[n] for n in dict.fromkeys(self.outputs + [n for n in kept if n not in self.outputs])]
        )  # fmt: skip
        self._returned_set = set(self._returned)
        #: return copies of the plan's own tensors (folded constants and shape tensors); a one-run plan need not
        self._protect = True
        with torch.no_grad(), exact_float32():  # folding runs ops
            self._analyze()

    # ---- compile ----------------------------------------------------------------------------------

    def _item(self, item) -> Node:
        if isinstance(item, Region):
            from trtx.reference import control  # noqa: PLC0415  -- control builds its nodes with this module's

            return control.loop(self, item) if item.kind == "LOOP" else control.conditional(self, item)
        return self._node(self._graph.layers[item], self._graph.kind_enums[item])

    def _input_slot(self, name: str | None, where: str, k: int) -> int:
        if name is None:
            return -1
        if name not in self._slot:
            raise ReferenceExecutionError(
                f"{where}: input {k} {name!r} is neither a network input nor produced by any layer"
            )
        return self._slot[name]

    def _output(self, t, where: str) -> tuple[int, tuple]:
        """(slot, meta) of a layer output: declared dtype and shape."""
        meta = (torch_dtype(t.dtype, f"{where} output {t.name!r}"), L.enum_name(t.dtype), L.dims(t.shape), t.name)
        return self._slot.setdefault(t.name, len(self._slot)), meta

    def _node(self, layer, kind_enum) -> Node:
        kind = L.enum_name(kind_enum)
        where = f"layer {layer.name!r} ({kind})"
        ins = []
        for k in range(layer.num_inputs):
            t = layer.get_input(k)
            ins.append(self._input_slot(None if t is None else t.name, where, k))
        op = registry().get(kind_enum)
        if op is None:
            why = f": {REFUSED[kind]}" if kind in REFUSED else ""
            raise NotImplementedInReference(
                f"{where}: layer type {kind} is not implemented by the reference executor{why}"
            )
        outs, meta = [], []
        for o in range(layer.num_outputs):
            slot, m = self._output(layer.get_output(o), where)
            outs.append(slot)
            meta.append(m)
        call = LayerCall(layer, kind, None, self.device, [m[0] for m in meta], host=self._host, trt=self._trt)
        return Node(kind, where, op, call, ins, outs, meta)

    def _analyze(self) -> None:
        """Constant folding, shape folding, liveness."""
        self._per_shape: set[int] = set()
        self._static_shape: set[int] = set()
        feeds = set(range(len(self.inputs)))
        constant: set[int] = set()
        per_shape: set[int] = set()  # values fixed by the input shapes (shape tensors)
        static_shape = set(feeds)  # tensors whose shape the input shapes fix
        self._const: dict[int, torch.Tensor] = {}
        general: list[Node] = []
        for node in self._nodes:
            ins = [i for i in node.ins if i >= 0]
            foldable = self.optimize and node.kind not in _NEVER_FOLD
            if foldable and all(i in constant for i in ins):
                self._fold(node)
                constant.update(node.outs)
                static_shape.update(node.outs)
                continue
            general.append(node)
            shape_inputs = _SHAPE_INPUTS.get(node.kind, ())
            if node.kind not in _VALUE_SHAPED and all(
                i in static_shape and (k not in shape_inputs or i in constant or i in per_shape)
                for k, i in enumerate(node.ins)
                if i >= 0
            ):
                static_shape.update(node.outs)
            if foldable and (
                (node.kind == "SHAPE" and node.ins[0] in static_shape)
                or (ins and all(i in constant or i in per_shape for i in ins))
            ):
                per_shape.update(node.outs)
        self._per_shape = per_shape
        self._static_shape = static_shape
        returned = set(self._returned)
        if self.fast_math:
            general = fuse(general, returned)
        self._pinned = feeds | set(self._const) | returned  # never freed, never overwritten
        self._general = self._program(general, protect=per_shape)
        self._capturable = all(
            node.kind not in _HOST_READS and all(o in static_shape for o in node.outs)
            for node in general
            if not (node.outs and set(node.outs) <= per_shape)
        )

    def _fold(self, node: Node) -> None:
        values = self._run_node(node, [self._const[i] if i >= 0 else None for i in node.ins], check=True)
        for slot, value in zip(node.outs, values):
            self._const[slot] = value
            self._remember_host(value)

    def _remember_host(self, value: torch.Tensor) -> None:
        """Folded integer tensors (shape values, indices) and small float ones (scales) get a host copy that
        ``LayerCall.values``/``known`` read without a device round trip."""
        limit = 64 if value.dtype.is_floating_point else 1 << 16
        if value.numel() <= limit and value.dtype in _HOST_DTYPES:
            self._host[id(value)] = (value, value.reshape(-1).tolist())

    def _program(self, nodes: list[Node], protect: Iterable[int] = ()) -> list[Step]:
        """Steps for ``nodes``, each with the slots that die at it (freed) and the inputs it may overwrite."""
        if not self.optimize or self._keep_all:
            return [Step(node, (), ()) for node in nodes]
        pinned = self._pinned | set(protect)
        last: dict[int, int] = {}
        for s, node in enumerate(nodes):
            for i in node.ins:
                if i >= 0:
                    last[i] = s
        steps = []
        for s, node in enumerate(nodes):
            dying = tuple(sorted({i for i in node.ins if i >= 0 and last[i] == s and i not in pinned}))
            donate = ()
            if node.call is not None:
                donate = tuple(k for k, i in enumerate(node.ins) if i in dying and node.ins.count(i) == 1)
            steps.append(Step(node, dying, donate))
        return steps

    # ---- run -----------------------------------------------------------------------------------

    def __call__(self, feeds: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the plan on ``feeds`` (every network input by name); returns the outputs (and kept tensors)."""
        missing = sorted(set(self.inputs) - set(feeds))
        unknown = sorted(set(feeds) - set(self.inputs))
        if missing or unknown:
            raise ReferenceExecutionError(
                f"feeds must name every network input exactly: missing {missing}, unknown {unknown} "
                f"(inputs: {sorted(self.inputs)})"
            )
        with torch.no_grad(), exact_float32():
            fed = [_feed_tensor(name, feeds[name], dims, dt, tn, self.device) for name, dims, dt, tn in self._feeds]
            entry = self._entry(tuple(tuple(v.shape) for v in fed))
            if self.cuda_graphs and entry.program is not None and entry.graph_failed is None and self._capturable:
                return self._replay(entry, fed)
            return self._results(self._run(entry, fed))

    run = __call__

    def _entry(self, key: tuple) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            while len(self._entries) > self.cache_size:
                _, old = self._entries.popitem(last=False)
                for value in old.values.values():
                    self._host.pop(id(value), None)
        else:
            self._entries.move_to_end(key)
        return entry

    def _results(self, values: list) -> dict[str, torch.Tensor]:
        out = {}
        for slot in self._returned:
            value = values[slot]
            if value is None:  # inside a conditional branch not taken, or a loop that ran no iteration
                continue
            if self._protect and (slot in self._const or slot in self._per_shape):
                value = value.clone()  # the plan's own copy stays untouched
            out[self._names[slot]] = value.contiguous()  # a CPU convolution's channels-last result: a copy in order
        return out

    def _run(self, entry: _Entry, fed: list[torch.Tensor]) -> list:
        values: list = [None] * len(self._names)
        for slot, value in enumerate(fed):
            values[slot] = value
        for slot, value in self._const.items():
            values[slot] = value
        first = entry.program is None
        if first:
            program = self._general
        else:
            program = entry.program
            for slot, value in entry.values.items():
                values[slot] = value
        self._steps(program, values, check=first or not self.optimize, record=entry.values if first else None)
        if first and self.optimize:
            for value in entry.values.values():
                self._remember_host(value)
            folded = set(entry.values)
            entry.program = self._program(
                [s.node for s in self._general if not (s.node.outs and set(s.node.outs) <= folded)], protect=folded
            )
        entry.runs += 1
        return values

    def _steps(self, program: list[Step], values: list, check: bool, record: dict | None) -> None:
        per_shape = self._per_shape
        device = self.device
        for step in program:
            node = step.node
            call = node.call
            if call is None:  # a loop or a conditional
                results = node.op(values, check)
                for i in step.frees:
                    values[i] = None
            else:
                args = [values[i] if i >= 0 else None for i in node.ins]
                for i in step.frees:
                    values[i] = None
                call.inputs = args
                if step.donate:
                    call.donated = tuple(k for k in step.donate if _exclusive(args[k]))
                try:
                    results = node.op(call)
                finally:
                    call.inputs = None
                    call.donated = ()
                args = None
            if len(results) != len(node.outs):
                raise ReferenceExecutionError(
                    f"{node.where}: op returned {len(results)} outputs, layer has {len(node.outs)}"
                )
            for o, slot in enumerate(node.outs):
                dtype, trt_name, declared, name = node.meta[o]
                value = results[o]
                if value.device != device:
                    value = value.to(device)
                value = to_declared(value, dtype, trt_name)
                if check or slot not in self._static_shape:
                    _check_output(node.where, o, value, declared, name)
                values[slot] = value
                if record is not None and slot in per_shape:
                    record[slot] = value
            results = value = None

    def _run_node(self, node: Node, args: list, check: bool) -> list[torch.Tensor]:
        values: list = [None] * len(self._names)
        for i, value in zip(node.ins, args):
            if i >= 0:
                values[i] = value
        self._steps([Step(node, (), ())], values, check=check, record=None)
        return [values[slot] for slot in node.outs]

    # ---- CUDA graphs ---------------------------------------------------------------------------

    def _replay(self, entry: _Entry, fed: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        if entry.graph is None:
            try:
                entry.graph = self._capture(entry, fed)
            except Exception as exc:  # noqa: BLE001  -- any capture failure: this shape runs eagerly
                entry.graph_failed = f"{type(exc).__name__}: {exc}"
                torch.cuda.synchronize(self.device)
                return self._results(self._run(entry, fed))
        graph, static_feeds, static_values = entry.graph
        for static, value in zip(static_feeds, fed):
            static.copy_(value)
        graph.replay()
        return {self._names[slot]: static_values[slot].clone() for slot in self._returned if slot in static_values}

    def _capture(self, entry: _Entry, fed: list[torch.Tensor]):
        static_feeds = [value.clone() for value in fed]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up on the capture stream (cuBLAS/cuDNN handles, workspaces)
            self._run(entry, static_feeds)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            values = self._run(entry, static_feeds)
        static_values = {slot: values[slot] for slot in self._returned if values[slot] is not None}
        return graph, static_feeds, static_values

    # ---- introspection -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Counts of what compile did (for tests and curious users)."""
        return {
            "layers": len(self._nodes),
            "folded_constants": sum(1 for node in self._nodes if set(node.outs) <= set(self._const)),
            "shape_tensors": len(self._per_shape),
            "steps": len(self._general),
            "fused": sum(1 for step in self._general if step.node.fused),
            "fusions": dict(Counter(step.node.fused for step in self._general if step.node.fused)),
            "capturable": self._capturable,
            "input_shapes_cached": len(self._entries),
            "graphs": sum(1 for e in self._entries.values() if e.graph is not None),
        }


def compile(  # noqa: A001  -- trtx.reference.compile, as the torch.compile of this executor
    network,
    device: str | torch.device = "cpu",
    *,
    keep: Iterable[str] | str | None = None,
    optimize: bool = True,
    cuda_graphs: bool | None = None,
    fast_math: bool | None = None,
    cache_size: int = 8,
) -> Plan:
    """Read ``network`` (an ``INetworkDefinition`` or a :class:`trtx.net.Net`) once into a :class:`Plan`.

    ``plan(feeds)`` maps every network input name to its value (numpy or torch; dynamic dimensions are taken from
    the feeds) and returns the marked outputs plus the tensors named in ``keep`` (``"all"``: every tensor), each in
    the dtype the network declares, on ``device``. ``optimize=False`` runs every layer every time into fresh
    tensors (the plain executor). ``cuda_graphs`` (CUDA only, default on) captures the run per input shape on its
    second call; ``cache_size`` input shapes are remembered (least recently used dropped). ``fast_math`` (default:
    on CUDA only) lets the plan fuse layers into one kernel computing the same function with fewer roundings
    (a convolution and its batch-norm scale as one convolution, x · sigmoid(x) as SiLU); without it the plan's
    outputs are bit-identical to the plain executor's. The plan keeps ``network`` alive and assumes it is not
    changed after compiling.
    """
    return Plan(network, device, keep=keep, optimize=optimize, cuda_graphs=cuda_graphs, fast_math=fast_math,
                cache_size=cache_size)  # fmt: skip


def execute(
    network,
    feeds: Mapping[str, np.ndarray | torch.Tensor],
    device: str | torch.device = "cpu",
    keep: Iterable[str] | str | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``network`` (an ``INetworkDefinition``, or a :class:`trtx.net.Net`) once in PyTorch.

    ``feeds`` maps every network input name to its value; dynamic dimensions are taken from the feeds.
    Returns the marked outputs, plus the tensors named in ``keep`` (``"all"`` = every tensor computed),
    each in the dtype the network declares for it, on ``device``. To run a network more than once, compile it.
    """
    plan = Plan(network, device, keep=keep, cuda_graphs=False, cache_size=1)
    plan._protect = False  # used once: its constants may go to the caller as they are
    return plan(feeds)
