"""The kernels on a GPU against their torch references: fresh random inputs, poisoned outputs, batch 1/3/8.

Every run uses a new seed (printed on failure). ``Plugin.run`` poisons outputs with NaN / INT32_MIN and the
workspace with 0xFF before the launch, so a kernel that skips an element fails the comparison. Set
``TRTX_PLUGIN_REPORT=path.json`` to record the largest errors seen (bench/results quote them).

Tests taking the ``aot`` fixture run twice: ``enqueue`` (the IPluginV3 launch code) and ``aot`` (the
ahead-of-time contract TensorRT >= 10.9 would launch from an engine: the PTX loaded by the driver, the grid,
block, shared memory and int32 arguments evaluated at these shapes, inputs / arguments / outputs in TensorRT's
order, no workspace -- ``plugins.aot.contract`` / ``launch``). Under compute-sanitizer:

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python -m pytest -q -m gpu tests/plugins
"""

from __future__ import annotations

import json
import os
import random

import pytest
import torch
from plugin_cases import ANCHORS, STRIDES, clustered_records, random_head

from plugins import nms, swish, yolo_decode
from plugins.kernel import CudaError, Kernel, LaunchError

pytestmark = pytest.mark.gpu
BATCHES = [1, 3, 8]
#: tolerance relative to each quantity's scale; fp16 heads are decoded in fp32 too, so both are tight
TOLERANCE = {"float32": 1e-6, "float16": 1e-3}
REPORT: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    path = os.environ.get("TRTX_PLUGIN_REPORT")
    if path:
        old = json.load(open(path)) if os.path.exists(path) else {}
        with open(path, "w") as f:
            json.dump({**old, **REPORT}, f, indent=1, sort_keys=True)


def _note(key: str, value: float) -> None:
    REPORT[key] = max(REPORT.get(key, 0.0), float(value))


@pytest.fixture(params=[False, True], ids=["enqueue", "aot"])
def aot(request):
    """Run through the IPluginV3 launch code (False) or the ahead-of-time contract (True)."""
    return request.param


def _path(aot: bool) -> str:
    return "aot" if aot else "enqueue"


@pytest.fixture
def seed():
    value = random.SystemRandom().randrange(2**31)
    print(f"seed {value}")
    return value


def _unpoisoned(*tensors):
    for t in tensors:
        if t.is_floating_point():
            assert not t.isnan().any(), "an output element was never written"
        else:
            assert (t != torch.iinfo(t.dtype).min).all(), "an output element was never written"


# ---- swish (the tutorial plugin) ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("batch", BATCHES)
def test_swish(dtype, batch, seed, aot):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = (torch.randn(batch, 3, 37, 41, device="cuda", generator=g) * 4).to(getattr(torch, dtype))
    (y,) = swish.run([x], beta=1.3, aot=aot)
    (want,) = swish.reference([x], beta=1.3)
    _unpoisoned(y)
    assert y.dtype == x.dtype and y.shape == x.shape
    err = ((y.float() - want.float()).abs() / want.float().abs().clamp(min=1)).max().item()
    _note(f"swish {dtype} {_path(aot)} max rel err", err)
    assert err <= TOLERANCE[dtype], err


# ---- yolo_decode --------------------------------------------------------------------------------------------


def _decode_case(batch, level, dtype, seed, max_det=None, obj_shift=-4.0):
    h = w = 640 // STRIDES[level]
    head = random_head(batch, h, w, seed=seed, obj_shift=obj_shift).to("cuda", getattr(torch, dtype))
    fields = dict(anchors=ANCHORS[level], stride=STRIDES[level], level=level, max_det=max_det or 3 * h * w)
    return head, fields


def _bracket(head, fields):
    """References at the threshold -/+ 1e-5: a candidate whose score is that close may go either way
    (the GPU's expf and torch's sigmoid differ in the last bits)."""
    every = {**fields, "max_det": 3 * head.shape[2] * head.shape[3]}  # room for every anchor
    loose = yolo_decode.reference([head], **{**every, "conf_threshold": 0.25 - 1e-5})
    strict = yolo_decode.reference([head], **{**every, "conf_threshold": 0.25 + 1e-5})
    return loose, strict


