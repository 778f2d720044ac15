"""RetinaFace's GPU code against its references: the retinaface_decode kernel (fresh random inputs each run,
outputs poisoned before the launch), the decode + nms plugin chain, and the NMS that runs right after engines
ending at the decoded boxes. Needs torch with CUDA and cuda-python only (no TensorRT, no model packages).

    compute-sanitizer --tool memcheck .venv/bin/python -m pytest -q -m gpu tests/test_retinaface_gpu.py

Tests taking ``aot`` also run the ahead-of-time contract (tests/plugins/test_plugins_gpu.py says what it is).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from plugins import nms, retinaface_decode
from trtx.nms import nms as exact_nms
from trtx.nms import order

pytestmark = pytest.mark.gpu

HEIGHT, WIDTH = 320, 480  # 40x60, 20x30, 10x15 cells x 2 sizes: 6300 priors
PRIORS = 6300
THRESHOLD = 0.5
SEED = random.randrange(2**31)


@pytest.fixture(params=[False, True], ids=["enqueue", "aot"])
def aot(request):
    """Run through the IPluginV3 launch code (False) or the ahead-of-time contract (True)."""
    return request.param


def heads(batch: int, *, seed: int, dtype=torch.float32):
    """Random loc / conf / landms on the GPU; face scores spread over (0, 1), fewer faces in later images, none
    within 1e-4 of THRESHOLD (so the last bits of expf vs torch.exp cannot move a prior across it)."""
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, PRIORS, 4, generator=g) * 2
    landms = torch.randn(batch, PRIORS, 10, generator=g) * 2
    conf = torch.randn(batch, PRIORS, 2, generator=g) * 3
    conf[:, :, 1] -= 1.5 + torch.arange(batch)[:, None] * 0.7
    for _ in range(3):
        score = torch.softmax(conf.to(dtype).float(), -1)[..., 1]
        conf[..., 1][(score - THRESHOLD).abs() < 1e-4] += 0.01
    return [t.to(dtype).cuda().contiguous() for t in (loc, conf, landms)]


def fields(**kw):
    return {"height": HEIGHT, "width": WIDTH, "conf_threshold": THRESHOLD, "max_det": PRIORS, **kw}


def stored(num: torch.Tensor, dets: torch.Tensor, b: int) -> torch.Tensor:
    """Image b's stored records sorted by prior index (the GPU stores them in atomic-counter order)."""
    rows = dets[b, : min(int(num[b]), dets.shape[1])]
    return rows[torch.argsort(rows[:, 7])]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_decode_kernel_equals_reference(batch, dtype, aot):
    inputs = heads(batch, seed=SEED + batch, dtype=dtype)
    num, dets, landmarks = retinaface_decode.run(inputs, aot=aot, **fields())  # NaN / INT32_MIN poisoned before launch
    torch.cuda.synchronize()
    ref_num, ref_dets, ref_landmarks = retinaface_decode.reference(inputs, **fields())
    assert num.dtype == torch.int32 and dets.shape == (batch, PRIORS, 8) and landmarks.shape == (batch, PRIORS, 10)
    assert not torch.isnan(dets).any() and not torch.isnan(landmarks).any(), f"unwritten outputs (seed {SEED})"
    assert torch.equal(num, ref_num), f"seed {SEED}"
    assert int(num.min()) > 100 and len(set(num.tolist())) == batch  # every image has faces, each its own count
    torch.testing.assert_close(landmarks, ref_landmarks, rtol=1e-6, atol=1e-4, msg=f"seed {SEED}")
    for b in range(batch):
        n = int(num[b])
        got, expected = stored(num, dets, b), ref_dets[b, :n]
        assert torch.equal(got[:, 5:], expected[:, 5:]), f"class, level, prior index (seed {SEED})"
        torch.testing.assert_close(got[:, :5], expected[:, :5], rtol=1e-5, atol=1e-3, msg=f"seed {SEED}")
        assert (dets[b, n:] == 0).all(), "slots after the count are zero"


