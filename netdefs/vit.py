"""Vision Transformer, torchvision's ``vit_b_16/b_32/l_16/l_32/h_14``: layer names and weight keys are torchvision's.

python gen_wts.py --model netdef:vit:vit_b_16 --random-init -o vit_b_16.wts
python netdefs/vit.py build -w vit_b_16.wts --arch vit_b_16 -o vit_b_16.engine [--attention trt]
python netdefs/vit.py check -w vit_b_16.wts --arch vit_b_16
python netdefs/vit.py infer -w vit_b_16.wts --arch vit_b_16 images/

The patch embedding is a convolution (kernel = stride = patch); the class token is expanded over the batch and
put in front of the patches; every encoder block is LayerNorm → nn.MultiheadAttention → residual, LayerNorm →
MLP (Linear, GELU, Linear) → residual. Attention is written with matrix multiplies and a softmax (fp32), or
with ``--attention trt`` TensorRT's attention layer. Widths, depth, patch and input size come from the weights;
the number of heads from ``--arch``. ``netdef:vit`` (gen_wts) draws the parameters torchvision initializes to
zero or near zero (the head, the class token, the attention biases) at random, so check can see them.
"""

from __future__ import annotations

import math
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs import imagenet
from netdefs.common import (
    activation,
    add,
    add_attention_argument,
    concat,
    count_indices,
    layer_norm,
    mlp,
    multihead_attention,
    permute,
    reshape,
    select,
    slice_nd,
)
from trtx.net import Net, NetdefError

#: torchvision's constructors: what the weights cannot say (heads) and what they must agree with
ARCHS = {
    "vit_b_16": {"patch": 16, "layers": 12, "heads": 12, "hidden": 768, "mlp": 3072},
    "vit_b_32": {"patch": 32, "layers": 12, "heads": 12, "hidden": 768, "mlp": 3072},
    "vit_l_16": {"patch": 16, "layers": 24, "heads": 16, "hidden": 1024, "mlp": 4096},
    "vit_l_32": {"patch": 32, "layers": 24, "heads": 16, "hidden": 1024, "mlp": 4096},
    "vit_h_14": {"patch": 14, "layers": 32, "heads": 16, "hidden": 1280, "mlp": 5120},
}
DEFAULT_ARCH = "vit_b_16"
#: IMAGENET1K_V1 resize before the 224 crop (vit_l_16: 242; the others 256)
RESIZE = {"vit_l_16": 242}
EPS = 1e-6


def configure(args, weights, meta=None):
    """Depth, widths, patch and input size from the weights, checked against ``--arch``; heads from the arch."""
    arch = ARCHS[args.arch]
    cfg = imagenet.configure(args, weights, meta, classifier_bias="heads.head.bias", heads=arch["heads"])
    cfg.attention = getattr(args, "attention", None) or "matmul"
    if weights is None:  # an engine: imagenet.configure read the input size from its metadata
        return cfg
    found = structure(weights)
    vars(cfg).update(found)
    expected = {k: arch[k] for k in ("patch", "layers", "hidden", "mlp")}
    imagenet.check_arch(args.arch, _describe({k: found[k] for k in expected}), _describe(expected))
    cfg.resize = round(RESIZE.get(args.arch, 256) * cfg.input_size / 224)
    return cfg


