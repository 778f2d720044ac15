"""``fast_math``: several layers of a plan run as one kernel that computes the same function with fewer roundings.

Each rewrite takes the plan's nodes in order and returns them with some runs of layers replaced by one node; a
layer is only absorbed when nothing but the next layer of the pattern reads its output and the caller does not get
it back (a network output or a kept tensor). The results differ from the plain executor's in the last bits only;
:class:`~trtx.reference.plan.Plan` applies them when ``fast_math`` is on (by default on CUDA).

* convolution followed by a per-channel scale (``net.batchnorm``: y = x·s + t) -> one convolution with the kernel
  scaled by s and the bias b·s + t, folded once per input shape;
* convolution (folded or not) -> ReLU, and convolution -> + z -> ReLU (a residual block's end) -> one node: on CUDA
  one cuDNN kernel (``torch.cudnn_convolution_relu`` / ``cudnn_convolution_add_relu``), elsewhere the convolution
  followed by the sum and the ReLU in place;
* x · sigmoid(x) -> one SiLU, and a convolution -> SiLU -> one node: on CUDA the convolution without its bias, then
  one kernel adding the bias and applying SiLU per NCHW plane (NVRTC through ``torch.cuda._compile_kernel``;
  PyTorch adds a convolution's bias in a kernel of its own, and a broadcasting jiterator kernel measured slower
  than the two), elsewhere the convolution and SiLU in place;
* a tree of elementwise layers (sums, products, sigmoids, ... whose inner results nothing else reads) -> one node:
  on CUDA one kernel generated for the tree (``torch.cuda.jiterator``), elsewhere, and on the first run of each
  input shape (the one that checks shapes), the layers one after the other.
"""

from __future__ import annotations

import functools
import hashlib

import torch

from trtx.reference import nn
from trtx.reference.core import LayerCall, Node


def fuse(nodes: list[Node], returned: set[int]) -> list[Node]:
    """Every rewrite of this module, in order (a folded convolution may feed a ReLU or a SiLU)."""
    nodes = fuse_conv_relu(fold_conv_scale(nodes, returned), returned)
    return fuse_elementwise(fuse_conv_silu(fuse_silu(nodes, returned), returned), returned)


def _readers(nodes: list[Node]) -> tuple[dict[int, int], dict[int, Node]]:
    """(slot -> how many inputs read it, slot -> the node producing it)."""
    uses: dict[int, int] = {}
    for node in nodes:
        for i in node.ins:
            uses[i] = uses.get(i, 0) + 1
    return uses, {slot: node for node in nodes for slot in node.outs}


# ---- convolution + per-channel scale ---------------------------------------------------------------


def _channel_affine(scale: Node, channels: int) -> tuple[torch.Tensor | None, torch.Tensor | None] | None:
    """(s, t) of a SCALE node computing x·s + t per channel of axis 1, or None if it is anything else."""
    call = scale.call
    layer = call.layer
    if layer.mode.name != "CHANNEL" or int(layer.channel_axis) != 1 or len(scale.ins) != 1:
        return None
    s, t, power = (call.weights(getattr(layer, name)) for name in ("scale", "shift", "power"))
    for w in (s, t, power):
        if w is not None and (w.numel() != channels or not bool(torch.isfinite(w).all())):
            return None
    if power is not None and not bool((power == 1).all()):
        return None
    return s, t


def _folded(setup: nn.ConvSetup, s: torch.Tensor | None, t: torch.Tensor | None) -> nn.ConvSetup:
    """The convolution computing conv(x)·s + t: kernel·s per output channel, bias b·s + t (in float64, rounded
    once to the kernel's dtype)."""
    w, b = setup.w.double(), None if setup.b is None else setup.b.double()
    if s is not None:
        s = s.double().reshape(-1)
        w = w * s.reshape(-1, *(1,) * (w.dim() - 1))
        b = None if b is None else b * s
    if t is not None:
        b = t.double().reshape(-1) if b is None else b + t.double().reshape(-1)
    w = w.to(setup.w.dtype).contiguous(memory_format=setup.layout or torch.contiguous_format)
    return setup._replace(w=w, b=None if b is None else b.to(setup.w.dtype))