def test_decode_kernel_counts_past_max_det_per_image(aot):
    inputs = heads(2, seed=SEED)
    num, dets, _ = retinaface_decode.run(inputs, aot=aot, **fields(max_det=50))
    ref_num, ref_dets, _ = retinaface_decode.reference(inputs, **fields())
    assert torch.equal(num, ref_num) and int(num.min()) > 50
    for b in range(2):
        by_index = {int(r[7]): r for r in ref_dets[b, : int(ref_num[b])]}
        assert len({int(i) for i in dets[b, :, 7]}) == 50  # 50 distinct candidates, whichever won the counter
        for row in dets[b]:
            torch.testing.assert_close(row, by_index[int(row[7])], rtol=1e-5, atol=1e-3, msg=f"seed {SEED}")


@pytest.mark.parametrize("batch", [1, 4])
def test_decode_and_nms_plugins_equal_their_references(batch, aot):
    """The plugin post-processing (decode -> nms -> landmarks by prior index) on the GPU and with the torch
    references (which tests/test_retinaface.py holds to biubug6's decode + exact NMS on the trained model).

    The kernels' scores may differ from torch's in the last bits (expf), which can reorder near-equal scores, so
    the nms stage is held to exact equality on the very records the GPU decode produced, and the decode stage to
    its reference within float tolerance (per prior)."""
    inputs = heads(batch, seed=SEED + 7)
    gpu_num, gpu_dets, gpu_landmarks = retinaface_decode.run(inputs, aot=aot, **fields(max_det=2000))
    ref_num, ref_dets, ref_landmarks = retinaface_decode.reference(inputs, **fields(max_det=2000))
    assert torch.equal(gpu_num, ref_num), f"seed {SEED}"
    kw = {"iou_threshold": 0.4, "score_threshold": THRESHOLD, "max_det": 300, "agnostic": True}
    out_num, out = nms.run([gpu_num, gpu_dets], aot=aot, **kw)
    exp_num, exp = nms.reference([gpu_num, gpu_dets], **kw)
    assert torch.equal(out_num, exp_num), f"seed {SEED}"
    assert torch.equal(out, exp), f"same priors kept, same order, same bits (seed {SEED})"
    index = out[..., 7].long()[..., None].expand(-1, -1, 10)
    torch.testing.assert_close(torch.gather(gpu_landmarks, 1, index), torch.gather(ref_landmarks, 1, index))


def clustered_faces(batch: int, priors: int, *, seed: int):
    """Decoded-looking corners [B, A, 4] on a 1/4-pixel grid (so cx, w and cx ± w/2 are exact in float32) around
    a few centres, scores [B, A] with ties."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, 8, 2, generator=g) * 560 + 40
    pick = torch.randint(0, 8, (batch, priors), generator=g)
    c = torch.gather(centres, 1, pick[..., None].expand(-1, -1, 2)) + torch.randn(batch, priors, 2, generator=g) * 6
    wh = torch.rand(batch, priors, 2, generator=g) * 60 + 20
    boxes = (torch.cat([c - wh / 2, c + wh / 2], -1) * 4).round() / 4
    scores = (torch.rand(batch, priors, generator=g) * 100).round() / 100
    return boxes, scores


@pytest.mark.parametrize("conf", [0.5, 0.02])
def test_after_engine_nms_equals_exact_cpu_nms(conf):
    """Native engines on TensorRT-RTX end at the decoded boxes; where CUDA is present NMS runs right after them
    with the nms kernel (retinaface_decode.select): the same faces, in the same order, as trtx.nms."""
    boxes, scores = clustered_faces(3, PRIORS, seed=SEED + 11)
    kept = retinaface_decode.select(boxes, scores, conf_threshold=conf, iou_threshold=0.4, top_k=5000,
                                    keep_top_k=750)  # fmt: skip
    for b in range(3):
        s, bx = scores[b].numpy(), boxes[b].numpy()
        cand = np.nonzero(s > np.float32(conf))[0]
        cand = cand[order(s[cand])][:5000]
        expected = cand[exact_nms(bx[cand], s[cand], 0.4, max_keep=750)]
        assert len(expected) > 20 and np.array_equal(kept[b], expected), f"image {b} (seed {SEED})"
