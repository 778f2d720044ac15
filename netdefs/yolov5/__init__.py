"""YOLOv5 v7.0 (ultralytics/yolov5, the ``yolov5==7.0.14`` package): detection, segmentation, classification.

python gen_wts.py --model yolov5:yolov5s --random-init -o yolov5s.wts
python netdefs/yolov5.py build -w yolov5s.wts -o yolov5s.engine [--imgsz 640] [--batch 1:4:16]
python netdefs/yolov5.py check -w yolov5s.wts --image bus.jpg
python netdefs/yolov5.py infer -w yolov5s.wts bus.jpg zidane.jpg -o out/    # reference executor, any machine
python netdefs/yolov5.py infer -e yolov5s.engine images/ -o out/            # TensorRT

Layer by layer like ``models/yolo.py`` + ``models/common.py`` (and tensorrtx's yolov5), every layer named after
the module path it mirrors (``model.2.cv1``) so ``check`` compares each block with PyTorch. What the model is --
task, P5/P6, depth (bottlenecks per C3), width (channels), classes, anchors, strides, mask coefficients -- is
read from the weights; a flag that contradicts them stops the build with a message saying what they contain.

The package, split like torchvision's detection models: ``model.py`` is the network (the file to edit: blocks
and the P5/P6 layouts, every module index written out), ``arch.py`` reads what the weights contain, ``config.py``
the options and engine metadata, ``decode.py`` ``define`` and the in-network post-processing (``--postprocess``
native, plugin or none), ``torch_side.py`` the PyTorch model ``check`` compares with, ``app.py`` pre- and
post-processing around the engine, ``source.py`` the ``yolov5:`` model source. What every detector shares (NMS,
the post-NMS comparison, drawing, JSON) is netdefs/detection. docs/yolov5.md tells the whole story.
"""

from __future__ import annotations

from netdefs.yolov5 import app, config, decode, source, torch_side
from trtx.netdef import App, Netdef, TorchSide

NETDEF = Netdef(
    name="yolov5",
    description=__doc__.strip().splitlines()[0],
    configure=config.configure,
    define=decode.define,
    models=config.MODELS,
    torch=TorchSide(
        torch_side.torch_model,
        torch_side.torch_forward,
        feeds=torch_side.example_feeds,
        extra=torch_side.check_extra,
        source=source.source_model,
    ),  # fmt: skip
    app=App(app.preprocess, app.postprocess, render=app.render, result_json=app.result_json, summary=app.summary),
    add_arguments=config.add_arguments,
    script="python netdefs/yolov5.py",
)
