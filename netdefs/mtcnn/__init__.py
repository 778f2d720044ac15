"""MTCNN face detection (P-Net, R-Net, O-Net) with facenet-pytorch's trained weights: three engines, one pipeline.

python gen_wts.py --model netdef:mtcnn -w pnet=$FACENET/data/pnet.pt -w rnet=$FACENET/data/rnet.pt \\
                  -w onet=$FACENET/data/onet.pt -o mtcnn.wts       # FACENET: the facenet_pytorch package folder
python -m netdefs mtcnn build -w mtcnn.wts -o mtcnn.engine       # mtcnn.{pnet,rnet,onet}.engine + mtcnn.json
python -m netdefs mtcnn check -w mtcnn.wts                       # each network vs facenet-pytorch, layer by layer
python -m netdefs mtcnn infer -w mtcnn.wts zidane.jpg --json     # faces: box, conf, 5 landmarks
python -m netdefs mtcnn infer -e mtcnn.json zidane.jpg           # the same with the TensorRT engines

The networks are in ``networks.py`` (what a user edits), the pyramid, crops, NMS and box regression in
``pipeline.py`` (docs/mtcnn.md).
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Any

import numpy as np

from netdefs.mtcnn import networks, pipeline
from trtx.net import NetdefError
from trtx.netdef import App, Netdef, Network, TorchSide

#: facenet-pytorch's MTCNN defaults
DEFAULTS = {"min_face_size": 20, "thresholds": (0.6, 0.7, 0.7), "factor": 0.709}
#: the first weight of each network: weights of another model are refused before anything is built
FIRST_KEYS = ("pnet.conv1.weight", "rnet.conv1.weight", "onet.conv1.weight")


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    if command in ("build", "check", "inspect", "infer", "bench"):
        parser.add_argument(
            "--pnet-max",
            type=int,
            default=1280,
            metavar="PX",
            help="largest P-Net input side of the engine's profile: images up to PX / 0.6 (12 / min face "
            "size) pixels on the long side (default: %(default)s)",
        )
        parser.add_argument(
            "--max-crops", type=int, default=512, help="R-Net/O-Net batch limit per call (default: %(default)s)"
        )
    if command in ("infer", "bench"):
        parser.add_argument(
            "--min-face-size",
            type=float,
            default=DEFAULTS["min_face_size"],
            help="smallest face searched for, pixels (default: %(default)s)",
        )
        parser.add_argument(
            "--thresholds",
            type=float,
            nargs=3,
            default=DEFAULTS["thresholds"],
            metavar=("P", "R", "O"),
            help="face probability thresholds of P-Net, R-Net, O-Net (default: 0.6 0.7 0.7)",
        )
        parser.add_argument(
            "--factor", type=float, default=DEFAULTS["factor"], help="pyramid scale step (default: %(default)s)"
        )


def configure(args, weights, meta: dict | None = None) -> SimpleNamespace:
    if weights is not None:
        missing = [k for k in FIRST_KEYS if k not in weights]
        if missing:
            raise NetdefError(
                f"weights have no tensor {missing[0]!r}: not facenet-pytorch MTCNN weights (write them with "
                "gen_wts.py --model netdef:mtcnn -w pnet=pnet.pt -w rnet=rnet.pt -w onet=onet.pt)"
            )
    source = meta or {}
    get = lambda key: vars(args).get(key, source.get(key, DEFAULTS.get(key)))  # noqa: E731
    pnet_max = vars(args).get("pnet_max") or source.get("pnet_max", 1280)
    max_crops = vars(args).get("max_crops") or source.get("max_crops", 512)
    return SimpleNamespace(
        pnet_max=int(pnet_max),
        max_crops=int(max_crops),
        min_face_size=float(get("min_face_size")),
        thresholds=tuple(float(t) for t in get("thresholds")),
        factor=float(get("factor")),
    )


def define_pnet(net, cfg) -> None:
    networks.pnet(net, cfg)
    net.meta.update(pnet_max=cfg.pnet_max, max_crops=cfg.max_crops)


# ---- the PyTorch side ---------------------------------------------------------------------------------
def source_model(arch: str | None = None):
    """facenet-pytorch's P-, R- and O-Net under one module (``MTCNN``'s own key names), random init."""
    import torch

    try:
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
    except ImportError as exc:
        raise NetdefError(
            "the MTCNN PyTorch side needs facenet-pytorch (pip install --no-deps facenet-pytorch==2.6.0)"
        ) from exc

    model = torch.nn.Module()
    model.pnet, model.rnet, model.onet = PNet(pretrained=False), RNet(pretrained=False), ONet(pretrained=False)
    return model.eval()


def torch_model(cfg, weights):
    from trtx.sources import load_state

    model = source_model()
    load_state(model, weights)
    return model


def _seeded(shape, seed: int) -> dict[str, np.ndarray]:
    return {"data": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def pnet_feeds(cfg, image: str | None, batch: int, seed: int) -> dict[str, np.ndarray]:
    """An image at the pyramid's first scale (12 / min face size), or a seeded 1 x 3 x 45 x 61 input."""
    if image is None:
        return _seeded((batch, 3, 45, 61), seed)
    rgb = _read_rgb(image)
    scale = pipeline.pyramid(*rgb.shape[:2], cfg.min_face_size, cfg.factor)[0]
    h, w = int(rgb.shape[0] * scale + 1), int(rgb.shape[1] * scale + 1)
    level = pipeline.normalize(pipeline.resample(rgb.astype(np.float32), h, w))
    return {"data": np.repeat(level[None], batch, axis=0)}


