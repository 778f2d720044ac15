"""A picture of a network: Graphviz ``dot`` source, rendered to .svg/.png by the ``dot`` binary when present.

Layout choices that keep a 300-layer detector readable: top-to-bottom ranks; one box per layer whose label
is its type (with the one or two attributes that matter: kernel/stride, activation, operation), its name
and its output shape; layers grouped into clusters by module-path prefix (``model.2.cv1.conv`` sits in
cluster ``model.2`` and is labelled ``cv1.conv``); constant layers (weights, biases) folded away.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from trtx_base.errors import UserError
from trtx_base.files import atomic_write

FORMATS = (".svg", ".png", ".dot")


class GraphError(UserError, ValueError):
    """A graph cannot be drawn as asked (a format we do not write, Graphviz failed); the message says which."""


#: fill colour per layer type (others: white)
_COLOURS = {
    "CONVOLUTION": "#cfe2ff",
    "DECONVOLUTION": "#cfe2ff",
    "MATRIX_MULTIPLY": "#cfe2ff",
    "ACTIVATION": "#fde2c8",
    "SCALE": "#e2d9f3",
    "NORMALIZATION": "#e2d9f3",
    "POOLING": "#d1e7dd",
    "REDUCE": "#d1e7dd",
    "CONCATENATION": "#fff3cd",
    "ELEMENTWISE": "#f8d7da",
    "RESIZE": "#d1e7dd",
    "SHUFFLE": "#eeeeee",
    "SLICE": "#eeeeee",
    "SOFTMAX": "#fde2c8",
}
_SHORT_TYPE = {
    "CONVOLUTION": "Conv",
    "DECONVOLUTION": "Deconv",
    "MATRIX_MULTIPLY": "MatMul",
    "ACTIVATION": "Act",
    "CONCATENATION": "Concat",
    "ELEMENTWISE": "Eltwise",
    "SOFTMAX": "Softmax",
    "PARAMETRIC_RELU": "PReLU",
}


@dataclass(frozen=True)
class GraphFile:
    """What :func:`write_graph` wrote: ``path``, whether it is rendered, and a note for the user."""

    path: Path
    rendered: bool
    note: str = ""

    def __str__(self) -> str:
        return self.note or str(self.path)


def write_graph(
    network, path: str | os.PathLike, *, blocks: bool = False, show_constants: bool = False, dpi: int = 144
) -> GraphFile:
    """Draw ``network`` into ``path`` (.svg, .png or .dot). Without Graphviz's ``dot`` binary an image
    request writes the .dot beside it and the returned note says how to render it.

    ``blocks=True`` draws one node per module-path cluster (an overview of a long network); ``dpi`` applies
    to .png."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise GraphError(f"{path}: graph format {suffix or '(none)'} is not one of {', '.join(FORMATS)}")
    source = to_dot(network, blocks=blocks, show_constants=show_constants)
    if suffix == ".dot":
        atomic_write(path, source)
        png = path.with_suffix(".png")
        return GraphFile(path, rendered=False, note=f"wrote {path}; render it with: dot -Tpng {path} -o {png}")
    dot = shutil.which("dot")
    if dot is None:
        dot_path = path.with_suffix(".dot")
        atomic_write(dot_path, source)
        return GraphFile(
            dot_path,
            rendered=False,
            note=f"Graphviz 'dot' is not installed, so {path.name} was not rendered; wrote {dot_path}. Install "
            f"graphviz (apt-get install graphviz) and run: dot -T{suffix[1:]} {dot_path} -o {path}",
        )
    command = [dot, f"-T{suffix[1:]}"] + ([f"-Gdpi={dpi}"] if suffix == ".png" else [])
    proc = subprocess.run(command, input=source.encode(), capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise GraphError(f"dot -T{suffix[1:]} failed for {path}: {proc.stderr.decode(errors='replace').strip()}")
    atomic_write(path, proc.stdout)
    return GraphFile(path, rendered=True, note=f"wrote {path}")


def to_dot(network, *, blocks: bool = False, show_constants: bool = False, cluster_depth: int | None = None) -> str:
    """Graphviz source for ``network`` (an INetworkDefinition or a :class:`trtx.net.Net`).

    ``blocks=True`` collapses each cluster into one node: its prefix, layer count, main layer types and the
    shape of its last layer's output.

    ``cluster_depth`` fixes how many leading name components form a cluster; by default a name is clustered
    by its module-path prefix (``model.2``, ``layer1.0``, ``inception3a``); a cluster needs two layers.
    """
    from trtx import layers as layer_api

    nw = getattr(network, "network", network)
    all_layers = list(layer_api.layers(nw))
    producer: dict[str, str] = {}
    hidden: set[str] = set()
    for i, layer in enumerate(all_layers):
        if _kind(layer) == "CONSTANT" and not show_constants:
            hidden.add(f"L{i}")
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = f"L{i}"
    lines = [
        f"digraph {_quote(nw.name or 'network')} {{",
        "  rankdir=TB; newrank=true; nodesep=0.25; ranksep=0.3;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica", fontsize=10, '
        'margin="0.08,0.03"];',
        '  edge [arrowsize=0.6, color="#555555"];',
        '  graph [fontname="Helvetica", fontsize=11, labeljust=l, style="rounded,dashed", color="#888888"];',
    ]
    for i in range(nw.num_inputs):
        t = nw.get_input(i)
        producer[t.name] = f"in{i}"
        label = f"input {t.name}\\n{_shape(t.shape)}"
        lines.append(f'  in{i} [shape=oval, fillcolor="#d1e7dd", label={_quote(label, raw=True)}];')
    visible = [(f"L{i}", layer) for i, layer in enumerate(all_layers) if f"L{i}" not in hidden]
    prefixes = {node: _cluster(layer.name, cluster_depth) for node, layer in visible}
    sizes = Counter(prefixes.values())
    clusters: dict[str, list[str]] = defaultdict(list)
    nodes: dict[str, str] = {}
    for node, layer in visible:
        prefix = prefixes[node] if sizes[prefixes[node]] > 1 else ""
        clusters[prefix].append(node)
        nodes[node] = _node(node, layer, prefix)
    rep = {node: node for node in nodes}  # node -> the node drawn for it (its block when collapsed)
    for k, (prefix, members) in enumerate(clusters.items()):
        if prefix and blocks:
            block = f"B{k}"
            rep.update((n, block) for n in members)
            layers_in = [all_layers[int(n[1:])] for n in members]
            lines.append(f"  {_block_node(block, prefix, layers_in)}")
        elif prefix:
            lines.append(f"  subgraph {_quote('cluster_' + prefix)} {{")
            lines.append(f"    label={_quote(prefix)};")
            lines.extend("    " + nodes[n] for n in members)
            lines.append("  }")
        else:
            lines.extend("  " + nodes[n] for n in members)
    rep.update((f"in{i}", f"in{i}") for i in range(nw.num_inputs))
    edges: list[tuple[str, str]] = []
    for i, layer in enumerate(all_layers):
        node = f"L{i}"
        if node in hidden:
            continue
        for j in range(layer.num_inputs):
            t = layer.get_input(j)
            if t is None or t.name not in producer or producer[t.name] in hidden:
                continue
            edge = (rep[producer[t.name]], rep[node])
            if edge[0] != edge[1] and edge not in edges:
                edges.append(edge)
    lines.extend(f"  {a} -> {b};" for a, b in edges)
    for i in range(nw.num_outputs):
        t = nw.get_output(i)
        label = f"output {t.name}\\n{_shape(t.shape)}"
        lines.append(f'  out{i} [shape=oval, fillcolor="#fff3cd", label={_quote(label, raw=True)}];')
        if t.name in producer and producer[t.name] in rep:
            lines.append(f"  {rep[producer[t.name]]} -> out{i};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node(node: str, layer, prefix: str) -> str:
    kind = _kind(layer)
    name = layer.name
    short = name[len(prefix) + 1 :] if prefix and name.startswith(prefix + ".") else name
    shapes = ", ".join(_shape(layer.get_output(j).shape) for j in range(layer.num_outputs))
    label = "\\n".join(_escape(s) for s in (_title(layer, kind), _ellipsize(short), shapes))
    colour = _COLOURS.get(kind, "white")
    return f"{node} [label={_quote(label, raw=True)}, fillcolor={_quote(colour)}, tooltip={_quote(name)}];"


def _block_node(node: str, prefix: str, layers: list) -> str:
    kinds = Counter(_title(layer, _kind(layer)).split(" ")[0] for layer in layers)
    main = ", ".join(f"{k}×{n}" if n > 1 else k for k, n in kinds.most_common(3))
    more = ", …" if len(kinds) > 3 else ""
    last = layers[-1]
    shape = ", ".join(_shape(last.get_output(j).shape) for j in range(last.num_outputs))
    label = "\\n".join(_escape(s) for s in (prefix, f"{len(layers)} layers: {main}{more}", shape))
    return f'{node} [label={_quote(label, raw=True)}, fillcolor="#f3f3f3", tooltip={_quote(prefix)}];'


def _title(layer, kind: str) -> str:
    """Type plus the attribute that tells this layer apart: 'Conv 3x3/2', 'SIGMOID', 'Eltwise PROD'."""
    base = _SHORT_TYPE.get(kind, kind.replace("_", " ").title().replace(" ", ""))
    try:
        if kind in ("CONVOLUTION", "DECONVOLUTION"):
            k = "x".join(str(d) for d in layer.kernel_size_nd)
            s = tuple(layer.stride_nd)
            g = int(getattr(layer, "num_groups", 1))
            return f"{base} {k}" + (f"/{s[0]}" if set(s) != {1} else "") + (f" g{g}" if g != 1 else "")
        if kind == "ACTIVATION":
            return _enum(layer.type).title()  # the typed layer's .type is the activation kind
        if kind in ("ELEMENTWISE", "UNARY", "REDUCE"):
            return f"{base} {_enum(layer.op).lower()}"
        if kind == "POOLING":
            w = "x".join(str(d) for d in layer.window_size_nd)
            return f"{_enum(layer.type).title()}Pool {w}"
        if kind == "RESIZE":
            return f"Resize {_enum(layer.resize_mode).lower()}"
    except (AttributeError, TypeError):
        pass
    return base


def _kind(layer) -> str:
    from trtx import layers as layer_api

    return layer_api.enum_name(layer_api.layer_type(layer))


def _enum(value) -> str:
    return str(value).split(".")[-1]


def _cluster(name: str, depth: int | None) -> str:
    """The module-path prefix a layer is grouped under: up to a numeric component in first or second place
    (``model.2``, ``features.3``, ``layer1.0``), else the first component (``inception3a``, ``fc1``)."""
    parts = name.split(".")
    if depth is not None:
        return ".".join(parts[:depth]) if len(parts) >= depth else ""
    for k, part in enumerate(parts[:2]):
        if part.isdigit():
            return ".".join(parts[: k + 1])
    return parts[0]


def _shape(dims) -> str:
    dims = tuple(int(d) for d in dims)
    return "×".join("?" if d < 0 else str(d) for d in dims) if dims else "scalar"


def _ellipsize(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _quote(text: str, raw: bool = False) -> str:
    """A dot string literal; ``raw`` text is already escaped (keeps its \\n line breaks)."""
    if not raw:
        text = _escape(text)
    text = re.sub(r"[\r\n]", " ", text)
    return f'"{text}"'