def _check_records(got, loose_rows, strict_rows, fields, dtype, key):
    """``got`` (records in GPU order) against the reference rows: same candidates, geometry within tolerance."""
    idx = got[:, 7].long()
    assert len(set(idx.tolist())) == len(idx), "a candidate was written twice"
    loose_idx, strict_idx = loose_rows[:, 7].long(), strict_rows[:, 7].long()
    assert torch.isin(idx, loose_idx).all(), "a record the reference does not have"
    pos = torch.searchsorted(loose_idx, idx)  # the reference is in anchor_index order
    ref = loose_rows[pos]
    scale = torch.tensor([640.0, 640.0, 4 * max(fields["anchors"]), 4 * max(fields["anchors"]), 1.0], device=got.device)
    err = ((got[:, :5] - ref[:, :5]).abs() / scale).max().item() if len(got) else 0.0
    _note(key, err)
    assert err <= TOLERANCE[dtype], f"max error {err} relative to scale"
    assert torch.equal(got[:, 5:], ref[:, 5:]), "class, level or anchor_index differ"
    return torch.isin(strict_idx, idx).all().item()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("batch", BATCHES)
def test_yolo_decode(batch, level, dtype, seed, aot):
    head, fields = _decode_case(batch, level, dtype, seed)
    num, dets = yolo_decode.run([head], aot=aot, **fields)
    _unpoisoned(num, dets)
    (loose_num, loose), (strict_num, strict) = _bracket(head, fields)
    assert ((strict_num <= num) & (num <= loose_num)).all(), (num, strict_num, loose_num)
    assert (num > 0).all() and len(set(num.tolist())) > 1 or batch == 1  # images differ in their counts
    for b in range(batch):
        n = int(num[b])
        assert not dets[b, n:].any(), "slots past num must be zero"
        complete = _check_records(
            dets[b, :n],
            loose[b, : loose_num[b]],
            strict[b, : strict_num[b]],
            fields,
            dtype,
            f"yolo_decode {dtype} {_path(aot)}",
        )
        assert complete, "a candidate clearly over the threshold is missing"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("batch", BATCHES)
def test_aot_decode_equals_the_enqueue_decode(batch, dtype, seed):
    """The AOT kernel (one block per image, its counter in shared memory) stores the candidates the IPluginV3
    kernel stores, with the same values (same device code; only the order of the slots differs)."""
    head, fields = _decode_case(batch, 1, dtype, seed)
    num, dets = yolo_decode.run([head], **fields)
    aot_num, aot_dets = yolo_decode.run([head], aot=True, **fields)
    _unpoisoned(aot_num, aot_dets)
    assert torch.equal(num, aot_num)
    for b in range(batch):
        n = int(num[b])
        mine, theirs = aot_dets[b, :n], dets[b, :n]
        mine, theirs = mine[torch.argsort(mine[:, 7])], theirs[torch.argsort(theirs[:, 7])]
        assert torch.equal(mine[:, 5:], theirs[:, 5:])
        err = (mine[:, :5] - theirs[:, :5]).abs().max().item() if n else 0.0
        _note(f"yolo_decode {dtype} aot vs enqueue max abs diff", err)
        assert err <= 1e-4, err
        assert not aot_dets[b, n:].any()


def test_aot_contract_is_ptx_for_this_device():
    from plugins import aot
    from plugins.kernel import context_capability

    plugin = yolo_decode.YoloDecode(anchors=ANCHORS[0], stride=8)
    c = aot.contract(plugin, [(3, 255, 80, 80)], ["float16"])
    major, minor = context_capability()
    assert c.compiled.kind == "ptx" and int(c.compiled.arch.split("_")[1]) <= 10 * major + minor
    assert (c.grid, c.block, c.args) == ((3, 1, 1), (512, 1, 1), (80, 80))


