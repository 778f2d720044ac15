"""ImageNet classification, shared by the classic classifier netdefs (resnet, mobilenet, vgg, ...).

What every torchvision classifier netdef has in common and is not a layer: the input tensor, the
preprocessing torchvision's ``IMAGENET1K_V1`` weights expect (resize the short side to 256 with antialiased
bilinear, center crop 224, scale to [0, 1], normalize), the softmax head, top-5 with the 1000 ImageNet class
names, drawing and JSON (:data:`APP`), and the PyTorch side of ``check``. A family file declares itself with
:func:`classifier` (its network and configuration; everything else shared) and so gets ``infer`` and ``bench``
with images. Nothing here imports torch at module import time (deploy-time code).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from trtx.net import Net, NetdefError
from trtx.netdef import App, Netdef, TorchSide

INPUT = "data"
OUTPUT = "prob"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
RESIZE = 256
CROP = 224
TOPK = 5
CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")


@cache
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, index = class id (torchvision's ``meta["categories"]``)."""
    names = tuple(CLASSES_FILE.read_text(encoding="utf-8").splitlines())
    if len(names) != 1000:
        raise NetdefError(f"{CLASSES_FILE}: expected 1000 class names, found {len(names)}")
    return names


def class_name(index: int, num_classes: int = 1000) -> str:
    return class_names()[index] if num_classes == 1000 else f"class {index}"


# ---- configuration --------------------------------------------------------------------------------------
def configure(args, weights, meta: dict | None, *, classifier_bias: str, **arch) -> SimpleNamespace:
    """``cfg`` of a classifier: arch facts + ``num_classes`` (from the last layer's bias, or the engine
    metadata when there are no weights) + the input size."""
    if weights is not None:
        if classifier_bias not in weights:
            raise NetdefError(
                f"weights have no tensor {classifier_bias!r}: not a torchvision {args.arch} state_dict "
                "(write one with gen_wts.py --model torchvision:<arch>)"
            )
        num_classes = int(np.asarray(weights[classifier_bias]).size)
    elif meta is not None:
        num_classes = int(meta["num_classes"])
    else:
        raise NetdefError("configure needs weights or engine metadata")
    crop, resize = CROP, RESIZE
    if weights is None and "preprocess" in meta:  # an engine: the input size it was built for
        crop, resize = int(meta["preprocess"]["crop"]), int(meta["preprocess"]["resize"])
    return SimpleNamespace(arch=args.arch, num_classes=num_classes, input_size=crop, resize=resize, **arch)


def check_arch(arch: str, found: str, expected: str) -> None:
    """Refuse weights of another arch before anything is built: ``found`` describes the weights' structure,
    ``expected`` the same facts of ``arch``, in the same words."""
    if found != expected:
        raise NetdefError(f"weights have {found}; {arch} has {expected} (check --arch)")


def size(weights, key: str) -> int:
    """Number of values of ``key`` (0 when the weights lack it: the structure then differs)."""
    return int(np.asarray(weights[key]).size) if key in weights else 0


def data_input(net: Net, cfg):
    """The network input ``data``: [batch (dynamic), 3, 224, 224], RGB, normalized."""
    return net.input(INPUT, (-1, 3, cfg.input_size, cfg.input_size))


def softmax_output(net: Net, logits, cfg) -> None:
    """Softmax over the classes in fp32, marked as output ``prob`` [batch, num_classes]."""
    prob = net.network.add_softmax(net.to_fp32(logits, "prob.to_fp32"))
    prob.axes = 1 << 1
    net.output(net.name(prob, OUTPUT).get_output(0), OUTPUT)
    net.meta.update(num_classes=cfg.num_classes, task="imagenet-classification", topk=TOPK)
    net.meta["preprocess"] = {"resize": cfg.resize, "crop": cfg.input_size, "mean": MEAN, "std": STD}


