"""swish: y = x · sigmoid(β·x), elementwise -- the plugin docs/plugins.md writes step by step."""

import math
from pathlib import Path

from plugins.core import AotLaunch, Float, Input, Kernel, Output, Plugin, ceil_div

KERNEL = Kernel(Path(__file__).with_name("swish.cu"), "swish", dtypes=("float32", "float16"))


class Swish(Plugin):
    """y = x * sigmoid(beta * x) (SiLU for beta = 1), fp32 or fp16, any shape."""

    name, version, namespace = "swish", "1", "trtx"
    beta = Float(1.0, "slope inside the sigmoid")
    inputs = [Input("x", ("float32", "float16"))]
    outputs = [Output("y", dtype="x")]  # y has x's dtype
    kernels = [KERNEL]

    def output_shapes(self, x):
        return [x]  # y has x's shape (symbolic inside TensorRT, ints elsewhere)

    def enqueue(self, inputs, outputs, workspace, stream):
        x, y = inputs[0], outputs[0]
        KERNEL[x.dtype].launch_1d(x.numel, [x, y, x.numel, self.beta], stream)

    def reference(self, inputs):
        import torch

        (x,) = inputs
        return [(x.float() * torch.sigmoid(self.beta * x.float())).to(x.dtype)]

    def aot_launch(self, shapes, dtypes):
        n = math.prod(shapes[0])  # symbolic inside TensorRT: the launch follows the input's shape
        return AotLaunch(KERNEL, "swish_aot", grid=ceil_div(n, 256), block=256, args=[n], dtype=dtypes[0])


reference = Swish.functional_reference
run = Swish.run
add_to_network = Swish.add_to_network
