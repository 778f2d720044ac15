"""YOLO11n post-processing on the GPU: our dfl_decode + nms (detect) / rotated_nms (OBB) kernels versus
ultralytics' own torch post-processing (``Detect._inference`` then ``ultralytics.utils.nms.non_max_suppression``),
on the same head outputs, in the same run.

The head outputs are YOLO11n's at 640x640 -- ``Detect.forward_head``'s dict: ``boxes`` [B, 64, 8400] (DFL
logits), ``scores`` [B, nc, 8400] (class logits), for OBB also ``angle`` [B, 1, 8400] -- drawn at random: box
logits N(0, 2), class logits N(-6, 1.5) (detect, 80 classes: about 4% of the anchors pass conf 0.25, a busy
street scene) or N(-5, 1.5) (OBB, DOTA's 15 classes), angles uniform in [-pi/4, 3pi/4). Both pipelines run end to
end from Python: every launch, allocation and the final synchronization are inside the timed region (ours also
concatenates the head's parts, as the network's concatenation would). ultralytics' side: its own Detect / OBB
head module decoding these outputs (DFL, dist2bbox / dist2rbox, sigmoid), then its non_max_suppression (conf
0.25, IoU 0.7, max_det 300; OBB: rotated=True, probiou Fast NMS). The last column replays ours as a CUDA graph:
its GPU time alone, without Python's launch overhead (as inside a TensorRT engine).

    python bench/ultralytics_bench.py --batch 1 8 --out /tmp/ultralytics_bench.md   # recorded in bench/results/
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from plugins_bench import compare_row  # noqa: E402  (the same timing as the yolov5 kernels' bench)

from plugins.ops.dfl_decode import DflDecode  # noqa: E402
from plugins.ops.nms import Nms  # noqa: E402
from plugins.ops.rotated_nms import RotatedNms  # noqa: E402

SIZE, STRIDES, REG_MAX = 640, (8, 16, 32), 16
CONF, IOU, MAX_DET = 0.25, 0.7, 300
TASKS = {"detect": (80, -6.0), "obb": (15, -5.0)}  # classes, mean class logit


def head_outputs(task: str, batch: int, seed: int) -> dict[str, torch.Tensor]:
    nc, mean = TASKS[task]
    g = torch.Generator(device="cuda").manual_seed(seed)
    a = sum((SIZE // s) ** 2 for s in STRIDES)
    out = {
        "boxes": torch.randn(batch, 4 * REG_MAX, a, device="cuda", generator=g) * 2,
        "scores": torch.randn(batch, nc, a, device="cuda", generator=g) * 1.5 + mean,
    }
    if task == "obb":
        out["angle"] = (torch.rand(batch, 1, a, device="cuda", generator=g) - 0.25) * math.pi
    return out


class Ours:
    """dfl_decode, then nms (class-aware greedy) or rotated_nms (ultralytics' probiou Fast NMS)."""

    def __init__(self, task: str) -> None:
        nc = TASKS[task][0]
        self.decoder = DflDecode(num_classes=nc, reg_max=REG_MAX, strides=STRIDES, height=SIZE, width=SIZE,
                                 angle=task == "obb", conf_threshold=CONF, max_det=8400)  # fmt: skip
        fields = dict(iou_threshold=IOU, score_threshold=CONF, max_det=MAX_DET)
        self.nms = RotatedNms(**fields) if task == "obb" else Nms(**fields)

    def decode(self, head):
        return self.decoder.execute([torch.cat(list(head.values()), 1)], poison=False)

    def suppress(self, records):
        return self.nms.execute(records, poison=False)

    def __call__(self, head):
        return self.suppress(self.decode(head))


class Ultralytics:
    """ultralytics' Detect / OBB head decoding the outputs (``_inference``), then its non_max_suppression."""

    def __init__(self, task: str) -> None:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="trtx-yolo-cfg-"))
        from ultralytics.nn.modules.head import OBB, Detect
        from ultralytics.utils.nms import non_max_suppression

        nc = TASKS[task][0]
        self.head = (OBB(nc, 1, ch=(16, 32, 64)) if task == "obb" else Detect(nc, ch=(16, 32, 64))).cuda().eval()
        self.head.stride = torch.tensor([float(s) for s in STRIDES])
        self.feats = [torch.zeros(1, 1, SIZE // s, SIZE // s, device="cuda") for s in STRIDES]
        self.task, self.nc, self.non_max_suppression = task, nc, non_max_suppression

    def decode(self, head):
        with torch.no_grad():
            return self.head._inference({**head, "feats": self.feats})

    def nms(self, pred):
        return self.non_max_suppression(pred, CONF, IOU, nc=self.nc, max_det=MAX_DET, rotated=self.task == "obb")

    def __call__(self, head):
        return self.nms(self.decode(head))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--task", nargs="+", choices=sorted(TASKS), default=["detect", "obb"], help="(default both)")
    parser.add_argument("--iters", type=int, default=100, help="timed iterations per measurement (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations first (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random head outputs (default 0)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    import ultralytics

    lines = [
        f"# YOLO11n post-processing: dfl_decode + nms / rotated_nms vs ultralytics ({dt.date.today().isoformat()})",
        "",
        f"- card: {torch.cuda.get_device_name()}; torch {torch.__version__}, ultralytics {ultralytics.__version__}",
        f"- command: `python3 {' '.join(['bench/ultralytics_bench.py', *(argv or sys.argv[1:])])}`",
        f"- head: YOLO11n {SIZE}x{SIZE} (8400 anchors, reg_max {REG_MAX}), conf {CONF}, IoU {IOU}, max_det {MAX_DET}; "
        f"median of {args.iters} calls after {args.warmup} warm-up, wall clock incl. final synchronize",
        "",
        "| task | batch | candidates/img | kept/img ours / ultralytics | ours (decode+NMS) | ultralytics "
        "(_inference + non_max_suppression) | ultralytics / ours | ours decode | ours NMS | ultralytics decode "
        "| ultralytics NMS | ours as CUDA graph (GPU time) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in args.task:
        ours, base = Ours(task), Ultralytics(task)
        for batch in args.batch:
            head = head_outputs(task, batch, args.seed)
            records = ours.decode(head)
            candidates = float(records[0].float().mean())
            row = compare_row(ours, base, head, records, ours.suppress, args)
            lines.append(f"| {task} | {batch} | {candidates:.0f} | {row}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