# ---- preprocessing ----------------------------------------------------------------------------------
@cache
def resize_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased bilinear resampling from ``in_size`` to ``out_size`` pixels, as PyTorch computes it for
    ``interpolate(..., antialias=True)`` (a triangle filter widened by the downscale factor, normalized per
    output pixel), in float32: (first input pixel per output pixel [out], tap weights [out, taps])."""
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    support = scale if scale >= 1 else f32(1.0)
    invscale = f32(1.0) / scale if scale >= 1 else f32(1.0)
    center = scale * (np.arange(out_size, dtype=f32) + f32(0.5))
    first = np.maximum((center - support + f32(0.5)).astype(np.int64), 0)
    count = np.minimum((center + support + f32(0.5)).astype(np.int64), in_size) - first
    taps = np.arange(int(count.max()))
    x = np.abs(((taps[None, :] + first[:, None]).astype(f32) - center[:, None] + f32(0.5)) * invscale)
    weights = np.where((x < 1) & (taps[None, :] < count[:, None]), f32(1.0) - x, f32(0.0)).astype(f32)
    total = np.zeros(out_size, f32)
    for t in taps:  # summed tap by tap, in PyTorch's order, so the rounding is the same
        total += weights[:, t]
    weights /= total[:, None]
    first.flags.writeable = weights.flags.writeable = False
    return first, weights


def _resample_axis0(image: np.ndarray, size: int) -> np.ndarray:
    """Resample axis 0 of float32 ``image`` to ``size``: out = sum over taps of weight x input pixel,
    accumulated tap by tap in float32 as PyTorch's CPU kernel does."""
    first, weights = resize_weights(image.shape[0], size)
    last = image.shape[0] - 1
    shape = (size,) + (1,) * (image.ndim - 1)
    out = image[first] * weights[:, 0].reshape(shape)
    for t in range(1, weights.shape[1]):  # taps past a pixel's own count have weight 0: they add 0
        out += image[np.minimum(first + t, last)] * weights[:, t].reshape(shape)
    return out


