"""Loops and conditionals in a plan: each one node of its level that runs its own steps.

Loop (docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-with-loops.html):

* trip limits: COUNT (a 0-D int tensor from outside, the number of iterations) and/or WHILE (a 0-D bool tensor,
  evaluated before each iteration, usually from the recurrences); the loop stops at the first that says so;
* a recurrence's output is its first input (from outside) in iteration 0, then the value its second input had at
  the end of the previous iteration;
* an iterator's output in iteration ``i`` is its input's slice ``i`` along ``axis`` (reverse: ``M - 1 - i``, ``M``
  the COUNT trip limit); iterating past the end is an error;
* loop outputs: LAST_VALUE of a recurrence is its value after the last iteration (its first input if none ran);
  CONCATENATE / REVERSE stack the input of every iteration (in reverse order) along a new ``axis`` of length
  input 1; TensorRT leaves the slots beyond the iterations run undefined, they are zero here.

Conditional (work-with-conditionals.html): the condition (a bool scalar) selects the then- or else-input of every
conditional output; only the layers the selected inputs need run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trtx import layers as L
from trtx.reference.core import ReferenceExecutionError, to_declared
from trtx.reference.plan import Node, Plan, Step
from trtx.reference.regions import Region


def _scalar(plan: Plan, t: torch.Tensor, where: str, what: str):
    known = plan._host.get(id(t))
    values = known[1] if known is not None and known[0] is t else t.reshape(-1).tolist()
    if len(values) != 1:
        raise ReferenceExecutionError(f"{where}: {what} must be a scalar, got shape {tuple(t.shape)}")
    return values[0]


@dataclass(eq=False)
class _Recurrence:
    out: int
    initial: int
    next: int
    meta: tuple


@dataclass(eq=False)
class _Iterator:
    out: int
    source: int
    axis: int
    reverse: bool
    where: str


@dataclass(eq=False)
class _LoopOutput:
    kind: str
    source: int
    length: int  # -1 for LAST_VALUE
    axis: int
    meta: tuple
    recurrence: int  # LAST_VALUE: index into the loop's recurrences


@dataclass(eq=False)
class _Loop:
    plan: Plan
    where: str
    count: int  # slot of the COUNT trip limit's input, or -1
    condition: int  # slot of the WHILE trip limit's input, or -1
    recurrences: list[_Recurrence]
    iterators: list[_Iterator]
    outputs: list[_LoopOutput]
    before: list[Step]  # what the WHILE condition needs, run before it is read
    body: list[Step]
    inside: list[int]  # slots computed inside, cleared after the loop unless every tensor is kept

    def __call__(self, values: list, check: bool) -> list[torch.Tensor]:
        plan = self.plan
        count = None
        if self.count >= 0:
            count = int(_scalar(plan, values[self.count], self.where, "the COUNT trip limit"))
        state = [to_declared(values[r.initial], r.meta[0], r.meta[1]) for r in self.recurrences]
        stacked: list[list[torch.Tensor]] = [[] for _ in self.outputs]
        i = 0
        while count is None or i < count:
            for r, value in zip(self.recurrences, state):
                values[r.out] = value
            for it in self.iterators:
                values[it.out] = self._take(it, values[it.source], i, count)
            if self.condition >= 0:
                plan._steps(self.before, values, check, None)
                if not bool(_scalar(plan, values[self.condition], self.where, "the WHILE trip limit")):
                    break
            plan._steps(self.body, values, check, None)
            for k, out in enumerate(self.outputs):
                if out.kind != "LAST_VALUE":
                    stacked[k].append(values[out.source])
            state = [to_declared(values[r.next], r.meta[0], r.meta[1]) for r in self.recurrences]
            i += 1
        results = [self._output(out, values, state, stacked[k]) for k, out in enumerate(self.outputs)]
        if not plan._keep_all:
            returned = plan._returned_set
            for slot in self.inside:
                if slot not in returned:  # a kept tensor inside keeps its last iteration's value
                    values[slot] = None
        return results

    def _take(self, it: _Iterator, source: torch.Tensor, i: int, count: int | None) -> torch.Tensor:
        if it.reverse and count is None:
            raise ReferenceExecutionError(f"{it.where}: a reverse iterator needs a COUNT trip limit")
        index = count - 1 - i if it.reverse else i
        if not 0 <= index < source.shape[it.axis]:
            raise ReferenceExecutionError(
                f"{it.where}: iteration {i} reads slice {index} of axis {it.axis}, which has {source.shape[it.axis]}"
            )
        return source.select(it.axis, index)

    def _output(self, out: _LoopOutput, values: list, state: list, stacked: list) -> torch.Tensor:
        if out.kind == "LAST_VALUE":
            return state[out.recurrence]
        length = int(_scalar(self.plan, values[out.length], self.where, "a loop output's length"))
        if len(stacked) > length:
            raise ReferenceExecutionError(
                f"{self.where}: {len(stacked)} iterations ran but the {out.kind} output {out.meta[3]!r} has length "
                f"{length}"
            )
        if out.kind == "REVERSE":
            stacked = stacked[::-1]
        if stacked:
            y = torch.stack(stacked, dim=out.axis)
            if len(stacked) < length:  # TensorRT leaves these undefined
                pad = list(y.shape)
                pad[out.axis] = length - len(stacked)
                y = torch.cat([y, torch.zeros(pad, dtype=y.dtype, device=y.device)], dim=out.axis)
            return y
        shape = list(out.meta[2])
        shape[out.axis] = length
        if any(d < 0 for d in shape):
            raise ReferenceExecutionError(
                f"{self.where}: no iteration ran and the shape of {out.meta[3]!r} is not static ({out.meta[2]})"
            )
        return torch.zeros(shape, dtype=out.meta[0], device=self.plan.device)


def loop(plan: Plan, region: Region) -> Node:
    """The node running ``region`` (a loop): its boundary read once, its body as steps."""
    graph = plan._graph
    where = f"loop {region.name!r}"
    layers, inputs = graph.layers, graph.inputs
    first = len(plan._slot)
    recurrences, nexts = [], []
    for i in region.boundary.get("RECURRENCE", []):
        lw = f"{where}, recurrence {layers[i].name!r}"
        if len(inputs[i]) < 2 or inputs[i][1] is None:
            raise ReferenceExecutionError(f"{lw}: its second input (the next value) is not set")
        out, meta = plan._output(layers[i].get_output(0), lw)
        recurrences.append(_Recurrence(out, plan._input_slot(inputs[i][0], lw, 0), -1, meta))
        nexts.append(inputs[i][1])
    iterators = []
    for i in region.boundary.get("ITERATOR", []):
        lw = f"{where}, iterator {layers[i].name!r}"
        out, _ = plan._output(layers[i].get_output(0), lw)
        axis, reverse = int(layers[i].axis), bool(layers[i].reverse)
        iterators.append(_Iterator(out, plan._input_slot(inputs[i][0], lw, 0), axis, reverse, lw))
    nodes = {item: plan._item(item) for item in region.items}
    for r, name in zip(recurrences, nexts):
        r.next = plan._input_slot(name, where, 1)
    count = condition = -1
    for i in region.boundary.get("TRIP_LIMIT", []):
        lw = f"{where}, trip limit {layers[i].name!r}"
        kind = L.enum_name(layers[i].kind)
        if kind == "COUNT":
            count = plan._input_slot(inputs[i][0], lw, 0)
        elif kind == "WHILE":
            condition = plan._input_slot(inputs[i][0], lw, 0)
            condition_name = inputs[i][0]
        else:
            raise ReferenceExecutionError(f"{lw}: trip limit kind {kind} is not implemented")
    if count < 0 and condition < 0:
        raise ReferenceExecutionError(f"{where}: has no trip limit (the builder refuses such a loop too)")
    rec_of = {r.out: k for k, r in enumerate(recurrences)}
    outputs, outs, metas = [], [], []
    for i in region.boundary.get("LOOP_OUTPUT", []):
        lw = f"{where}, loop output {layers[i].name!r}"
        kind = L.enum_name(layers[i].kind)
        source = plan._input_slot(inputs[i][0], lw, 0)
        out, meta = plan._output(layers[i].get_output(0), lw)
        if kind == "LAST_VALUE":
            if source not in rec_of:
                raise ReferenceExecutionError(f"{lw}: a LAST_VALUE output must take a recurrence's output")
            outputs.append(_LoopOutput(kind, source, -1, 0, meta, rec_of[source]))
        elif kind in ("CONCATENATE", "REVERSE"):
            if len(inputs[i]) < 2 or inputs[i][1] is None:
                raise ReferenceExecutionError(f"{lw}: a {kind} output needs its length as input 1")
            axis = int(layers[i].axis)
            outputs.append(_LoopOutput(kind, source, plan._input_slot(inputs[i][1], lw, 1), axis, meta, -1))
        else:
            raise ReferenceExecutionError(f"{lw}: loop output kind {kind} is not implemented")
        outs.append(out)
        metas.append(meta)
    before_items = graph.needed_within(region, [condition_name]) if condition >= 0 else []
    before = [Step(nodes[item], (), ()) for item in before_items]
    body = [Step(node, (), ()) for item, node in nodes.items() if item not in set(before_items)]
    inside = [slot for slot in range(first, len(plan._slot)) if slot not in outs]
    run = _Loop(plan, where, count, condition, recurrences, iterators, outputs, before, body, inside)
    ins = [plan._input_slot(name, where, k) for k, name in enumerate(region.reads)]
    return Node("LOOP", where, run, None, ins, outs, metas)


@dataclass(eq=False)
class _Conditional:
    plan: Plan
    where: str
    condition: int
    inputs: list[tuple[int, int]]  # (output slot, source slot) of each conditional input
    then: list[Step]
    other: list[Step]
    outputs: list[tuple[int, int]]  # (then slot, else slot) of each conditional output

    def __call__(self, values: list, check: bool) -> list[torch.Tensor]:
        c = values[self.condition]
        if c.dtype != torch.bool:
            raise ReferenceExecutionError(f"{self.where}: the condition has dtype {c.dtype}, TensorRT requires bool")
        taken = bool(_scalar(self.plan, c, self.where, "the condition"))
        for out, source in self.inputs:
            values[out] = values[source]
        self.plan._steps(self.then if taken else self.other, values, check, None)
        return [values[then if taken else other] for then, other in self.outputs]


def conditional(plan: Plan, region: Region) -> Node:
    """The node running ``region`` (a conditional): both branches as steps, one of them run per call."""
    graph = plan._graph
    where = f"conditional {region.name!r}"
    layers, inputs = graph.layers, graph.inputs
    conditions = region.boundary.get("CONDITION", [])
    if not conditions:
        raise ReferenceExecutionError(f"{where}: has no condition (set_condition was never called)")
    condition = plan._input_slot(inputs[conditions[0]][0], where, 0)
    cond_inputs = []
    for i in region.boundary.get("CONDITIONAL_INPUT", []):
        lw = f"{where}, input {layers[i].name!r}"
        out, _ = plan._output(layers[i].get_output(0), lw)
        cond_inputs.append((out, plan._input_slot(inputs[i][0], lw, 0)))
    nodes = {item: plan._item(item) for item in region.items}
    outputs, outs, metas, branch_names = [], [], [], ([], [])
    for i in region.boundary.get("CONDITIONAL_OUTPUT", []):
        lw = f"{where}, output {layers[i].name!r}"
        if len(inputs[i]) < 2 or None in inputs[i][:2]:
            raise ReferenceExecutionError(f"{lw}: needs a then-input and an else-input")
        outputs.append((plan._input_slot(inputs[i][0], lw, 0), plan._input_slot(inputs[i][1], lw, 1)))
        branch_names[0].append(inputs[i][0])
        branch_names[1].append(inputs[i][1])
        out, meta = plan._output(layers[i].get_output(0), lw)
        outs.append(out)
        metas.append(meta)
    then_items = graph.needed_within(region, branch_names[0])
    else_items = graph.needed_within(region, branch_names[1])
    rest = [item for item in nodes if item not in set(then_items) | set(else_items)]  # e.g. assertions
    then = [Step(nodes[item], (), ()) for item in nodes if item in set(then_items) or item in rest]
    other = [Step(nodes[item], (), ()) for item in nodes if item in set(else_items) or item in rest]
    run = _Conditional(plan, where, condition, cond_inputs, then, other, outputs)
    ins = [plan._input_slot(name, where, k) for k, name in enumerate(region.reads)]
    return Node("CONDITIONAL", where, run, None, ins, outs, metas)
