"""EasyOCR's generation-2 recognizer (easyocr/model/vgg_model.py ``Model``, english_g2): a VGG feature extractor
over a 64-pixel-high grey crop, two bidirectional LSTMs along the width, and a linear layer to the 97 CTC classes
(blank + 96 characters) per column.

TensorRT 10 has no RNN layer: the LSTM is written with the layer API, in one of two forms (``--lstm``):

* ``loop`` (the default): an ILoop over the sequence, one per direction (a reverse iterator for the backward
  one), the recurrent h and c as loop recurrences. The trip count is the sequence length, so one engine serves
  every crop width of the dynamic profile.
* ``unrolled``: one copy of the cell per time step. The sequence length is fixed at build time (``--width``), and
  the layer count grows with it (~14 layers per step, direction and LSTM).

Both compute the input projection W_ih·x + b for all steps at once, outside the recurrence.
Layer names are module paths of the OCR container (``recognizer.FeatureExtraction.ConvNet.0``).
"""

from __future__ import annotations

import numpy as np

from netdefs.common import conv_bn_act, max_pool
from trtx.net import Net

LSTM_FORMS = ("loop", "unrolled")
#: EasyOCR's crop height (easyocr/config.py imgH)
HEIGHT = 64


def feature_extraction(net: Net, x):
    """VGG_FeatureExtractor.ConvNet (indices as in the Sequential): [N, 1, 64, W] -> [N, 256, 3, W/4 - 1]."""
    p = "recognizer.FeatureExtraction.ConvNet"
    x = conv_bn_act(net, x, conv=f"{p}.0", bn=None, act=f"{p}.1", padding=1)
    x = max_pool(net, x, f"{p}.2", 2)
    x = conv_bn_act(net, x, conv=f"{p}.3", bn=None, act=f"{p}.4", padding=1)
    x = max_pool(net, x, f"{p}.5", 2)
    x = conv_bn_act(net, x, conv=f"{p}.6", bn=None, act=f"{p}.7", padding=1)
    x = conv_bn_act(net, x, conv=f"{p}.8", bn=None, act=f"{p}.9", padding=1)
    x = _pool_h(net, x, f"{p}.10")
    x = conv_bn_act(net, x, conv=f"{p}.11", bn=f"{p}.12", act=f"{p}.13", padding=1)
    x = conv_bn_act(net, x, conv=f"{p}.14", bn=f"{p}.15", act=f"{p}.16", padding=1)
    x = _pool_h(net, x, f"{p}.17")
    x = conv_bn_act(net, x, conv=f"{p}.18", bn=None, act=f"{p}.19", kernel=2, padding=0)
    net.alias(x, p)
    return net.alias(x, "recognizer.FeatureExtraction")


def _pool_h(net: Net, x, name: str):
    """nn.MaxPool2d((2, 1), (2, 1)): halves the height only."""
    layer = net.network.add_pooling_nd(x, net.trt.PoolingType.MAX, (2, 1))
    layer.stride_nd = (2, 1)
    return net.name(layer, name).get_output(0)


def column_features(net: Net, x):
    """``AdaptiveAvgPool((None, 1))(visual_feature.permute(0, 3, 1, 2)).squeeze(3)``: the mean over the 3 rows,
    one 256-vector per column: [N, T, 256]."""
    permute = net.network.add_shuffle(x)
    permute.first_transpose = (0, 3, 1, 2)
    x = net.name(permute, "recognizer.permute").get_output(0)
    mean = net.network.add_reduce(x, net.trt.ReduceOperation.AVG, 1 << 3, True)
    x = net.name(mean, "recognizer.AdaptiveAvgPool").get_output(0)
    squeeze = net.network.add_shuffle(x)
    squeeze.reshape_dims = (0, 0, 0)
    return net.name(squeeze, "recognizer.squeeze").get_output(0)


