"""trtx.layers: LayerType -> class map, typed views and attribute readers, on networks the real builder sees."""

from __future__ import annotations

import numpy as np

from trtx import layers as L
from trtx.net import Net
from trtx_base import backend


def test_mapping_covers_every_class_the_backend_has():
    trt = backend.trt
    mapping = L.layer_class_mapping()
    assert mapping[trt.LayerType.CONVOLUTION] is trt.IConvolutionLayer
    assert mapping[trt.LayerType.CONDITIONAL_INPUT] is trt.IIfConditionalInputLayer
    classes = {n for n in dir(trt) if n.startswith("I") and n.endswith("Layer")}
    # every concrete layer class reachable from a LayerType member, except the abstract bases
    unmapped = classes - {c.__name__ for c in mapping.values()}
    assert unmapped <= {"ILayer", "ILoopBoundaryLayer", "IIfConditionalBoundaryLayer", "IAttentionBoundaryLayer"}


def test_typed_layers_and_attributes():
    trt = backend.trt
    net = Net({})
    nw = net.network
    x = nw.add_input("x", trt.DataType.FLOAT, (-1, 3, 8, 8))
    w = np.ones((4, 3, 3, 3), np.float32)
    conv = nw.add_convolution_nd(x, 4, (3, 3), trt.Weights(w), trt.Weights(trt.DataType.FLOAT))
    conv.stride_nd = (2, 1)
    conv.num_groups = 1
    act = nw.add_activation(conv.get_output(0), trt.ActivationType.LEAKY_RELU)
    act.alpha = 0.1
    pool = nw.add_pooling_nd(act.get_output(0), trt.PoolingType.AVERAGE, (2, 2))
    shuffle = nw.add_shuffle(pool.get_output(0))
    shuffle.first_transpose = (0, 2, 3, 1)
    shuffle.reshape_dims = (0, -1)
    resize = nw.add_resize(x)
    resize.scales = (1, 1, 2, 2)
    reduce = nw.add_reduce(x, trt.ReduceOperation.SUM, 0b110, True)

    typed = list(L.layers(nw))
    assert [type(t).__name__ for t in typed] == [
        "IConvolutionLayer",
        "IActivationLayer",
        "IPoolingLayer",
        "IShuffleLayer",
        "IResizeLayer",
        "IReduceLayer",
    ]
    # the activation/pooling classes shadow `.type`; layer_type still gives the LayerType
    assert L.layer_type(typed[1]) == trt.LayerType.ACTIVATION
    a = L.attributes(conv)
    assert a["kernel"] == (3, 3) and a["stride"] == (2, 1) and a["groups"] == 1 and a["out_channels"] == 4
    assert a["weights"] == "float32[108]" and a["bias"] is None
    assert L.attributes(act) == {"activation": "LEAKY_RELU", "alpha": 0.1, "beta": 0.0}
    p = L.attributes(pool)
    assert p["pooling"] == "AVERAGE" and p["window"] == (2, 2)
    s = L.attributes(shuffle)
    assert s["first_transpose"] == (0, 2, 3, 1) and s["reshape"] == (0, -1) and s["second_transpose"] == (0, 1)
    r = L.attributes(resize)
    assert r["scales"] == (1.0, 1.0, 2.0, 2.0) and r["mode"] == "NEAREST" and "shape" not in r
    assert L.attributes(reduce) == {"op": "SUM", "axes": [1, 2], "keep_dims": True}
    assert L.describe(act).endswith("[ACTIVATION] activation=LEAKY_RELU alpha=0.1 beta=0.0")


def test_dynamic_inputs_are_reported_not_read():
    trt = backend.trt
    net = Net({})
    nw = net.network
    x = nw.add_input("x", trt.DataType.FLOAT, (-1, 3, 8, 8))
    shuffle = nw.add_shuffle(x)
    shuffle.set_input(1, nw.add_shape(x).get_output(0))
    assert L.attributes(shuffle)["reshape"] == "<input 1>"


def test_axes_list():
    assert L.axes_list(0b1011) == [0, 1, 3]
    assert L.axes_list(0, 4) == []
