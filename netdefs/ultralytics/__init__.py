"""YOLOv8 and YOLO11 (ultralytics 8.4): detection, segmentation, pose, oriented boxes, classification.

python gen_wts.py --model ultralytics:yolo11n --random-init -o yolo11n.wts      # or -w yolo11n.pt --unsafe-pickle
python netdefs/ultralytics.py build -w yolo11n.wts -o yolo11n.engine [--imgsz 640] [--batch 1:4:8]
python netdefs/ultralytics.py check -w yolo11n.wts --image bus.jpg
python -m netdefs yolov8s-seg infer -w yolov8s-seg.wts bus.jpg zidane.jpg -o out/

The package, laid out like torchvision's detection models: ``model.py`` is the network (the file to edit: one
helper per ultralytics module, every module index written out), ``arch.py`` reads what the weights contain,
``config.py`` the options and engine metadata, ``decode.py`` the in-network post-processing and ``define``,
``torch_side.py`` the PyTorch model ``check`` compares with, ``app.py`` pre- and post-processing around the
engine, ``source.py`` the model source for gen_wts.py. docs/ultralytics.md tells the whole story.
"""

from __future__ import annotations

from netdefs.ultralytics import app, config, decode, source, torch_side
from trtx.netdef import App, Netdef, TorchSide

NAME = "ultralytics"


def unused_reason(cfg: config.Config, key: str) -> str | None:
    """Weights the network leaves unread by design."""
    if cfg.postprocess == "none" and key.endswith(".dfl.conv.weight"):
        return "the DFL's fixed bin weights: --postprocess none leaves the decode to whoever reads raw_boxes"
    return None


NETDEF = Netdef(
    name=NAME,
    description="YOLOv8 and YOLO11 (ultralytics): detect, seg, pose, obb, cls",
    configure=config.configure,
    define=decode.define,
    models=config.MODELS,
    torch=TorchSide(
        model=torch_side.torch_model,
        forward=torch_side.torch_forward,
        feeds=torch_side.example_feeds,
        extra=torch_side.check_extra,
        source=source.source_model,
    ),
    app=App(
        preprocess=app.preprocess,
        postprocess=app.postprocess,
        render=app.render,
        result_json=app.result_json,
        summary=app.summary,
    ),
    add_arguments=config.add_arguments,
    unused_reason=unused_reason,
    script="python netdefs/ultralytics.py",
)