# ---- the LSTM -------------------------------------------------------------------------------------------
class _Cell:
    """The weights of one direction of an nn.LSTM layer, as constants: gates i, f, g, o (PyTorch's order)."""

    def __init__(self, net: Net, path: str, suffix: str) -> None:
        bias = net.array(f"{path}.bias_ih_l0{suffix}", layer=path) + net.array(f"{path}.bias_hh_l0{suffix}", layer=path)
        self.hidden = len(bias) // 4
        w_ih = net.array(f"{path}.weight_ih_l0{suffix}", (4 * self.hidden, -1), layer=path)
        w_hh = net.array(f"{path}.weight_hh_l0{suffix}", (4 * self.hidden, self.hidden), layer=path)
        name = f"{path}{suffix or '_forward'}"
        self.w_ih = net.constant(w_ih[None], f"{name}.weight_ih")  # [1, 4h, in]
        self.bias = net.constant(bias.reshape(1, 1, -1), f"{name}.bias")  # [1, 1, 4h]
        self.w_hh = net.constant(w_hh, f"{name}.weight_hh")  # [4h, h]
        self.gate_index = [net.constant(np.array(k, np.int32), f"{name}.gate{k}", np.int32) for k in range(4)]
        self.name = name


def _input_projection(net: Net, x, cell: _Cell):
    """W_ih·x_t + b_ih + b_hh for every step at once: [N, T, in] -> [N, T, 4h]."""
    M, E = net.trt.MatrixOperation, net.trt.ElementWiseOperation
    mm = net.network.add_matrix_multiply(x, M.NONE, cell.w_ih, M.TRANSPOSE)
    proj = net.name(mm, f"{cell.name}.input_projection").get_output(0)
    return net.name(net.network.add_elementwise(proj, cell.bias, E.SUM), f"{cell.name}.input_bias").get_output(0)


def _step(net: Net, xw_t, h, c, cell: _Cell, name: str):
    """One LSTM step: gates = xw_t + W_hh·h; c' = σ(f)·c + σ(i)·tanh(g); h' = σ(o)·tanh(c')."""
    nw, trt = net.network, net.trt
    M, E, A = trt.MatrixOperation, trt.ElementWiseOperation, trt.ActivationType
    rec = net.name(nw.add_matrix_multiply(h, M.NONE, cell.w_hh, M.TRANSPOSE), f"{name}.recurrent").get_output(0)
    gates = net.name(nw.add_elementwise(xw_t, rec, E.SUM), f"{name}.gates").get_output(0)
    split = nw.add_shuffle(gates)
    split.reshape_dims = (0, 4, cell.hidden)  # [N, 4h] -> [N, 4, h]: one gate per row
    gates = net.name(split, f"{name}.split").get_output(0)

    def gate(k: int, kind):
        part = net.name(nw.add_gather(gates, cell.gate_index[k], 1), f"{name}.gate{k}").get_output(0)
        return net.name(nw.add_activation(part, kind), f"{name}.gate{k}.act").get_output(0)

    i, f, g, o = gate(0, A.SIGMOID), gate(1, A.SIGMOID), gate(2, A.TANH), gate(3, A.SIGMOID)
    fc = net.name(nw.add_elementwise(f, c, E.PROD), f"{name}.forget").get_output(0)
    ig = net.name(nw.add_elementwise(i, g, E.PROD), f"{name}.input").get_output(0)
    c_next = net.name(nw.add_elementwise(fc, ig, E.SUM), f"{name}.c").get_output(0)
    tanh_c = net.name(nw.add_activation(c_next, A.TANH), f"{name}.tanh_c").get_output(0)
    h_next = net.name(nw.add_elementwise(o, tanh_c, E.PROD), f"{name}.h").get_output(0)
    return h_next, c_next


def _zeros_like_state(net: Net, xw, cell: _Cell):
    """Zeros [N, h] for the initial h and c (N, the batch, is dynamic): a fill of the shape of xw[:, 0, :h]."""
    nw, trt = net.network, net.trt
    shape = net.name(nw.add_shape(xw), f"{cell.name}.shape").get_output(0)
    batch = net.name(nw.add_slice(shape, (0,), (1,), (1,)), f"{cell.name}.batch").get_output(0)
    hidden = net.constant(np.array([cell.hidden], np.int64), f"{cell.name}.hidden", np.int64)
    dims = net.name(nw.add_concatenation([batch, hidden]), f"{cell.name}.state_shape").get_output(0)
    fill = nw.add_fill((0, 0), trt.FillOperation.LINSPACE, trt.DataType.FLOAT)  # fp32: no fp16 LINSPACE
    fill.set_input(0, dims)
    fill.set_input(1, net.constant(np.array(0.0, np.float32), f"{cell.name}.zero", np.float32))
    fill.set_input(2, net.constant(np.zeros(2, np.float32), f"{cell.name}.zero_step", np.float32))
    zeros = net.name(fill, f"{cell.name}.zeros").get_output(0)
    return net.cast(zeros, xw.dtype, f"{cell.name}.zeros.cast")


