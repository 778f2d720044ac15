"""A DeepStream ``nvinfer`` config (+ labels file) for a trtx detector engine.

For engines whose metadata has a ``detector`` section (written by the detector netdefs, see docs/deploy.md)
and whose outputs are per-image boxes, scores and classes:

* ``[property]``: ``model-engine-file`` (relative to the config), ``network-type=0`` (detector),
  ``num-detected-classes``, ``batch-size`` (the profile's max), ``network-mode`` (fp32/int8/fp16), the input's
  preprocessing (``net-scale-factor``, ``offsets``, ``model-color-format``, letterbox as
  ``maintain-aspect-ratio`` + ``symmetric-padding``), ``output-blob-names``, and ``cluster-mode``: 2 (nvinfer's
  per-class NMS) where the engine's outputs are candidates before NMS, 4 (none) where the engine already ran it.
* ``[class-attrs-all]``: ``pre-cluster-threshold`` (the confidence threshold), ``nms-iou-threshold``, ``topk``.

nvinfer has no built-in parser for these outputs: ``parse-bbox-func-name`` / ``custom-lib-path`` name a bbox
parser library (``--parse-func`` / ``--custom-lib``); without them the two lines are written commented out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtx.export import ExportError, written_by
from trtx.export.bundle import Bundle
from trtx_base.files import atomic_write

MARKER = "# written by python -m trtx export deepstream"
SERVER = "DeepStream's nvinfer"
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
#: nvinfer cluster-mode values
CLUSTER_NMS, CLUSTER_NONE = 2, 4
COLOR_FORMAT = {"RGB": 0, "BGR": 1, "GRAY": 2}


@dataclass(frozen=True)
class Detector:
    """The ``detector`` section of engine metadata: what a detection server needs to know about the engine."""

    num_classes: int
    names: list[str]
    boxes: str
    scores: str
    classes: str
    box_format: str
    nms: str
    conf: float
    iou: float
    max_det: int
    input: dict[str, Any]

    @classmethod
    def of(cls, bundle: Bundle) -> Detector:
        section = bundle.meta.get("detector")
        if not isinstance(section, dict):
            raise ExportError(
                f"{bundle.meta_path}: no 'detector' section (netdef {bundle.meta.get('netdef')!r}): export deepstream "
                "takes detector engines whose outputs are boxes, scores and classes (e.g. yolov5 --postprocess native)"
            )
        try:
            outs = section["outputs"]
            det = cls(int(section["num_classes"]), [str(n) for n in section["names"]], outs["boxes"], outs["scores"],
                      outs["classes"], section["box_format"], section["nms"], float(section["conf"]),
                      float(section["iou"]), int(section["max_det"]), dict(section["input"]))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"{bundle.meta_path}: the 'detector' section lacks or garbles {exc}") from None
        if len(det.names) != det.num_classes or any("\n" in n for n in det.names):
            raise ExportError(f"{bundle.meta_path}: 'detector' names {len(det.names)} one-line class names for "
                              f"{det.num_classes} classes")  # fmt: skip
        return det


def config_text(bundle: Bundle, config_dir: Path, labels_file: str, *, parse_func: str | None = None,
                custom_lib: str | None = None) -> str:  # fmt: skip
    """The nvinfer config of ``bundle``, to be written in ``config_dir`` beside ``labels_file``."""
    det = Detector.of(bundle)
    meta = bundle.meta
    outputs = {t["name"]: t for t in meta["outputs"]}
    for role in ("boxes", "scores", "classes"):
        name = getattr(det, role)
        if name not in outputs:
            raise ExportError(f"{bundle.meta_path}: 'detector' names output {name!r} for {role}, which the engine "
                              f"does not have ({', '.join(outputs)})")  # fmt: skip
        if outputs[name].get("batched") is False:
            raise ExportError(
                f"{bundle.path}: output {name!r} holds the rows kept by the NMS inside the engine for the whole batch, "
                "which nvinfer cannot split by frame; build with the NMS after the engine for DeepStream"
            )
    inputs = [t for t in meta["inputs"] if t["name"] == det.input.get("name")] or meta["inputs"][:1]
    chw = [int(d) for d in inputs[0]["shape"][1:]]
    mean = [float(m) for m in det.input.get("mean", (0.0, 0.0, 0.0))]
    color = str(det.input.get("color", "RGB")).upper()
    if color not in COLOR_FORMAT:
        raise ExportError(
            f"{bundle.meta_path}: 'detector' input color {color!r} is not one of {', '.join(COLOR_FORMAT)}"
        )
    precision = meta["precision"]
    engine = os.path.relpath(bundle.path.resolve(), config_dir.resolve())
    nms_in_engine = det.nms == "engine"
    letterbox = det.input.get("letterbox")
    lines = [
        f"{MARKER} from {bundle.path.name} ({bundle.built_with}, sha256 {meta['engine_sha256']})",
        *(f"# warning: {w}" for w in bundle.warnings(SERVER)),
        f"# outputs: {det.boxes} = boxes ({det.box_format}, network-input pixels), {det.scores} = scores, "
        f"{det.classes} = class ids; " + ("NMS ran in the engine" if nms_in_engine else "nvinfer runs the NMS"),
        "[property]",
        "gpu-id=0",
        f"model-engine-file={engine}",
        f"labelfile-path={labels_file}",
        f"batch-size={int(meta['batch']['max'])}",
        f"network-mode={NETWORK_MODE.get(precision, 0)}",
        "network-type=0",
        f"num-detected-classes={det.num_classes}",
        "process-mode=1",
        "gie-unique-id=1",
        f"infer-dims={';'.join(map(str, chw))}",
        f"net-scale-factor={float(det.input.get('scale', 1.0))!r}",
        f"offsets={';'.join(repr(m) for m in mean)}",
        f"model-color-format={COLOR_FORMAT[color]}",
        f"maintain-aspect-ratio={int(bool(letterbox))}",
        f"symmetric-padding={int(letterbox == 'center')}",
    ]
    if letterbox and det.input.get("pad_value"):
        lines.append(f"# nvinfer pads the letterbox with 0; the network was trained with {det.input['pad_value']}")
    lines += [
        f"cluster-mode={CLUSTER_NONE if nms_in_engine else CLUSTER_NMS}",
        f"output-blob-names={det.boxes};{det.scores};{det.classes}",
        "# a bbox parser for these outputs (nvinfer has none built in): --parse-func NAME --custom-lib PATH",
        f"{'' if parse_func else '#'}parse-bbox-func-name={parse_func or 'NvDsInferParseCustom'}",
        f"{'' if custom_lib else '#'}custom-lib-path={custom_lib or 'libnvdsinfer_custom_impl.so'}",
        "",
        "[class-attrs-all]",
        f"pre-cluster-threshold={det.conf!r}",
        f"nms-iou-threshold={det.iou!r}",
        f"topk={det.max_det}",
    ]
    return "\n".join(lines) + "\n"


def write(bundle: Bundle, out_dir: str | os.PathLike, name: str, *, parse_func: str | None = None,
          custom_lib: str | None = None) -> tuple[Path, Path]:  # fmt: skip
    """Write ``out_dir/config_infer_<name>.txt`` and ``out_dir/labels_<name>.txt``; returns both paths. Files of
    those names are replaced only where this command wrote them."""
    if not name or "/" in name or name.startswith("."):
        raise ExportError(f"--name {name!r}: must be a plain file-name stem")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"-o {out} is a file; give the folder for the config and labels")
    config, labels = out / f"config_infer_{name}.txt", out / f"labels_{name}.txt"
    text = config_text(bundle, out, labels.name, parse_func=parse_func, custom_lib=custom_lib)
    ours = written_by(config, MARKER)
    for path in (config, labels):
        if path.exists() and not ours:
            raise ExportError(f"{path} exists and was not written by trtx export deepstream: remove it or pick "
                              "another --name")  # fmt: skip
    atomic_write(labels, "\n".join(Detector.of(bundle).names) + "\n")
    atomic_write(config, text)
    return config, labels
