"""MTCNN (netdefs/mtcnn) with facenet-pytorch's trained weights: each network builds with TensorRT-RTX (dynamic
profiles) and matches its PyTorch module layer by layer; the whole pipeline finds the faces
``facenet_pytorch.MTCNN().detect(img, landmarks=True)`` finds (IoU >= 0.99, probability within 1e-4, landmarks
within 0.5 px) on bus.jpg, zidane.jpg and scikit-image's astronaut.png."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import gen_wts
from netdefs.detection.boxes import Detections
from netdefs.detection.compare import Tolerance, same_detections
from netdefs.mtcnn import NETDEF, pipeline
from trtx import cli, sources

pytest.importorskip("facenet_pytorch")


def compare_faces(ours: list[dict], theirs: list[dict], iou: float, score: float, landmarks: float):
    """Each of our faces one of theirs (box IoU, score, landmarks in pixels) and each of theirs found."""
    tol = Tolerance(box=0.0, score=score, extras={"landmarks": landmarks}, iou=iou)
    as_rows = lambda f: Detections(f["boxes"], f["scores"], extras={"landmarks": f["landmarks"]})  # noqa: E731
    return same_detections([as_rows(f) for f in ours], [as_rows(f) for f in theirs], tol)


IMAGES = {
    "bus.jpg": lambda: sources.sample_images() / "bus.jpg",
    "zidane.jpg": lambda: sources.sample_images() / "zidane.jpg",
    "astronaut.png": lambda: sources.package_dir("skimage") / "data" / "astronaut.png",
}


def data(name: str) -> str:
    return str(sources.package_dir("facenet_pytorch") / "data" / name)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mtcnn") / "mtcnn.wts"
    parts = [f"{n}={data(n + '.pt')}" for n in ("pnet", "rnet", "onet")]
    assert gen_wts.main(["--model", "netdef:mtcnn", *[a for p in parts for a in ("-w", p)], "-o", str(out), "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def facenet():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True)


def test_gen_wts_is_facenets_state_dict(weights):
    import torch

    import wts

    state = wts.load(weights)
    for net in ("pnet", "rnet", "onet"):
        theirs = torch.load(data(f"{net}.pt"), map_location="cpu", weights_only=True)
        for key, value in theirs.items():
            assert np.array_equal(np.asarray(state[f"{net}.{key}"]).reshape(value.shape), value.numpy()), key


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_three_engines_with_dynamic_profiles(weights, tmp_path, capsys, precision):
    out = tmp_path / "mtcnn.engine"
    assert cli.main(NETDEF, ["build", "-w", str(weights), "-o", str(out), "--precision", precision]) == 0
    pipeline_meta = json.loads((tmp_path / "mtcnn.json").read_text())
    assert pipeline_meta["engines"] == {n: f"mtcnn.{n}.engine" for n in ("pnet", "rnet", "onet")}
    profiles = {
        n: json.loads((tmp_path / f"mtcnn.{n}.engine.json").read_text())["profiles"] for n in pipeline_meta["engines"]
    }
    assert profiles["pnet"]["data"] == [[1, 3, 12, 12], [1, 3, 640, 640], [1, 3, 1280, 1280]]
    assert profiles["rnet"]["data"] == [[1, 3, 24, 24], [64, 3, 24, 24], [512, 3, 24, 24]]
    assert profiles["onet"]["data"] == [[1, 3, 48, 48], [64, 3, 48, 48], [512, 3, 48, 48]]
    for n in pipeline_meta["engines"]:
        meta = json.loads((tmp_path / f"mtcnn.{n}.engine.json").read_text())
        assert meta["precision"] == precision and meta["unused_weights"] == []
        assert (tmp_path / f"mtcnn.{n}.engine").stat().st_size > 100_000


def test_check_every_network_and_module(weights, capsys):
    seed = int(np.random.default_rng().integers(1 << 16))
    code = cli.main(NETDEF, ["check", "-w", str(weights), "--json", "--batch", "3", "--seed", str(seed)])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, f"seed {seed}"
    counts = {name: len(r["layers"]) for name, r in result.items()}
    assert counts == {"mtcnn.pnet": 10, "mtcnn.rnet": 13, "mtcnn.onet": 17}
    for name, r in result.items():
        assert r["passed"] and all(row["passed"] for row in r["layers"] + r["outputs"]), name


def test_check_pnet_on_a_photo(weights, capsys):
    image = str(IMAGES["zidane.jpg"]())
    assert cli.main(NETDEF, ["check", "-w", str(weights), "--network", "pnet", "--image", image, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["mtcnn.pnet"]
    assert result["outputs"][0]["shape"][2:] == [212, 380]  # zidane 720 x 1280 at scale 0.6: 433 x 769 in


def facenet_faces(facenet, rgb: np.ndarray) -> dict[str, np.ndarray]:
    boxes, probs, points = facenet.detect(rgb, landmarks=True)
    if boxes is None:
        return {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "landmarks": np.zeros((0, 5, 2))}
    return {"boxes": boxes, "scores": np.asarray(probs, np.float64), "landmarks": points}


@pytest.mark.parametrize("name", list(IMAGES))
def test_faces_equal_facenet_pytorch(weights, facenet, tmp_path, capsys, name):
    """``infer --json`` (reference executor) against facenet-pytorch's MTCNN on the same photo."""
    path = IMAGES[name]()
    assert cli.main(NETDEF, ["infer", "-w", str(weights), str(path), "--json", "-o", str(tmp_path)]) == 0
    records = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ours = {
        "boxes": np.array([r["box"] for r in records], np.float64).reshape(-1, 4),
        "scores": np.array([r["conf"] for r in records], np.float64),
        "landmarks": np.array([r["landmarks"] for r in records], np.float64).reshape(-1, 5, 2),
    }
    theirs = facenet_faces(facenet, cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    passed, message = compare_faces([ours], [theirs], iou=0.99, score=1e-4, landmarks=0.5)
    assert passed, message
    assert len(records) >= 1 and (tmp_path / path.name).is_file() and (tmp_path / f"{path.stem}.json").is_file()


def test_area_resample_is_torch_interpolate_area():
    import torch

    rng = np.random.default_rng()
    image = rng.integers(0, 256, (37, 53, 3)).astype(np.float32)
    for h, w in ((23, 31), (12, 12), (48, 48), (60, 70)):
        ours = pipeline.resample(image, h, w)
        theirs = torch.nn.functional.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None], (h, w), mode="area")
        np.testing.assert_allclose(ours, theirs[0].numpy(), rtol=0, atol=2e-4)