def _conv(call: LayerCall, *, s: torch.Tensor | None, t: torch.Tensor | None, add: bool, act: str | None):
    """A fused convolution node's op: act(conv(x)·s + t (+ z)), x = input 0, z = input 1 when ``add``."""
    x = call.x(0)
    setup = call.memo(("fused conv", x.shape), lambda: _folded(nn.conv_setup(call, x, static=True), s, t))
    z = call.x(1) if add else None
    cuda = x.is_cuda and setup.pads is None and setup.nd == 2 and torch.backends.cudnn.enabled
    if act == "relu" and cuda:
        args = (setup.b, setup.stride, setup.padding, setup.dilation, setup.groups)
        if z is None:
            return [torch.cudnn_convolution_relu(x.contiguous(), setup.w, *args)]
        if z.shape == call.memo(("fused conv output", x.shape), lambda: _output_shape(x, setup)):
            return [torch.cudnn_convolution_add_relu(x.contiguous(), setup.w, z.contiguous(), 1.0, *args)]
    kernel = _bias_silu_kernel(x.device) if act == "silu" and cuda and setup.b is not None else None
    if kernel is not None:
        y = nn.convolve(call, x, setup._replace(b=None))
        if y.is_contiguous() and y.numel() < 2**31:
            return [_launch(kernel, y, setup.b)]
        y = y.add_(setup.b.reshape(1, -1, 1, 1))
        return [torch.nn.functional.silu(y, inplace=True)]
    y = nn.convolve(call, x, setup)
    if z is not None:
        y = y.add_(z) if torch.broadcast_shapes(y.shape, z.shape) == y.shape else y + z
    if act == "silu":
        return [torch.nn.functional.silu(y, inplace=True)]
    return [y.clamp_min_(0) if act == "relu" else y]


_BIAS_SILU_SOURCE = r"""
extern "C" __global__ void trtx_bias_silu(const float* __restrict__ x, const float* __restrict__ bias,
                                         float* __restrict__ y, int channels, int hw) {
    // one (n, c) plane of an NCHW tensor per blockIdx.x: silu(x + bias[c]), float4 where the plane allows
    long long plane = blockIdx.x;
    float b = bias[plane % channels];
    const float* xp = x + plane * hw;
    float* yp = y + plane * hw;
    int step = gridDim.y * blockDim.x;
    int first = blockIdx.y * blockDim.x + threadIdx.x;
    if (hw % 4 == 0 && ((unsigned long long)xp % 16 == 0) && ((unsigned long long)yp % 16 == 0)) {
        for (int i = first; i < hw / 4; i += step) {
            float4 v = reinterpret_cast<const float4*>(xp)[i];
            v.x += b; v.y += b; v.z += b; v.w += b;
            v.x = v.x / (1.0f + expf(-v.x)); v.y = v.y / (1.0f + expf(-v.y));
            v.z = v.z / (1.0f + expf(-v.z)); v.w = v.w / (1.0f + expf(-v.w));
            reinterpret_cast<float4*>(yp)[i] = v;
        }
    } else {
        for (int i = first; i < hw; i += step) {
            float v = xp[i] + b;
            yp[i] = v / (1.0f + expf(-v));
        }
    }
}
"""


@functools.cache
def _bias_silu_kernel(device: torch.device):
    """The NVRTC-compiled bias + SiLU kernel (``torch.cuda._compile_kernel``), or None where torch has none or
    it disagrees with PyTorch's silu on a probe: then the plan keeps two kernels. First called in a plan's
    first, uncaptured run: the probe synchronizes."""
    try:
        with torch.cuda.device(device):
            kernel = torch.cuda._compile_kernel(_BIAS_SILU_SOURCE, "trtx_bias_silu")
            for shape in ((2, 3, 4, 8), (1, 2, 3, 5)):  # float4 planes, odd planes
                x = torch.randn(shape, device=device) * 8
                b = torch.randn(shape[1], device=device)
                want = torch.nn.functional.silu(x + b.reshape(1, -1, 1, 1))
                if not torch.allclose(_launch(kernel, x, b), want, rtol=1e-6, atol=1e-6):
                    return None
    except Exception:  # noqa: BLE001  -- no NVRTC kernels in this torch, or the kernel did not compile
        return None
    return kernel