def _crop_feeds(size: int):
    def feeds(cfg, image: str | None, batch: int, seed: int) -> dict[str, np.ndarray]:
        """Seeded normal crops (an image's own crops come from the pipeline: ``infer``)."""
        return _seeded((batch, 3, size, size), seed)

    return feeds


def _read_rgb(path: str) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise NetdefError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _forward(name: str, outputs: tuple[str, ...]):
    def forward(model, feeds) -> dict[str, Any]:
        return dict(zip(outputs, getattr(model, name)(feeds["data"])))

    return forward


# ---- the application ----------------------------------------------------------------------------------
def run_pipeline(runners, images: list[np.ndarray], cfg) -> list[dict[str, np.ndarray]]:
    import cv2

    return [pipeline.detect(runners, cv2.cvtColor(im, cv2.COLOR_BGR2RGB), cfg) for im in images]


def records(faces: dict[str, np.ndarray], cfg) -> list[dict[str, Any]]:
    return [
        {"box": [round(float(v), 3) for v in b], "conf": round(float(s), 6),
         "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in p]}
        for b, s, p in zip(faces["boxes"], faces["scores"], faces["landmarks"])
    ]  # fmt: skip


def result_json(faces, cfg) -> dict[str, Any]:
    return {"faces": records(faces, cfg)}


def summary(faces, cfg) -> str:
    n = len(faces["scores"])
    return f"{n} face{'s' if n != 1 else ''}" + (
        f", probabilities {[round(float(s), 4) for s in faces['scores']]}" if n else ""
    )


def render(image: np.ndarray, faces, cfg) -> np.ndarray:
    """Boxes labelled with the face probability and the 5 landmarks on a copy of the BGR image."""
    from netdefs.detection import draw

    out = image.copy()
    n = len(faces["scores"])
    draw.boxes(out, faces["boxes"], [draw.label("face", s) for s in faces["scores"]], [draw.color(0)] * n)
    return draw.points(out, faces["landmarks"], [draw.color(j + 2) for j in range(5)], draw.line_width(out) + 1)


NETDEF = Netdef(
    name="mtcnn",
    description="MTCNN face detection (P-Net, R-Net, O-Net), facenet-pytorch's trained weights",
    configure=configure,
    networks=(
        Network("pnet", define_pnet, _forward("pnet", ("reg", "prob")), pnet_feeds, "proposals, any image size"),
        Network("rnet", networks.rnet, _forward("rnet", ("reg", "prob")), _crop_feeds(24), "refine, 24x24 crops"),
        Network(
            "onet",
            networks.onet,
            _forward("onet", ("reg", "landmarks", "prob")),
            _crop_feeds(48),
            "output, 48x48 crops: boxes, probabilities, landmarks",
        ),
    ),  # fmt: skip
    torch=TorchSide(model=torch_model, source=source_model),
    app=App(pipeline=run_pipeline, render=render, result_json=result_json, summary=summary, records=records),
    add_arguments=add_arguments,
    script="python -m netdefs mtcnn",
)