def test_pyramid_is_facenets():
    assert pipeline.pyramid(720, 1280, 20, 0.709)[:2] == [0.6, 0.6 * 0.709]
    assert len(pipeline.pyramid(720, 1280, 20, 0.709)) == 11
    assert pipeline.pyramid(19, 200, 20, 0.709) == []


def test_wrong_weights_are_named(tmp_path, capsys):
    import wts

    bad = tmp_path / "bad.wts"
    wts.save({"conv1.weight": np.zeros(3, np.float32)}, bad)
    assert cli.main(NETDEF, ["build", "-w", str(bad)]) == 2
    assert "not facenet-pytorch MTCNN weights" in capsys.readouterr().err


def test_fp16_finds_the_same_faces(weights, tmp_path, capsys):
    """fp16 networks (softmax in fp32) against fp32 on zidane.jpg: the same 4 faces; probabilities move by up to
    ~8e-4 (docs/mtcnn.md)."""
    path = str(IMAGES["zidane.jpg"]())
    found = {}
    for precision in ("fp32", "fp16"):
        argv = ["infer", "-w", str(weights), path, "--json", "--precision", precision, "-o", str(tmp_path)]
        assert cli.main(NETDEF, argv) == 0
        records = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        found[precision] = {
            "boxes": np.array([r["box"] for r in records], np.float64).reshape(-1, 4),
            "scores": np.array([r["conf"] for r in records], np.float64),
            "landmarks": np.array([r["landmarks"] for r in records], np.float64).reshape(-1, 5, 2),
        }
    passed, message = compare_faces([found["fp16"]], [found["fp32"]], iou=0.99, score=2e-3, landmarks=0.5)
    assert passed and len(found["fp32"]["scores"]) == 4, message
