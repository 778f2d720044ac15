"""YOLOv8, YOLO11, YOLOv10, YOLO12 and YOLO26 (ultralytics 8.4): detection, segmentation, pose, oriented boxes,
classification; the end-to-end (NMS-free) heads of YOLOv10 and YOLO26.

python gen_wts.py --model ultralytics:yolo26n --random-init -o yolo26n.wts      # or -w yolo26n.pt --unsafe-pickle
python netdefs/ultralytics.py build -w yolo26n.wts -o yolo26n.engine [--imgsz 640] [--batch 1:4:8]
python netdefs/ultralytics.py check -w yolo26n.wts --image bus.jpg
python -m netdefs yolov8s-seg infer -w yolov8s-seg.wts bus.jpg zidane.jpg -o out/

The package, laid out like torchvision's detection models: ``model.py`` is the network (the file to edit: one
helper per ultralytics module, every module index written out), ``arch.py`` reads what the weights contain,
``config.py`` the options and engine metadata, ``decode.py`` the in-network post-processing and ``define``,
``torch_side.py`` the PyTorch model ``check`` compares with, ``app.py`` pre- and post-processing around the
engine, ``source.py`` the model source for gen_wts.py. docs/ultralytics.md tells the whole story.
"""

from __future__ import annotations

from netdefs.ultralytics import app, config, decode, source, torch_side
from netdefs.ultralytics.arch import HEAD, ONE2ONE
from trtx.netdef import App, Netdef, TorchSide

NAME = "ultralytics"
#: weights of training-only modules of YOLO26's heads (head-relative key prefix -> why)
TRAINING_ONLY = {
    "proto.semseg.": "Proto26's semantic segmentation branch, a training loss's",
    "flow_model.": "Pose26's RealNVP, the keypoint loss's",
    "cv4_sigma.": "Pose26's keypoint sigmas, the keypoint loss's",
    f"{ONE2ONE}cv4_sigma.": "Pose26's keypoint sigmas, the keypoint loss's",
}


def unused_reason(cfg: config.Config, key: str) -> str | None:
    """Weights the network leaves unread by design."""
    if cfg.postprocess == "none" and key.endswith(".dfl.conv.weight"):
        return "the DFL's fixed bin weights: --postprocess none leaves the decode to whoever reads raw_boxes"
    head = f"model.{HEAD[cfg.family]}."
    if cfg.task == "cls" or not key.startswith(head):
        return None
    rest = key[len(head) :]
    for prefix, why in TRAINING_ONLY.items():
        if rest.startswith(prefix):
            return f"{why}: training only"
    if cfg.end2end and rest.startswith("cv"):
        return "the one-to-many branch of an end-to-end head, NMS's: --head one2many builds it"
    if not cfg.end2end and rest.startswith(ONE2ONE):
        return "the one-to-one branch of an end-to-end head: --head one2one (the default) builds it"
    return None


NETDEF = Netdef(
    name=NAME,
    description="YOLOv8, YOLO11, YOLOv10, YOLO12, YOLO26 (ultralytics): detect, seg, pose, obb, cls",
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