def _direction_loop(net: Net, xw, cell: _Cell, reverse: bool):
    """One direction as an ILoop over axis 1 of xw [N, T, 4h] -> h for every step, in time order [N, T, h]."""
    nw, trt = net.network, net.trt
    loop = nw.add_loop()
    shape = net.name(nw.add_shape(xw), f"{cell.name}.steps_shape").get_output(0)
    steps = nw.add_slice(shape, (1,), (1,), (1,))
    steps = net.name(steps, f"{cell.name}.steps").get_output(0)
    scalar = nw.add_shuffle(steps)
    scalar.reshape_dims = ()
    steps = net.name(scalar, f"{cell.name}.trip_count").get_output(0)
    loop.add_trip_limit(steps, trt.TripLimit.COUNT)
    xw_t = loop.add_iterator(xw, 1, reverse).get_output(0)
    zeros = _zeros_like_state(net, xw, cell)
    h = loop.add_recurrence(zeros)
    c = loop.add_recurrence(zeros)
    h_next, c_next = _step(net, xw_t, h.get_output(0), c.get_output(0), cell, f"{cell.name}.step")
    h.set_input(1, h_next)
    c.set_input(1, c_next)
    out = loop.add_loop_output(h_next, trt.LoopOutput.REVERSE if reverse else trt.LoopOutput.CONCATENATE, 1)
    out.set_input(1, steps)
    return net.name(out, f"{cell.name}.sequence").get_output(0)


def _direction_unrolled(net: Net, xw, cell: _Cell, reverse: bool, steps: int):
    """One direction unrolled over a fixed number of steps -> [N, T, h] in time order."""
    nw = net.network
    h = c = _zeros_like_state(net, xw, cell)
    outputs: list = [None] * steps
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        index = net.constant(np.array(t, np.int32), f"{cell.name}.t{t}", np.int32)
        xw_t = net.name(nw.add_gather(xw, index, 1), f"{cell.name}.x{t}").get_output(0)
        h, c = _step(net, xw_t, h, c, cell, f"{cell.name}.step{t}")
        unsqueeze = nw.add_shuffle(h)
        unsqueeze.reshape_dims = (0, 1, cell.hidden)
        outputs[t] = net.name(unsqueeze, f"{cell.name}.h{t}").get_output(0)
    cat = nw.add_concatenation(outputs)
    cat.axis = 1
    return net.name(cat, f"{cell.name}.sequence").get_output(0)


def bidirectional_lstm(net: Net, x, path: str, cfg):
    """BidirectionalLSTM at ``path``: nn.LSTM(bidirectional, batch_first) -> Linear(2h, out)."""
    rnn = f"{path}.rnn"
    halves = []
    for suffix, reverse in (("", False), ("_reverse", True)):
        cell = _Cell(net, rnn, suffix)
        xw = _input_projection(net, x, cell)
        if cfg.lstm == "loop":
            halves.append(_direction_loop(net, xw, cell, reverse))
        else:
            halves.append(_direction_unrolled(net, xw, cell, reverse, cfg.width // 4 - 1))
    cat = net.network.add_concatenation(halves)
    cat.axis = 2
    recurrent = net.name(cat, f"{rnn}:0").get_output(0)  # the LSTM's output (the module returns (output, (h, c)))
    return net.alias(net.linear(recurrent, f"{path}.linear").get_output(0), path)


def define(net: Net, cfg) -> None:
    """Model.forward: grey crops [N, 1, 64, W] (normalized to [-1, 1]) -> CTC class scores [N, W/4 - 1, 97]."""
    width = (HEIGHT, cfg.crnn_opt, cfg.max_width) if cfg.lstm == "loop" else None
    x = net.input("crop", (-1, 1, HEIGHT, -1 if width else cfg.width), ranges={3: width} if width else None)
    x = column_features(net, feature_extraction(net, x))
    x = bidirectional_lstm(net, x, "recognizer.SequenceModeling.0", cfg)
    x = bidirectional_lstm(net, x, "recognizer.SequenceModeling.1", cfg)
    net.alias(x, "recognizer.SequenceModeling")
    net.output(net.linear(x, "recognizer.Prediction").get_output(0), "preds")