def resize_short_side(rgb: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``Resize(size, antialias=True)`` on a uint8 image tensor: short side -> ``size``, long side
    scaled and truncated; resampled in float32 (width, then height), rounded half to even back to uint8."""
    h, w = rgb.shape[:2]
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    out = rgb.astype(np.float32)
    if new_w != w:
        out = _resample_axis0(out.transpose(1, 0, 2), new_w).transpose(1, 0, 2)
    if new_h != h:
        out = _resample_axis0(out, new_h)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    if h < size or w < size:
        raise NetdefError(f"image {w}x{h} is smaller than the {size}x{size} crop")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image[top : top + size, left : left + size]


def preprocess_image(bgr: np.ndarray, cfg) -> np.ndarray:
    """One OpenCV BGR uint8 image -> [3, 224, 224] float32, as torchvision's ``IMAGENET1K_V1.transforms()``."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise NetdefError(f"expected an HxWx3 uint8 BGR image, got {bgr.dtype} {bgr.shape}")
    rgb = center_crop(resize_short_side(np.ascontiguousarray(bgr[:, :, ::-1]), cfg.resize), cfg.input_size)
    x = rgb.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(images: list[np.ndarray], cfg) -> tuple[dict[str, np.ndarray], None]:
    return {INPUT: np.stack([preprocess_image(im, cfg) for im in images])}, None


def example_feeds(cfg, image: str | None, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``check``'s input: ``image`` through the preprocessing (repeated ``batch`` times), else seeded N(0, 1)
    (the scale of a normalized image)."""
    if image is not None:
        import cv2

        bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise NetdefError(f"{image}: not a readable image")
        return {INPUT: np.stack([preprocess_image(bgr, cfg)] * batch)}
    rng = np.random.default_rng(seed)
    return {INPUT: rng.standard_normal((batch, 3, cfg.input_size, cfg.input_size)).astype(np.float32)}


# ---- postprocessing ---------------------------------------------------------------------------------
def top_k(prob: np.ndarray, k: int = TOPK) -> list[int]:
    """Class ids of the ``k`` largest probabilities, largest first (ties: lower id first)."""
    return [int(i) for i in np.argsort(-prob, kind="stable")[:k]]


def postprocess(outputs: dict[str, np.ndarray], ctx: Any, cfg) -> list[list[tuple[int, str, float]]]:
    """``prob`` [B, num_classes] -> per image the top-5 as (class id, class name, probability)."""
    prob = np.asarray(outputs[OUTPUT], dtype=np.float32).reshape(len(outputs[OUTPUT]), -1)
    return [[(i, class_name(i, cfg.num_classes), float(p[i])) for i in top_k(p)] for p in prob]


def summary(result, cfg) -> str:
    return ", ".join(f"{name} ({i}) {p:.4f}" for i, name, p in result)


def result_json(result, cfg) -> dict:
    return {"top5": [{"class": i, "name": name, "prob": p} for i, name, p in result]}


def render(image: np.ndarray, result, cfg) -> np.ndarray:
    """The image with the top-5 written on a dark panel in its upper left corner."""
    import cv2

    out = image.copy()
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(out.shape[1] / 1000, 0.4)
    thickness = max(1, round(2 * scale))
    lines = [f"{p * 100:5.1f}%  {name}" for _, name, p in result]
    sizes = [cv2.getTextSize(text, font, scale, thickness)[0] for text in lines]
    step = int(max(h for _, h in sizes) * 1.8)
    pad = step // 3
    width = max(w for w, _ in sizes) + 2 * pad
    height = step * len(lines) + pad
    panel = out[:height, :width]
    panel[:] = (panel * 0.35).astype(out.dtype)  # darken, keep a hint of the picture
    for row, text in enumerate(lines):
        cv2.putText(out, text, (pad, step * (row + 1)), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


#: how close (relative to the top probability) two PyTorch probabilities must be for a swap to count as a tie
TIE = {"fp32": 1e-6, "fp16": 1e-2, "int8": 5e-2}


def check_extra(cfg, outputs: dict, expected: dict, precision: str = "fp32") -> list[tuple[str, bool, str]]:
    """``check``'s classifier rows: per image the top-5 classes of the network and of PyTorch are the same in
    the same order (fp32), or the same top-1 class (fp16, int8: their rounding reorders the tail). A swap of
    two classes whose PyTorch probabilities tie within ``TIE[precision]`` of the top one is allowed. And
    PyTorch's logits are not constant (else every comparison of ``prob`` is vacuous)."""
    k = TOPK if precision == "fp32" else 1
    if OUTPUT not in outputs or OUTPUT not in expected:
        return [(f"top{k}", False, f"no {OUTPUT!r} output to compare")]
    net_prob = np.asarray(outputs[OUTPUT].detach().double().cpu()).reshape(len(outputs[OUTPUT]), -1)
    ref_prob = np.asarray(expected[OUTPUT].detach().double().cpu()).reshape(net_prob.shape)
    rows = []
    for b, (p_net, p_ref) in enumerate(zip(net_prob, ref_prob)):
        got, want = top_k(p_net, k), top_k(p_ref, k)
        tie = TIE[precision] * float(p_ref.max())
        same = all(g == w or abs(p_ref[g] - p_ref[w]) <= tie for g, w in zip(got, want))
        rows.append((f"top{k}[{b}]", same, f"network {got}, torch {want}"))
        spread = float(np.log(np.clip(p_ref, 1e-300, None)).std())
        rows.append((f"logits[{b}] not constant", spread > 1e-3, f"std of torch logits {spread:.3g}"))
    return rows


# ---- the PyTorch side (check, gen_wts) ----------------------------------------------------------------
def torchvision_model(arch: str, num_classes: int = 1000, *, init: bool = True):
    """torchvision ``arch`` in eval mode: randomly initialized, or (``init=False``) with uninitialized
    parameters, for weights that are loaded right after (skips the slow random init of large models)."""
    import torchvision

    return instantiate(getattr(torchvision.models, arch), init=init, weights=None, num_classes=num_classes)


def instantiate(constructor: Callable, *, init: bool = True, **kwargs):
    """``constructor(**kwargs)`` in eval mode: randomly initialized, or (``init=False``) with uninitialized
    parameters, for weights that are loaded right after (skips the slow random init of large models)."""
    import torch

    if init:
        return constructor(**kwargs).eval()
    with torch.device("meta"):
        model = constructor(**kwargs)
    return model.to_empty(device="cpu").eval()


def torch_model(cfg, weights):
    """torchvision ``cfg.arch`` with ``weights`` (state_dict keys) loaded: what ``check`` compares against."""
    from trtx.sources import load_state

    model = torchvision_model(cfg.arch, cfg.num_classes, init=False)
    load_state(model, weights)
    return model


def torch_forward(model, feeds) -> dict:
    import torch

    return {OUTPUT: torch.softmax(model(feeds[INPUT]), dim=1)}


def source_model(arch: str):
    """Random-init torchvision model for ``gen_wts.py --model netdef:<family> --arch <arch>``."""
    return torchvision_model(arch)


# ---- the declaration every classifier family shares -------------------------------------------------------
#: infer/bench of every ImageNet classifier: torchvision's preprocessing, top-5 with class names, drawing, JSON
APP = App(preprocess=preprocess, postprocess=postprocess, render=render, result_json=result_json, summary=summary)


def classifier(
    name: str,
    doc: str,
    *,
    archs: tuple[str, ...],
    configure: Callable,
    define: Callable,
    default_arch: str | None = None,
    torch_model: Callable = torch_model,
    source_model: Callable | None = None,
    add_arguments: Callable | None = None,
    unused_reason: Callable | None = None,
) -> Netdef:
    """The :class:`~trtx.netdef.Netdef` of a torchvision ImageNet classifier family: its own network and
    configuration, with the application (:data:`APP`) and PyTorch side (softmax of torchvision's logits,
    top-5 rows in ``check``) every classifier shares. ``doc`` is the family module's docstring."""
    first = default_arch or archs[0]

    def source(arch: str | None) -> Any:
        return (source_model or torchvision_model)(arch or first)

    return Netdef(
        name=name,
        description=doc.strip().splitlines()[0],
        archs=archs,
        default_arch=first,
        configure=configure,
        define=define,
        torch=TorchSide(
            model=torch_model, forward=torch_forward, feeds=example_feeds, extra=check_extra, source=source
        ),
        app=APP,
        add_arguments=add_arguments,
        unused_reason=unused_reason,
        script=f"python netdefs/{name}.py",
    )
