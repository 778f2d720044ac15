"""The order a network's layers run in, with its loops and conditionals as regions.

A loop (``INetworkDefinition.add_loop``) is known by its boundary layers: trip limits, recurrences, iterators and
loop outputs, all sharing one ``ILoop``. Its body is every layer that depends on a value changing from one
iteration to the next (a recurrence's or an iterator's output), up to its loop outputs; layers that do not
(loop invariants) run once, outside. A conditional (``add_if_conditional``) likewise: its condition, inputs and
outputs share one ``IIfConditional``; its branches are the layers that depend on its inputs, up to its outputs
(TensorRT: docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-with-loops.html and
work-with-conditionals.html). A region nested in another one is part of it.

Each level (the network, or a region's body) is put in dependency order on its own, a region counting as one item
that reads the tensors its layers take from outside and writes its outputs; a recurrence's second input (the
only back edge TensorRT allows) is not an edge of that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trtx import layers as L
from trtx.reference.core import REGION_KINDS, ReferenceExecutionError
from trtx_base import backend

LOOP_BOUNDARY = REGION_KINDS[:4]
CONDITIONAL_BOUNDARY = REGION_KINDS[4:]


@dataclass(eq=False)
class Region:
    """A loop or a conditional: its layers (indices into the network's layer list) and what it reads/writes."""

    kind: str  # "LOOP" or "CONDITIONAL"
    name: str
    boundary: dict[str, list[int]]  # boundary layer kind -> layer indices
    members: set[int] = field(default_factory=set)
    parent: Region | None = None
    reads: list[str] = field(default_factory=list)  # tensors its layers take from outside, in first-use order
    writes: list[str] = field(default_factory=list)  # its outputs
    items: list = field(default_factory=list)  # its level in run order: layer indices and nested regions

    def boundary_layers(self) -> set[int]:
        return {i for indices in self.boundary.values() for i in indices}


class Graph:
    """The layers of a network, who produces and who consumes each tensor, and the regions."""

    def __init__(self, layers: list) -> None:
        self.layers = layers
        layer_type_of = backend.trt.ILayer.type.__get__  # (typed activation/pooling layers shadow .type)
        self.kind_enums = [layer_type_of(layer) for layer in layers]
        self.kinds = [L.enum_name(kind) for kind in self.kind_enums]
        self.inputs: list[list[str | None]] = []
        self.outputs: list[list[str]] = []
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, layer in enumerate(layers):
            names = []
            for k in range(layer.num_inputs):
                t = layer.get_input(k)
                names.append(None if t is None else t.name)
                if t is not None:
                    self.consumers.setdefault(t.name, []).append(i)
            self.inputs.append(names)
            outs = [layer.get_output(o).name for o in range(layer.num_outputs)]
            for name in outs:
                if name in self.producer:
                    raise ReferenceExecutionError(
                        f"tensor name {name!r} is produced by both layer {layers[self.producer[name]].name!r} and "
                        f"layer {layer.name!r}; tensor names must be unique"
                    )
                self.producer[name] = i
            self.outputs.append(outs)
        self.regions = self._regions()
        self.region_of: dict[int, Region] = {}  # innermost region of each layer inside one
        for region in sorted(self.regions, key=lambda r: len(r.members), reverse=True):
            for i in region.members:
                self.region_of[i] = region
        for region in self.regions:
            self._levels(region)

    # ---- regions ---------------------------------------------------------------------------------

    def _regions(self) -> list[Region]:
        owners, groups = [], {}
        for i, (layer, kind) in enumerate(zip(self.layers, self.kinds)):
            if kind in LOOP_BOUNDARY:
                owner, region_kind = layer.loop, "LOOP"
            elif kind in CONDITIONAL_BOUNDARY:
                owner, region_kind = layer.conditional, "CONDITIONAL"
            else:
                continue
            owners.append(owner)  # keeps the id stable while grouping
            region = groups.get(id(owner))
            if region is None:
                region = groups[id(owner)] = Region(region_kind, str(owner.name), {})
            region.boundary.setdefault(kind, []).append(i)
        regions = list(groups.values())
        for region in regions:
            self._close(region)
        changed = True
        while changed:  # a region whose boundary another one reaches is nested in it: the outer one holds it all
            changed = False
            for inner in regions:
                for outer in regions:
                    if outer is inner or inner.members <= outer.members:
                        continue
                    if outer.members & inner.boundary_layers():
                        outer.members |= inner.members
                        changed = True
        for region in regions:
            containing = [o for o in regions if o is not region and region.members < o.members]
            region.parent = min(containing, key=lambda o: len(o.members)) if containing else None
            others = [o for o in regions if o is not region and o.members & region.members]
            for o in others:
                if not (o.members <= region.members or region.members <= o.members):
                    raise ReferenceExecutionError(
                        f"{region.kind.lower()} {region.name!r} and {o.kind.lower()} {o.name!r} overlap without "
                        "one being inside the other"
                    )
        return regions

    def _close(self, region: Region) -> None:
        """The region's members: its boundary layers and every layer depending on its entries, up to its exits."""
        entry_kinds = ("RECURRENCE", "ITERATOR") if region.kind == "LOOP" else ("CONDITIONAL_INPUT",)
        members = region.boundary_layers()
        frontier = [i for kind in entry_kinds for i in region.boundary.get(kind, [])]
        while frontier:
            j = frontier.pop()
            for name in self.outputs[j]:
                for c in self.consumers.get(name, []):
                    if c not in members:
                        members.add(c)
                        frontier.append(c)
        region.members = members

    def _levels(self, region: Region) -> None:
        inside = region.members
        region.reads = list(
            dict.fromkeys(
                name
                for i in sorted(inside)
                for name in self.inputs[i]
                if name is not None and self.producer.get(name) not in inside
            )
        )
        exit_kind = "LOOP_OUTPUT" if region.kind == "LOOP" else "CONDITIONAL_OUTPUT"
        region.writes = [name for i in region.boundary.get(exit_kind, []) for name in self.outputs[i]]
        region.items = self.level(region)

    # ---- levels ----------------------------------------------------------------------------------

    def level_items(self, region: Region | None) -> list:
        """The items of a level: its own layers (boundary layers excluded) and the regions directly inside it."""
        boundary = region.boundary_layers() if region is not None else set()
        items: list = [i for i in range(len(self.layers)) if self.region_of.get(i) is region and i not in boundary]
        items += [r for r in self.regions if r.parent is region]
        return items

    def level(self, region: Region | None, roots: list | None = None) -> list:
        """The items of a level in dependency order; only those ``roots`` need when given."""
        items = self.level_items(region)
        made: dict[str, object] = {}  # tensor -> item of this level producing it
        for item in items:
            for name in self._writes(item):
                made[name] = item
        order: list = []
        state: dict = {}  # item -> 1 visiting, 2 done

        def visit(root) -> None:
            stack = [(root, False)]
            while stack:
                item, expanded = stack.pop()
                if expanded:
                    state[item] = 2
                    order.append(item)
                    continue
                if state.get(item) == 2:
                    continue
                if state.get(item) == 1:
                    raise ReferenceExecutionError(f"{self.describe(item)} is part of a cycle")
                state[item] = 1
                stack.append((item, True))
                for name in self._reads(item):
                    dep = made.get(name)
                    if dep is not None and state.get(dep) != 2:
                        if state.get(dep) == 1:
                            raise ReferenceExecutionError(f"{self.describe(item)} is part of a cycle")
                        stack.append((dep, False))

        for item in items if roots is None else roots:
            visit(item)
        return order

    def _reads(self, item) -> list[str]:
        if isinstance(item, Region):
            return item.reads
        return [name for name in self.inputs[item] if name is not None]

    def _writes(self, item) -> list[str]:
        return item.writes if isinstance(item, Region) else self.outputs[item]

    def top(self, needed: set[str] | None) -> list:
        """The network's top level in run order: everything, or what ``needed`` tensors need (plus assertions)."""
        if needed is None:
            return self.level(None)
        items = self.level_items(None)
        holder = {}  # tensor -> top-level item computing it (a region holds every tensor of its layers)
        for item in items:
            if isinstance(item, Region):
                for i in item.members:
                    for name in self.outputs[i]:
                        holder[name] = item
            else:
                for name in self.outputs[item]:
                    holder[name] = item
        roots = [holder[n] for n in needed if n in holder]
        roots += [i for i in items if not isinstance(i, Region) and self.kinds[i] == "ASSERTION"]
        return self.level(None, list(dict.fromkeys(roots, None)))

    def needed_within(self, region: Region, names: list[str]) -> list:
        """The items of ``region``'s level that ``names`` (tensors of that level) need, in run order."""
        holder = {}
        for item in self.level_items(region):
            for name in self._writes(item):
                holder[name] = item
        roots = [holder[n] for n in names if n in holder]
        return self.level(region, list(dict.fromkeys(roots, None)))

    def describe(self, item) -> str:
        if isinstance(item, Region):
            return f"{item.kind.lower()} {item.name!r}"
        return f"layer {self.layers[item].name!r}"