def structure(weights) -> dict:
    """What a torchvision VisionTransformer state_dict says about itself: patch, layers, hidden, mlp widths,
    input size (from the position embedding) and the optional ``pre_logits`` layer's width."""
    for key in ("class_token", "conv_proj.weight", "encoder.pos_embedding"):
        if key not in weights:
            raise NetdefError(
                f"weights have no tensor {key!r}: not a torchvision VisionTransformer state_dict (conv stem "
                "variants are not supported)"
            )
    hidden = imagenet.size(weights, "class_token")
    patch = math.isqrt(imagenet.size(weights, "conv_proj.weight") // (3 * hidden))
    patches = imagenet.size(weights, "encoder.pos_embedding") // hidden - 1
    side = math.isqrt(patches)
    if side * side != patches:
        raise NetdefError(f"encoder.pos_embedding holds {patches} patches + the class token: not a square grid")
    return {
        "patch": patch,
        "layers": count_indices(weights, "encoder.layers.encoder_layer_{}.ln_1.weight"),
        "hidden": hidden,
        "mlp": imagenet.size(weights, "encoder.layers.encoder_layer_0.mlp.0.bias"),
        "input_size": side * patch,
        "representation": imagenet.size(weights, "heads.pre_logits.bias") or None,
    }


def _describe(s: dict) -> str:
    return f"patch {s['patch']}, {s['layers']} layers, width {s['hidden']}, MLP width {s['mlp']}"


# ---- the network ---------------------------------------------------------------------------------------
def process_input(net: Net, x, cfg):
    """``VisionTransformer._process_input``: patches by the conv, [B, hidden, n_h, n_w] -> [B, n_h·n_w, hidden]."""
    x = net.conv(x, "conv_proj", cfg.patch, stride=cfg.patch).get_output(0)
    x = reshape(net, x, (0, cfg.hidden, -1), "conv_proj.reshape")
    return permute(net, x, (0, 2, 1), "conv_proj.permute")


def class_token(net: Net, x):
    """``torch.cat([class_token.expand(n, -1, -1), x], dim=1)``: the token, repeated over the batch (a slice
    with stride 0), in front of the patches."""
    c = int(x.shape[2])
    token = net.constant(net.array("class_token", (1, 1, c)), "class_token")
    batch_token = slice_nd(net, token, "class_token.expand", (0, 0, 0), (None, 1, c), stride=(0, 1, 1), like=x)
    return concat(net, [batch_token, x], "class_token.cat", axis=1)


def encoder_block(net: Net, x, path: str, cfg):
    """EncoderBlock: x = input + self_attention(ln_1(input)); x + mlp(ln_2(x))."""
    y = layer_norm(net, x, f"{path}.ln_1", eps=EPS)
    y = multihead_attention(net, y, f"{path}.self_attention", cfg.heads, form=cfg.attention)
    x = add(net, y, x, f"{path}.add")
    y = layer_norm(net, x, f"{path}.ln_2", eps=EPS)
    y = mlp(net, y, f"{path}.mlp")  # MLPBlock
    return add(net, x, y, path)


def encoder(net: Net, x, cfg):
    """Encoder: + pos_embedding, the blocks, LayerNorm ``encoder.ln``."""
    pos = net.constant(net.array("encoder.pos_embedding", (1, -1, cfg.hidden)), "encoder.pos_embedding")
    x = add(net, x, pos, "encoder.pos_embedding.add")
    x = net.alias(x, "encoder.dropout")  # identity at inference: its output is input + pos_embedding
    for i in range(cfg.layers):
        x = encoder_block(net, x, f"encoder.layers.encoder_layer_{i}", cfg)
    x = net.alias(x, "encoder.layers")
    return net.alias(layer_norm(net, x, "encoder.ln", eps=EPS), "encoder")


def heads(net: Net, x, cfg):
    """heads: Linear ``head`` (after ``pre_logits`` → Tanh ``act`` where the weights have a representation layer)."""
    if cfg.representation:
        x = net.linear(x, "heads.pre_logits").get_output(0)
        x = activation(net, x, "tanh", "heads.act")
    return net.alias(net.linear(x, "heads.head").get_output(0), "heads")


def define(net: Net, cfg) -> None:
    """Mirrors VisionTransformer.forward."""
    x = imagenet.data_input(net, cfg)
    x = process_input(net, x, cfg)
    x = class_token(net, x)
    x = encoder(net, x, cfg)
    x = select(net, x, 1, 0, "class_token.select")  # x[:, 0]
    x = heads(net, x, cfg)
    imagenet.softmax_output(net, x, cfg)
    net.meta["attention"] = cfg.attention


# ---- the PyTorch side ------------------------------------------------------------------------------------
def vision_transformer(cfg, *, init: bool = True):
    """torchvision's VisionTransformer with ``cfg``'s structure (``init=False``: parameters left uninitialized)."""
    from torchvision.models.vision_transformer import VisionTransformer

    return imagenet.instantiate(
        VisionTransformer,
        init=init,
        image_size=cfg.input_size,
        patch_size=cfg.patch,
        num_layers=cfg.layers,
        num_heads=cfg.heads,
        hidden_dim=cfg.hidden,
        mlp_dim=cfg.mlp,
        num_classes=cfg.num_classes,
        representation_size=cfg.representation,
    )


def torch_model(cfg, weights):
    from trtx.sources import load_state

    model = vision_transformer(cfg, init=False)
    load_state(model, weights)
    return model


def source_model(arch: str | None = None, *, image_size: int = 224, **overrides):
    """A random-init ``arch`` (``gen_wts.py --model netdef:vit[:arch]``) at ``image_size``; ``overrides``
    (layers, heads, hidden, mlp, patch, num_classes) make smaller test models. Parameters torchvision sets to
    zero or near zero are drawn at random (trtx.sources.randomize_constant_parameters)."""
    from types import SimpleNamespace

    from trtx.sources import randomize_constant_parameters

    cfg = SimpleNamespace(**ARCHS[arch or DEFAULT_ARCH], input_size=image_size, num_classes=1000, representation=None)
    vars(cfg).update(overrides)
    model = vision_transformer(cfg)
    randomize_constant_parameters(model)
    return model


def add_arguments(parser, command: str) -> None:
    if command in ("build", "check", "inspect", "infer", "bench"):
        add_attention_argument(parser)


NETDEF = imagenet.classifier(
    "vit",
    __doc__,
    archs=tuple(ARCHS),
    default_arch=DEFAULT_ARCH,
    configure=configure,
    define=define,
    torch_model=torch_model,
    source_model=source_model,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    from trtx.cli import main

    sys.exit(main(NETDEF))
