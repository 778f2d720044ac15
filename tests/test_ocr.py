"""OCR (netdefs/ocr) with EasyOCR's trained English weights: CRAFT and the CRNN build with TensorRT-RTX (dynamic
profiles, fp32 and fp16) and match EasyOCR's modules layer by layer; the whole pipeline reads the same strings as
EasyOCR's ``Reader.readtext`` (same weights, CPU, fp32: ``quantize=False``), boxes within 1 px, on text images made
here with OpenCV and on scikit-image's photos of text.

The recognizer's LSTM is an ILoop; the reference executor runs loops from the ``ref`` branch on. Until then the
tests that run the pipeline are skipped, and the LSTM is checked in its unrolled form."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import gen_wts
from netdefs.ocr import NETDEF, pipeline
from trtx import cli, sources

pytest.importorskip("easyocr")


def models_dir() -> Path:
    return sources.package_dir("easyocr_en_models") / "models"


# ---- images with text, made with OpenCV ---------------------------------------------------------------
def _lines(size, lines, background=255, angle=0.0) -> np.ndarray:
    """``lines``: (text, (x, y), font, scale, BGR colour, thickness) drawn on a ``size`` canvas, rotated by
    ``angle`` degrees about the centre."""
    h, w = size
    img = np.full((h, w, 3), background, np.uint8)
    for text, org, font, scale, color, thick in lines:
        cv2.putText(img, text, org, font, scale, color, thick, cv2.LINE_AA)
    if angle:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        img = cv2.warpAffine(img, m, (w, h), borderValue=(background,) * 3)
    return img


F = cv2
SYNTHETIC = {
    "three_fonts": lambda: _lines((200, 420), [
        ("Hello World", (15, 60), F.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 3),
        ("trtx reads 42", (20, 130), F.FONT_HERSHEY_DUPLEX, 1.1, (40, 40, 160), 2),
        ("TensorRT", (60, 185), F.FONT_HERSHEY_COMPLEX, 1.0, (120, 0, 0), 2),
    ]),
    "rotated": lambda: _lines((180, 440), [
        ("ROTATED LINE", (30, 80), F.FONT_HERSHEY_TRIPLEX, 1.3, (0, 0, 0), 2),
        ("slightly, by 3 degrees", (25, 140), F.FONT_HERSHEY_SIMPLEX, 0.9, (30, 30, 30), 2),
    ], angle=3.0),
    "light_on_dark": lambda: _lines((170, 380), [
        ("Price: 19.99", (20, 60), F.FONT_HERSHEY_DUPLEX, 1.2, (240, 240, 240), 2),
        ("open 9-17h", (30, 135), F.FONT_HERSHEY_PLAIN, 2.6, (0, 220, 255), 3),
    ], background=40),
}  # fmt: skip
#: scikit-image's photos of text (page.png, 12 lines of a scanned page, takes ~100 s on 2 cores: slow)
PHOTOS = ("text.png", pytest.param("page.png", marks=pytest.mark.slow))


def image_path(name: str, folder: Path) -> Path:
    if name in SYNTHETIC:
        path = folder / f"{name}.png"
        cv2.imwrite(str(path), SYNTHETIC[name]())
        return path
    return sources.package_dir("skimage") / "data" / name


# ---- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ocr") / "ocr.wts"
    m = models_dir()
    argv = ["--model", "netdef:ocr", "-w", f"detector={m / 'craft_mlt_25k.pth'}",
            "-w", f"recognizer={m / 'english_g2.pth'}", "-o", str(out), "-q"]  # fmt: skip
    assert gen_wts.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def reader():
    import easyocr

    return easyocr.Reader(["en"], gpu=False, quantize=False, model_storage_directory=str(models_dir()),
                          download_enabled=False, verbose=False)  # fmt: skip


def easyocr_readtext(reader, bgr: np.ndarray) -> list:
    """``Reader.readtext`` on the decoded image: what it runs after ``reformat_input`` (detect, then recognize),
    on the RGB and grey images our pipeline sees too."""
    rgb, grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    horizontal, free = reader.detect(rgb, reformat=False)
    return reader.recognize(grey, horizontal[0], free[0], reformat=False)


# ---- build and check ----------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_both_engines_with_dynamic_profiles(weights, tmp_path, capsys, precision):
    out = tmp_path / "ocr.engine"
    assert cli.main(NETDEF, ["build", "-w", str(weights), "-o", str(out), "--precision", precision]) == 0
    meta = json.loads((tmp_path / "ocr.json").read_text())
    assert meta["engines"] == {"craft": "ocr.craft.engine", "crnn": "ocr.crnn.engine"} and meta["lstm"] == "loop"
    craft = json.loads((tmp_path / "ocr.craft.engine.json").read_text())
    crnn = json.loads((tmp_path / "ocr.crnn.engine.json").read_text())
    assert craft["profiles"]["image"] == [[1, 3, 32, 32], [1, 3, 640, 640], [1, 3, 2560, 2560]]
    assert crnn["profiles"]["crop"] == [[1, 1, 64, 64], [1, 1, 64, 256], [1, 1, 64, 2560]]
    assert craft["unused_weights"] == [] and crnn["precision"] == precision
    assert crnn["num_layers"] < 250  # two loops per LSTM: the layer count does not grow with the width


def test_unrolled_lstm_builds_for_a_fixed_width(weights, tmp_path, capsys):
    argv = ["build", "-w", str(weights), "-o", str(tmp_path / "u.engine"), "--lstm", "unrolled", "--width", "32"]
    assert cli.main(NETDEF, argv) == 0
    crnn = json.loads((tmp_path / "u.crnn.engine.json").read_text())
    assert crnn["inputs"][0]["shape"] == [-1, 1, 64, 32] and crnn["num_layers"] > 500  # 7 steps unrolled


def _check(capsys, weights, *extra) -> dict:
    seed = int(np.random.default_rng().integers(1 << 16))
    code = cli.main(NETDEF, ["check", "-w", str(weights), "--json", "--seed", str(seed), *extra])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, f"seed {seed}: {[(n, r['first_divergent']) for n, r in result.items()]}"
    return result


def test_check_craft_every_module(weights, capsys):
    result = _check(capsys, weights, "--network", "craft")["ocr.craft"]
    assert len(result["layers"]) == 85 and all(r["passed"] for r in result["layers"])


def test_check_crnn_unrolled_every_module(weights, capsys):
    result = _check(capsys, weights, "--network", "crnn", "--lstm", "unrolled", "--width", "48")["ocr.crnn"]
    assert len(result["layers"]) == 29 and all(r["passed"] for r in result["layers"])


def test_check_crnn_loop_every_module(weights, capsys):
    result = _check(capsys, weights, "--network", "crnn", "--batch", "2")["ocr.crnn"]
    assert len(result["layers"]) == 29 and all(r["passed"] for r in result["layers"])


# ---- the pipeline against EasyOCR ---------------------------------------------------------------------
@pytest.mark.parametrize("name", [*SYNTHETIC, *PHOTOS])
def test_strings_and_boxes_equal_easyocr(weights, reader, tmp_path, capsys, name):
    path = image_path(name, tmp_path)
    assert cli.main(NETDEF, ["infer", "-w", str(weights), str(path), "--json", "-o", str(tmp_path / "out")]) == 0
    ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    theirs = easyocr_readtext(reader, cv2.imread(str(path)))
    assert [r["text"] for r in ours] == [t for _, t, _ in theirs]
    assert len(ours) >= (2 if name in SYNTHETIC else 1)
    for r, (box, _, conf) in zip(ours, theirs):
        assert np.abs(np.array(r["box"], np.float64) - np.array(box, np.float64)).max() <= 1.0
        assert abs(r["conf"] - conf) <= 1e-4
    assert (tmp_path / "out" / path.name).is_file()


@pytest.mark.slow
def test_bus_jpg_equals_easyocr(weights, reader, tmp_path, capsys):
    path = sources.sample_images() / "bus.jpg"
    assert cli.main(NETDEF, ["infer", "-w", str(weights), str(path), "--json", "-o", str(tmp_path)]) == 0
    ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    theirs = easyocr_readtext(reader, cv2.imread(str(path)))
    assert [r["text"] for r in ours] == [t for _, t, _ in theirs]
    assert "emisiones" in [r["text"] for r in ours]


# ---- host-side pieces ---------------------------------------------------------------------------------
def test_decode_is_easyocr_greedy_ctc():
    from easyocr.recognition import custom_mean
    from easyocr.utils import CTCLabelConverter

    rng = np.random.default_rng()
    logits = rng.normal(0, 3, (40, len(pipeline.CHARACTERS) + 1)).astype(np.float32)
    logits[::3, 0] += 8  # blanks between runs
    text, conf = pipeline.decode(logits)
    prob = pipeline.softmax(logits)
    prob = prob / prob.sum(axis=1, keepdims=True)
    converter = CTCLabelConverter(pipeline.CHARACTERS)
    assert text == converter.decode_greedy(prob.argmax(axis=1), [len(prob)])[0]
    best = prob.max(axis=1)[prob.argmax(axis=1) != 0]
    assert conf == pytest.approx(custom_mean(best), rel=1e-6)


def test_recognizer_input_is_easyocr_align_collate():
    from easyocr.recognition import AlignCollate
    from PIL import Image

    rng = np.random.default_rng()
    for h, w, width in ((64, 150, 192), (90, 40, 64), (64, 64, 128)):
        crop = rng.integers(0, 256, (h, w)).astype(np.uint8)
        theirs = AlignCollate(imgH=64, imgW=width, keep_ratio_with_pad=True)([Image.fromarray(crop, "L")])
        np.testing.assert_array_equal(pipeline.recognizer_input(crop, width), theirs.numpy())