def _launch(kernel, x: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """silu(x + b per channel) of a contiguous NCHW float tensor into ``out`` (default: a new one), on the current
    stream."""
    y = torch.empty_like(x) if out is None else out
    n, c = x.shape[0], x.shape[1]
    hw = x[0, 0].numel()
    if x.numel():
        chunks = min(max(-(-hw // (4 * 256)), 1), 65535)
        kernel(grid=(n * c, chunks, 1), block=(256, 1, 1), args=[x, b, y, c, hw])
    return y


def _output_shape(x: torch.Tensor, setup: nn.ConvSetup) -> torch.Size:
    """The shape a convolution padding itself by ``setup.padding`` gives for ``x``."""
    kernel = setup.shape[2:]
    spatial = [
        (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
        for size, pad, dil, k, stride in zip(x.shape[2:], setup.padding, setup.dilation, kernel, setup.stride)
    ]
    return torch.Size([x.shape[0], setup.shape[0], *spatial])


def _conv_node(conv: Node, last: Node, ins: list[int], fused: str, **how) -> Node:
    """A node running ``conv`` (a static convolution, perhaps already fused) through ``last``'s output."""
    call = LayerCall(conv.call.raw, "CONVOLUTION", None, conv.call.device, last.call.out_dtypes,
                     host=conv.call._host, trt=conv.call.trt)  # fmt: skip
    before = conv.op.keywords if conv.fused else {"s": None, "t": None, "add": False, "act": None}
    op = functools.partial(_conv, **{**before, **how})
    where = conv.where if last is conv else f"{conv.where} … {last.where}"
    return Node("CONVOLUTION", where, op, call, ins, last.outs, last.meta, fused=fused)


def _static_conv(conv: Node | None, slot: int, uses: dict[int, int], returned: set[int], out: list[Node]) -> bool:
    """``conv`` is a convolution with the layer's own weights, nothing but one input reads its output ``slot``
    (not returned either), and it is still a node of its own in ``out``."""
    return (
        conv is not None
        and conv.kind == "CONVOLUTION"
        and all(i < 0 for i in conv.ins[1:])  # kernel and bias are the layer's, not Q/DQ inputs
        and uses.get(slot) == 1
        and slot not in returned
        and conv.meta[0][0] == torch.float32
        and conv in out
    )


def fold_conv_scale(nodes: list[Node], returned: set[int]) -> list[Node]:
    """A CONVOLUTION with constant weights whose only reader is a per-channel SCALE -> one convolution."""
    uses, producer = _readers(nodes)
    out: list[Node] = []
    for node in nodes:
        conv = producer.get(node.ins[0]) if node.kind == "SCALE" and node.ins else None
        if _static_conv(conv, node.ins[0], uses, returned, out) and not conv.fused:
            affine = _channel_affine(node, int(conv.call.layer.num_output_maps))
            if affine is not None:
                out.remove(conv)
                node = _conv_node(conv, node, conv.ins[:1], "conv+scale", s=affine[0], t=affine[1])
        out.append(node)
    return out


def _is(node: Node | None, kind: str, op: str) -> bool:
    """``node`` is an ACTIVATION of type ``op`` or an ELEMENTWISE of operation ``op``."""
    if node is None or node.kind != kind or node.call is None:
        return False
    layer = node.call.layer
    return (layer.type if kind == "ACTIVATION" else layer.op).name == op


def fuse_conv_relu(nodes: list[Node], returned: set[int]) -> list[Node]:
    """ReLU(conv) and ReLU(conv + z) -> one node (z a residual declared with the convolution's shape; a run where
    one broadcasts after all takes the unfused path)."""
    uses, producer = _readers(nodes)
    out: list[Node] = []
    for node in nodes:
        a = node.ins[0] if _is(node, "ACTIVATION", "RELU") and len(node.ins) == 1 else None
        if a is not None and node.meta[0][0] == torch.float32:
            src = producer.get(a)
            if _static_conv(src, a, uses, returned, out):
                out.remove(src)
                node = _conv_node(src, node, src.ins[:1], _name(src, "relu"), act="relu")
            elif (
                _is(src, "ELEMENTWISE", "SUM")
                and uses.get(a) == 1
                and a not in returned
                and src in out
                and len(src.ins) == 2
                and src.ins[0] != src.ins[1]
            ):
                for c, z in (src.ins, src.ins[::-1]):
                    conv = producer.get(c)
                    same_shape = conv is not None and conv.meta[0][2] == src.meta[0][2] == _dims(producer, z)
                    if same_shape and _static_conv(conv, c, uses, returned, out):
                        out.remove(conv)
                        out.remove(src)
                        node = _conv_node(conv, node, [conv.ins[0], z], _name(conv, "add+relu"), add=True,
                                          act="relu")  # fmt: skip
                        break
        out.append(node)
    return out


def _name(conv: Node, then: str) -> str:
    return f"{conv.fused or 'conv'}+{then}"


def _dims(producer: dict[int, Node], slot: int) -> tuple[int, ...] | None:
    """Declared dims of ``slot`` where a node of the list produces it (None for feeds and constants)."""
    node = producer.get(slot)
    return None if node is None else node.meta[node.outs.index(slot)][2]


# ---- SiLU ------------------------------------------------------------------------------------------


def _silu(call: LayerCall) -> list[torch.Tensor]:
    x = call.x(0)
    return [torch.nn.functional.silu(x, inplace=call.scratch(0, x) is not None)]


def fuse_silu(nodes: list[Node], returned: set[int]) -> list[Node]:
    """x · sigmoid(x) (an ELEMENTWISE PROD of x and an ACTIVATION SIGMOID of x used nowhere else) as one SiLU:
    the same function, one kernel instead of two, the product rounded once instead of twice."""
    uses, producer = _readers(nodes)
    out: list[Node] = []
    for node in nodes:
        if node.kind == "ELEMENTWISE" and len(node.ins) == 2 and node.call.layer.op.name == "PROD":
            for x, s in (node.ins, node.ins[::-1]):
                sig = producer.get(s)
                if (
                    sig is not None
                    and sig.kind == "ACTIVATION"
                    and sig.call.layer.type.name == "SIGMOID"
                    and sig.ins == [x]
                    and uses.get(s) == 1
                    and s not in returned
                    and sig in out
                    and node.meta[0][0].is_floating_point
                ):
                    out.remove(sig)
                    call = LayerCall(node.call.raw, "SILU", None, node.call.device, node.call.out_dtypes,
                                     host=node.call._host, trt=node.call.trt)  # fmt: skip
                    node = Node("SILU", f"{node.where} = SiLU of {sig.where}", _silu, call, [x], node.outs, node.meta,
                                fused="silu")  # fmt: skip
                    break
        out.append(node)
    return out


def fuse_conv_silu(nodes: list[Node], returned: set[int]) -> list[Node]:
    """SiLU(conv) (after :func:`fuse_silu`) -> one node."""
    uses, producer = _readers(nodes)
    out: list[Node] = []
    for node in nodes:
        if node.kind == "SILU" and node.meta[0][0] == torch.float32:
            src = producer.get(node.ins[0])
            if _static_conv(src, node.ins[0], uses, returned, out) and not (src.fused or "").endswith("relu"):
                out.remove(src)
                node = _conv_node(src, node, src.ins[:1], _name(src, "silu"), act="silu")
        out.append(node)
    return out


# ---- elementwise trees -------------------------------------------------------------------------------

#: (kind, operation) -> the expression in CUDA C++ of T (float), a and b the operands
_EXPRESSIONS = {
    ("ELEMENTWISE", "SUM"): "{a} + {b}",
    ("ELEMENTWISE", "SUB"): "{a} - {b}",
    ("ELEMENTWISE", "PROD"): "{a} * {b}",
    ("ELEMENTWISE", "DIV"): "{a} / {b}",
    ("ACTIVATION", "SIGMOID"): "T(1) / (T(1) + exp(-{a}))",
    ("ACTIVATION", "RELU"): "({a} < T(0) ? T(0) : {a})",  # NaN stays NaN, as clamp_min
    ("ACTIVATION", "TANH"): "tanh({a})",
    ("SILU", None): "{a} / (T(1) + exp(-{a}))",
    ("UNARY", "EXP"): "exp({a})",
    ("UNARY", "NEG"): "-{a}",
    ("UNARY", "ABS"): "fabs({a})",
    ("UNARY", "SQRT"): "sqrt({a})",
    ("UNARY", "RECIP"): "T(1) / {a}",
}
_MAX_LEAVES = 8  # the inputs one jiterator kernel takes
_REFUSED: set[str] = set()  # kernels that did not compile


def _expression(node: Node) -> str | None:
    if node.call is None or len(node.outs) != 1 or node.meta[0][0] != torch.float32:
        return None
    if node.kind == "SILU":
        key = ("SILU", None)
    elif node.kind == "ACTIVATION":
        key = (node.kind, node.call.layer.type.name)
    elif node.kind in ("ELEMENTWISE", "UNARY"):
        key = (node.kind, node.call.layer.op.name)
    else:
        return None
    arity = 2 if node.kind == "ELEMENTWISE" else 1
    if len(node.ins) != arity or any(i < 0 for i in node.ins):
        return None
    return _EXPRESSIONS.get(key)


def fuse_elementwise(nodes: list[Node], returned: set[int]) -> list[Node]:
    """Trees of elementwise layers -> one node each. From the last layer back, a layer joins the tree of its
    readers when all of them are in one tree and its result is not returned; the tree's last layer is the one
    whose result leaves it. Trees of one layer, or reading more than 8 other tensors, stay as they are."""
    readers: dict[int, list[Node]] = {}
    for node in nodes:
        for i in node.ins:
            readers.setdefault(i, []).append(node)
    tree: dict[int, int] = {}  # id(node) -> index of its tree's last node in ``nodes``
    for k in range(len(nodes) - 1, -1, -1):
        node = nodes[k]
        if _expression(node) is None:
            continue
        slot = node.outs[0]
        trees = {tree.get(id(r)) for r in readers.get(slot, [])}
        joins = slot not in returned and len(trees) == 1 and None not in trees
        tree[id(node)] = trees.pop() if joins else k
    members: dict[int, list[Node]] = {}
    for node in nodes:
        if id(node) in tree:
            members.setdefault(tree[id(node)], []).append(node)
    out: list[Node] = []
    for node in nodes:
        group = members.get(tree.get(id(node), -1), [])
        if len(group) < 2:
            out.append(node)
            continue
        fused = _tree_node(group) if node is group[-1] else None
        if node is group[-1]:
            out.extend([fused] if fused is not None else group)
    return out


def _tree_node(group: list[Node]) -> Node | None:
    """The node running ``group`` (in order, the last one's result leaving it), or None past 8 inputs."""
    inner = {slot for node in group for slot in node.outs}
    leaves = list(dict.fromkeys(i for node in group for i in node.ins if i not in inner))
    if len(leaves) > _MAX_LEAVES:
        return None
    names = {slot: f"in{j}" for j, slot in enumerate(leaves)}
    lines = []
    for j, node in enumerate(group):
        operands = [names[i] for i in node.ins]
        expression = _expression(node).format(a=operands[0], b=operands[-1])
        names[node.outs[0]] = f"v{j}"
        lines.append(f"T v{j} = {expression};")
    params = ", ".join(f"T in{j}" for j in range(len(leaves)))
    body = " ".join(lines)
    name = "trtx_" + hashlib.sha1(body.encode()).hexdigest()[:16]
    code = f"template <typename T> T {name}({params}) {{ {body} return v{len(group) - 1}; }}"
    last = group[-1]
    call = LayerCall(last.call.raw, "ELEMENTWISE", None, last.call.device, last.call.out_dtypes,
                     host=last.call._host, trt=last.call.trt)  # fmt: skip
    op = functools.partial(_run_tree, group=tuple(group), leaves=tuple(leaves), code=code)
    where = f"{len(group)} elementwise layers, {group[0].where} … {last.where}"
    return Node("ELEMENTWISE", where, op, call, leaves, last.outs, last.meta, fused="elementwise")


def _run_tree(call: LayerCall, *, group: tuple[Node, ...], leaves: tuple[int, ...], code: str):
    args = [call.x(j) for j in range(len(leaves))]
    first = call.memo(("tree shapes", *(a.shape for a in args)), lambda: [True])
    kernel = _jit(code) if args[0].is_cuda and not first[0] and code not in _REFUSED else None
    if kernel is not None:
        try:  # compiled at its first call: the second run of a shape, never inside a CUDA graph's capture
            return [kernel(*args)]
        except RuntimeError:  # NVRTC refused it: this tree runs layer by layer from now on
            _REFUSED.add(code)
    values = dict(zip(leaves, args))  # the layers one by one: the plain executor's ops and shape checks
    for node in group:
        node.call.inputs = [values[i] for i in node.ins]
        try:
            values[node.outs[0]] = node.op(node.call)[0]
        finally:
            node.call.inputs = None
    first[0] = False
    return [values[group[-1].outs[0]]]


@functools.cache
def _jit(code: str):
    """The jiterator kernel of ``code`` (compiled at its first call), None where torch has no jiterator."""
    try:
        from torch.cuda import jiterator  # noqa: PLC0415  -- CUDA builds only

        return jiterator._create_jit_fn(code)
    except Exception:  # noqa: BLE001
        return None