def test_yolo_decode_images_of_a_batch_are_independent(seed):
    """tensorrtx's YoloLayer mixes images of a batch; here image b of a batch of 8 decodes as it does alone."""
    head, fields = _decode_case(8, 1, "float32", seed)
    num, dets = yolo_decode.run([head], **fields)
    for b in range(8):
        one_num, one = yolo_decode.run([head[b : b + 1].contiguous()], **fields)
        assert int(one_num[0]) == int(num[b])
        n = int(num[b])
        mine, alone = dets[b, :n], one[0, :n]
        assert torch.equal(mine[torch.argsort(mine[:, 7])], alone[torch.argsort(alone[:, 7])])


def test_yolo_decode_truncates_at_max_det_and_counts_everything(seed, aot):
    head, fields = _decode_case(3, 0, "float32", seed, max_det=64, obj_shift=-1.0)
    num, dets = yolo_decode.run([head], aot=aot, **fields)
    _unpoisoned(num, dets)
    (loose_num, loose), (strict_num, strict) = _bracket(head, fields)
    assert ((strict_num <= num) & (num <= loose_num)).all() and (num > 64).all()
    for b in range(3):
        assert (dets[b, :, 4] > 0.25 - 1e-5).all()  # every slot holds a real candidate
        _check_records(dets[b], loose[b, : loose_num[b]], strict[b, : strict_num[b]], fields, "float32", "trunc")


def test_yolo_decode_rejects_a_wrong_head():
    head = torch.zeros(1, 254, 20, 20, device="cuda")
    with pytest.raises(yolo_decode.PluginError, match="254 channels"):
        yolo_decode.run([head], anchors=ANCHORS[2], stride=32)


# ---- nms ----------------------------------------------------------------------------------------------------


def _decoded_levels(batch, seed, dtype="float32", max_det=1000, aot=False):
    inputs = []
    for level in range(3):
        head, fields = _decode_case(batch, level, dtype, seed + level, max_det=max_det, obj_shift=-4.5)
        inputs += yolo_decode.run([head], aot=aot, **fields)
    return inputs


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("batch", BATCHES)
def test_nms_after_decode_equals_reference(batch, agnostic, dtype, seed, aot):
    inputs = _decoded_levels(batch, seed, dtype, aot=aot)
    fields = dict(iou_threshold=0.45, score_threshold=0.25, max_det=300, agnostic=agnostic)
    num, dets = nms.run(inputs, aot=aot, **fields)
    _unpoisoned(num, dets)
    want_num, want = nms.reference(inputs, **fields)
    assert torch.equal(num, want_num), (num, want_num)
    assert torch.equal(dets, want)  # same boxes in the same order, bit for bit
    assert (num > 0).all()


@pytest.mark.parametrize("batch", BATCHES)
def test_nms_ties_clusters_and_overcounted_inputs(batch, seed, aot):
    a_num, a = clustered_records(batch, 700, seed=seed)
    b_num, b = clustered_records(batch, 300, seed=seed + 1)
    b[..., 6] = 1
    b_num[0] = 300 + 25  # a truncated decode: counted more than it stored
    inputs = [t.cuda() for t in (a_num, a, b_num, b)]
    for fields in ({"max_det": 1000}, {"max_det": 7, "iou_threshold": 0.3}, {"score_threshold": 0.6}):
        num, dets = nms.run(inputs, aot=aot, **fields)
        _unpoisoned(num, dets)
        want_num, want = nms.reference(inputs, **fields)
        assert torch.equal(num, want_num) and torch.equal(dets, want), fields


def test_nms_more_candidates_than_shared_memory_caches(seed, aot):
    """5000 valid rows: nms_greedy caches the first ~1800 boxes in shared memory and reads the rest from global
    (the AOT kernel keeps one byte per candidate in shared memory and reads every box from global)."""
    num, dets = clustered_records(2, 5000, classes=2, seed=seed, tie_scores=False)
    num[:] = 5000
    inputs = [num.cuda(), dets.cuda()]
    out_num, out = nms.run(inputs, score_threshold=0.0, max_det=5000, aot=aot)
    want_num, want = nms.reference(inputs, score_threshold=0.0, max_det=5000)
    assert nms.Nms().output_shapes((2,), (2, 5000, 8)) and 5000 > (nms.SHARED_BYTES - 5000) // nms.BOX_BYTES
    assert torch.equal(out_num, want_num) and torch.equal(out, want)


@pytest.mark.skipif(
    os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
    reason="torch captures graphs only with its caching allocator",
)
def test_decode_and_nms_replay_in_a_cuda_graph(seed):
    """The launch code records into a CUDA graph (as TensorRT's enqueue may be captured) and replays right.
    Few enough candidates that no decode truncates (which candidates a truncated decode keeps varies)."""
    heads = [_decode_case(3, level, "float32", seed + level, max_det=1000, obj_shift=-7.5)[0] for level in range(3)]
    decoders = [yolo_decode.YoloDecode(**_decode_case(1, level, "float32", 0, max_det=1000)[1]) for level in range(3)]
    pipeline = lambda: nms.Nms().execute(  # noqa: E731
        [t for d, h in zip(decoders, heads) for t in d.execute([h], poison=False)], poison=False
    )
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        pipeline()  # loads every kernel before capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        num, dets = pipeline()
    for step in range(2):
        for level, h in enumerate(heads):
            h.copy_(_decode_case(3, level, "float32", seed + 10 * step + 7 * level, obj_shift=-7.5)[0])
        graph.replay()
        records = [t for d, h in zip(decoders, heads) for t in d.execute([h])]
        assert all((n <= 1000).all() for n in records[0::2])  # no truncation
        want_num, want = nms.Nms().execute(records)
        torch.cuda.synchronize()
        assert (want_num > 0).all()
        assert torch.equal(num, want_num) and torch.equal(dets, want)


def test_nms_fp16_decode_inputs(seed, aot):
    inputs = _decoded_levels(3, seed, dtype="float16", aot=aot)
    num, dets = nms.run(inputs, aot=aot)
    want_num, want = nms.reference(inputs)
    assert torch.equal(num, want_num) and torch.equal(dets, want)


# ---- the kernel API others build on -------------------------------------------------------------------------

AXPY = """
#include "trtx.cuh"
extern "C" __global__ void axpy(float* y, const float* x, float a, int n) {
    const long long i = global_index();
    if (i < n) y[i] += a * x[i];
}
"""


def test_kernel_from_a_string_on_raw_pointers_and_a_side_stream():
    k = Kernel(AXPY, "axpy", _register=False)
    x = torch.randn(1000, device="cuda")
    y = torch.ones(1000, device="cuda")
    k.launch_1d(1000, [y, x, 2.0, 1000])  # torch tensors, default stream
    torch.cuda.synchronize()
    assert torch.allclose(y, 1 + 2 * x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    k.launch(grid=4, block=(256, 1, 1), args=[y.data_ptr(), x.data_ptr(), -2.0, 1000], stream=stream)
    stream.synchronize()
    assert torch.allclose(y, torch.ones_like(y), atol=1e-6)
    assert k.function() is k.function()


def test_launch_errors_are_clear():
    k = Kernel(AXPY, "axpy", _register=False)
    y = torch.zeros(4, device="cuda")
    with pytest.raises(CudaError, match=r"cuLaunchKernel\(axpy, grid=\(1, 1, 1\), block=\(2048, 1, 1\).*INVALID_VALUE"):
        k.launch(1, 2048, [y, y, 1.0, 4])
    with pytest.raises(LaunchError, match="argument 'x': tensor is on cpu"):
        k.launch(1, 32, [y, torch.zeros(4), 1.0, 4])
    with pytest.raises(yolo_decode.PluginError, match="must be a CUDA tensor"):
        swish.run([torch.zeros(3)])


def test_run_on_a_side_stream(seed):
    head, fields = _decode_case(3, 2, "float32", seed)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        num, dets = yolo_decode.run([head], stream=stream, **fields)
    stream.synchronize()
    want_num, _ = yolo_decode.run([head], **fields)
    assert torch.equal(num, want_num)
