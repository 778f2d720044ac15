"""Conformance: IAttention (add_attention, add_attention_v2).

docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/Attention.html and the developer guide's "Fused
Attention": softmax(Q·Kᵀ ⊗ mask)·V without scaling, grouped-query heads, bool (True = attend) and add masks,
causal UPPER_LEFT / LOWER_RIGHT, normalization NONE, INT8/FP8 normalization quantization, packed (NHD) forms.
The expected values are torch's scaled_dot_product_attention (scale=1) or plain matmuls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from refcase import DEVICES, Case, assert_close, rand, t

from trtx.reference import NotImplementedInReference, ReferenceExecutionError

pytestmark = pytest.mark.parametrize("device", DEVICES)


def _attention(c: Case, q, k, v, norm="SOFTMAX", causal="NONE", v1=None):
    if v1 is not None:  # the deprecated add_attention(causal: bool)
        a = c.nw.add_attention(q, k, v, getattr(c.trt.AttentionNormalizationOp, norm), v1)
    else:
        a = c.nw.add_attention_v2(
            q, k, v, getattr(c.trt.AttentionNormalizationOp, norm), getattr(c.trt.CausalMaskKind, causal)
        )
    a.decomposable = True  # TensorRT-RTX's builder has no fused attention kernel for the CPU's target
    return a


def _sdpa(q, k, v, mask=None, causal=None):
    """torch's attention with scale 1; causal LOWER_RIGHT / UPPER_LEFT as explicit masks."""
    sq, skv = q.shape[-2], k.shape[-2]
    if causal is not None:
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(skv, device=q.device)[None, :]
        allowed = j <= i if causal == "UPPER_LEFT" else j <= i + (skv - sq)
        mask = allowed if mask is None else mask & allowed
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


@pytest.mark.parametrize("causal", ["NONE", "UPPER_LEFT", "LOWER_RIGHT"])
@pytest.mark.parametrize("heads", [(2, 2), (4, 2), (4, 1)])  # MHA, GQA, MQA
def test_attention_padded(device, causal, heads):
    hq, hkv = heads
    c = Case()
    q, k, v = c.input("q", (2, hq, 5, 8)), c.input("k", (2, hkv, 7, 8)), c.input("v", (2, hkv, 7, 8))
    c.output(_attention(c, q, k, v, causal=causal))
    qv, kv, vv = rand(2, hq, 5, 8), rand(2, hkv, 7, 8), rand(2, hkv, 7, 8)
    y = c.run({"q": qv, "k": kv, "v": vv}, device)["y"]
    expected = _sdpa(t(qv, device), t(kv, device), t(vv, device), causal=None if causal == "NONE" else causal)
    assert_close(y, expected)


def test_attention_hand_case(device):
    """One query over two keys with scores 0 and ln 3: weights 1/4, 3/4 of the values 4 and 8 -> 7."""
    c = Case()
    q, k, v = c.input("q", (1, 1, 1, 1)), c.input("k", (1, 1, 2, 1)), c.input("v", (1, 1, 2, 1))
    c.output(_attention(c, q, k, v))
    y = c.run(
        {"q": np.ones((1, 1, 1, 1), np.float32), "k": np.array([0, np.log(3)], np.float32).reshape(1, 1, 2, 1),
         "v": np.array([4, 8], np.float32).reshape(1, 1, 2, 1)}, device,
    )["y"]  # fmt: skip
    assert_close(y, torch.full((1, 1, 1, 1), 7.0))


def test_attention_causal_v1_is_upper_left(device):
    c = Case()
    q, k, v = c.input("q", (1, 2, 6, 4)), c.input("k", (1, 2, 6, 4)), c.input("v", (1, 2, 6, 4))
    a = _attention(c, q, k, v, v1=True)
    assert a.causal_kind == c.trt.CausalMaskKind.UPPER_LEFT
    c.output(a)
    qv, kv, vv = rand(1, 2, 6, 4), rand(1, 2, 6, 4), rand(1, 2, 6, 4)
    y = c.run({"q": qv, "k": kv, "v": vv}, device)["y"]
    assert_close(y, F.scaled_dot_product_attention(t(qv, device), t(kv, device), t(vv, device), is_causal=True,
                                                   scale=1.0))  # fmt: skip


def test_attention_bool_mask(device):
    """True = may attend; the mask's first dims broadcast over batch and heads (TensorRT refuses a mask together
    with a causal kind, so the two never combine)."""
    c = Case()
    q, k, v = c.input("q", (2, 2, 5, 8)), c.input("k", (2, 2, 6, 8)), c.input("v", (2, 2, 6, 8))
    m = c.input("m", (2, 1, 5, 6), np.bool_)
    a = _attention(c, q, k, v)
    assert a.mask is None
    a.mask = m
    assert a.mask is not None
    c.output(a)
    mv = np.random.default_rng().random((2, 1, 5, 6)) < 0.6
    mv[..., 0] = True  # every query row keeps a key: no empty softmax
    qv, kv, vv = rand(2, 2, 5, 8), rand(2, 2, 6, 8), rand(2, 2, 6, 8)
    y = c.run({"q": qv, "k": kv, "v": vv, "m": mv}, device)["y"]
    assert_close(y, _sdpa(t(qv, device), t(kv, device), t(vv, device), mask=t(mv, device)))


def test_attention_add_mask_broadcast(device):
    c = Case()
    q, k, v = c.input("q", (2, 4, 3, 8)), c.input("k", (2, 4, 6, 8)), c.input("v", (2, 4, 6, 8))
    a = _attention(c, q, k, v)
    add = rand(1, 4, 3, 6)
    a.mask = c.const(add)  # a0 = 1 broadcast over the batch
    c.output(a)
    qv, kv, vv = rand(2, 4, 3, 8), rand(2, 4, 6, 8), rand(2, 4, 6, 8)
    y = c.run({"q": qv, "k": kv, "v": vv}, device)["y"]
    assert_close(y, _sdpa(t(qv, device), t(kv, device), t(vv, device), mask=t(add, device)))


def test_attention_normalization_none(device):
    """NONE: (Q·Kᵀ + add mask)·V, no softmax."""
    c = Case()
    q, k, v = c.input("q", (1, 2, 3, 4)), c.input("k", (1, 2, 5, 4)), c.input("v", (1, 2, 5, 4))
    m = c.input("m", (1, 2, 3, 5))
    a = _attention(c, q, k, v, norm="NONE")
    a.mask = m
    c.output(a)
    qv, kv, vv, mv = rand(1, 2, 3, 4), rand(1, 2, 5, 4), rand(1, 2, 5, 4), rand(1, 2, 3, 5)
    y = c.run({"q": qv, "k": kv, "v": vv, "m": mv}, device)["y"]
    tq, tk, tv = t(qv, device), t(kv, device), t(vv, device)
    assert_close(y, (tq @ tk.transpose(-1, -2) + t(mv, device)) @ tv, rtol=1e-5)


def test_attention_fp16_tensors(device):
    """fp16 in and out; fp32 math inside, rounded once to fp16."""
    c = Case()
    q = c.input("q", (1, 4, 5, 8), np.float16)
    k, v = c.input("k", (1, 2, 7, 8), np.float16), c.input("v", (1, 2, 7, 8), np.float16)
    c.output(_attention(c, q, k, v, causal="LOWER_RIGHT"))
    qv, kv, vv = (rand(*s).astype(np.float16) for s in ((1, 4, 5, 8), (1, 2, 7, 8), (1, 2, 7, 8)))
    y = c.run({"q": qv, "k": kv, "v": vv}, device)["y"]
    assert y.dtype == torch.float16
    expected = _sdpa(t(qv, device).float(), t(kv, device).float(), t(vv, device).float(), causal="LOWER_RIGHT")
    torch.testing.assert_close(y, expected.half(), rtol=1e-3, atol=1e-3)  # one fp16 rounding of the fp32 result


@pytest.mark.parametrize("to", ["INT8", "FP8"])
def test_attention_normalization_quantized(device, to):
    """The softmax output is quantized with the scale (Quantize.html) and dequantized before BMM2."""
    c = Case()
    q, k, v = c.input("q", (1, 2, 5, 8)), c.input("k", (1, 2, 7, 8)), c.input("v", (1, 2, 7, 8))
    a = _attention(c, q, k, v)
    scale = 1 / 127 if to == "INT8" else 1 / 448
    a.normalization_quantize_scale = c.const(np.array(scale, np.float32))
    a.normalization_quantize_to_type = getattr(c.trt, to.lower() if to == "INT8" else "fp8")
    c.output(a)
    qv, kv, vv = rand(1, 2, 5, 8), rand(1, 2, 7, 8), rand(1, 2, 7, 8)
    y = c.run({"q": qv, "k": kv, "v": vv}, device)["y"]
    tq, tk, tv = t(qv, device), t(kv, device), t(vv, device)
    p = torch.softmax(tq @ tk.transpose(-1, -2), -1) / scale
    p = torch.round(p).clamp(-128, 127) if to == "INT8" else p.to(torch.float8_e4m3fn).float()
    assert_close(y, (p * scale) @ tv)
    assert not torch.allclose(y, torch.softmax(tq @ tk.transpose(-1, -2), -1) @ tv, rtol=1e-5, atol=1e-6)


def test_attention_packed(device):
    """PACKED_NHD: two sequences of 4 and 5 query tokens over 5 and 6 keys, lengths cumulative [b + 1].

    TensorRT-RTX has no packed attention kernel for the CPU target (its builder refuses, checked below), so this
    case runs without a build."""
    c = Case()
    q, k, v = c.input("q", (9, 2, 8)), c.input("k", (11, 2, 8)), c.input("v", (11, 2, 8))
    a = _attention(c, q, k, v, causal="LOWER_RIGHT")
    a.query_form = a.key_value_form = c.trt.AttentionIOForm.PACKED_NHD
    a.query_lengths = c.const(np.array([0, 4, 9], np.int32))
    a.key_value_lengths = c.const(np.array([0, 5, 11], np.int32))
    c.output(a)
    if device == "cpu":
        with pytest.raises(Exception, match="packed"):
            c.build({})
    qv, kv, vv = rand(9, 2, 8), rand(11, 2, 8), rand(11, 2, 8)
    y = c.run({"q": qv, "k": kv, "v": vv}, device, build=False)["y"]
    tq, tk, tv = t(qv, device), t(kv, device), t(vv, device)
    parts = []
    for (q0, q1), (k0, k1) in (((0, 4), (0, 5)), ((4, 9), (5, 11))):
        seq = _sdpa(*(x[a:b].transpose(0, 1)[None] for x, a, b in ((tq, q0, q1), (tk, k0, k1), (tv, k0, k1))),
                    causal="LOWER_RIGHT")  # fmt: skip
        parts.append(seq[0].transpose(0, 1))
    assert_close(y, torch.cat(parts))


def test_attention_refuses_what_is_undocumented(device):
    c = Case()
    q, k, v = c.input("q", (1, 1, 2, 4)), c.input("k", (1, 1, 2, 4)), c.input("v", (1, 1, 2, 4))
    c.output(_attention(c, q, k, v, norm="NONE", causal="UPPER_LEFT"))
    with pytest.raises(NotImplementedInReference, match="normalization NONE"):
        c.run({"q": rand(1, 1, 2, 4), "k": rand(1, 1, 2, 4), "v": rand(1, 1, 2, 4)}, device, build=False)


def _onnx_rope(x, cos, sin, positions, interleaved: bool, rotary: int) -> np.ndarray:
    """ONNX RotaryEmbedding (opset 23), run by onnx's own reference evaluator: an independent oracle."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    names = ["x", "cos", "sin"] + (["pos"] if positions is not None else [])
    node = helper.make_node("RotaryEmbedding", names, ["y"], interleaved=int(interleaved),
                            rotary_embedding_dim=rotary)  # fmt: skip
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names[:3]]
    if positions is not None:
        inputs.append(helper.make_tensor_value_info("pos", TensorProto.INT64, None))
    graph = helper.make_graph([node], "rope", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    feeds = {"x": x, "cos": cos, "sin": sin} | ({"pos": positions} if positions is not None else {})
    return ReferenceEvaluator(model).run(None, feeds)[0]


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("rotary", [0, 4])
@pytest.mark.parametrize("with_positions", [False, True])
def test_rotary_embedding_matches_onnx(device, interleaved, rotary, with_positions):
    """RotaryEmbedding.html: per-token cos/sin [b, s, r/2], or a cache [positions, r/2] indexed by position ids."""
    b, d, s, h = 2, 3, 4, 8
    half = (rotary or h) // 2
    c = Case()
    x = c.input("x", (b, d, s, h))
    rows = (10, half) if with_positions else (b, s, half)
    cos, sin = c.input("cos", rows), c.input("sin", rows)
    layer = c.nw.add_rotary_embedding(x, cos, sin, interleaved, rotary)
    angles = rand(*rows, low=0, high=6.3)
    feeds = {"x": rand(b, d, s, h), "cos": np.cos(angles), "sin": np.sin(angles)}
    if with_positions:
        layer.set_input(3, c.input("pos", (b, s), np.int64))
        feeds["pos"] = np.random.default_rng().integers(0, 10, size=(b, s)).astype(np.int64)
    c.output(layer)
    y = c.run(feeds, device)["y"]
    expected = _onnx_rope(feeds["x"], feeds["cos"], feeds["sin"], feeds.get("pos"), interleaved, rotary)
    assert_close(y, expected)
    if rotary:
        assert torch.equal(y[..., rotary:].cpu(), torch.from_numpy(feeds["x"][..., rotary:]))  # passed through


def test_rotary_embedding_hand_case(device):
    """A quarter turn (cos 0, sin 1) maps the pair (x1, x2) to (-x2, x1)."""
    c = Case()
    x = c.input("x", (1, 1, 1, 4))
    layer = c.nw.add_rotary_embedding(x, c.const(np.zeros((1, 1, 2), np.float32)),
                                      c.const(np.ones((1, 1, 2), np.float32)), False, 0)  # fmt: skip
    c.output(layer)
    y = c.run({"x": np.array([1, 2, 3, 4], np.float32).reshape(1, 1, 1, 4)}, device)["y"]
    assert y.reshape(-1).tolist() == [-3.0, -4.0, 1.0, 2.0]


@pytest.mark.parametrize("packed", [False, True])
def test_kv_cache_update(device, packed):
    """KVCacheUpdate.html (LINEAR): output[i, :, write[i] + s, :] = update[i, :, s, :]; the rest of the cache
    is kept, and the caller's cache tensor is not written (TensorRT would update it in place)."""
    c = Case()
    cache = c.input("cache", (2, 3, 10, 8))
    update = c.input("update", (7, 3, 8) if packed else (2, 3, 4, 8))
    write = c.input("write", (2,), np.int32)
    layer = c.nw.add_kv_cache_update(cache, update, write, c.trt.KVCacheMode.LINEAR)
    if packed:  # 3 new tokens for sequence 0, 4 for sequence 1
        layer.update_form = c.trt.AttentionIOForm.PACKED_NHD
        layer.update_lengths = c.const(np.array([0, 3, 7], np.int32))
    c.output(layer)
    cv, uv = rand(2, 3, 10, 8), rand(*((7, 3, 8) if packed else (2, 3, 4, 8)))
    wv = np.array([0, 5], np.int32)
    y = c.run({"cache": cv.copy(), "update": uv, "write": wv}, device)["y"]
    expected = cv.copy()
    for i, start in enumerate(wv):
        piece = uv[[0, 3, 7][i] : [0, 3, 7][i + 1]].transpose(1, 0, 2) if packed else uv[i]
        expected[i, :, start : start + piece.shape[1]] = piece
    assert torch.equal(y.cpu(), torch.from_numpy(expected))


def test_kv_cache_update_overrun_is_an_error(device):
    c = Case()
    cache, update = c.input("cache", (1, 1, 4, 2)), c.input("update", (1, 1, 3, 2))
    c.output(c.nw.add_kv_cache_update(cache, update, c.input("write", (1,), np.int32), c.trt.KVCacheMode.LINEAR))
    with pytest.raises(ReferenceExecutionError, match="overruns 4"):
        c.run({"cache": rand(1, 1, 4, 2), "update": rand(1, 1, 3, 2), "write": np.array([2], np.int32)}, device,
              build=False)  # fmt: skip


@pytest.mark.parametrize("act", ["NONE", "SILU"])
@pytest.mark.parametrize("extras", ["", "biases", "fp8"])
def test_moe(device, act, extras):
    """MoE.html: each token's output is the score-weighted sum of its top-k experts, each a gated linear unit.
    TensorRT-RTX builds MoE only for SM100+ targets (the builder refuses on this machine's, checked once)."""
    b, s, hidden, inner, n, k = 2, 3, 8, 6, 4, 2
    c = Case()
    h, e, sc = c.input("h", (b, s, hidden)), c.input("e", (b, s, k), np.int32), c.input("s", (b, s, k))
    layer = c.nw.add_moe(h, e, sc)
    wg, wu, wd = rand(n, hidden, inner), rand(n, hidden, inner), rand(n, inner, hidden)
    layer.set_gated_weights(c.const(wg), c.const(wu), c.const(wd), getattr(c.trt.MoEActType, act))
    bg, bu, bd = rand(n, inner), rand(n, inner), rand(n, hidden)
    if extras == "biases":
        layer.set_gated_biases(c.const(bg), c.const(bu), c.const(bd))
    scale = np.array([0.01, 0.02, 0.005, 0.03], np.float32)
    if extras == "fp8":
        layer.set_quantization_static(c.const(scale), c.trt.fp8)
    c.output(layer)
    if device == "cpu" and act == "SILU" and not extras:
        with pytest.raises(Exception, match="decompose"):
            c.build({})
    hv, ev, sv = (
        rand(b, s, hidden),
        np.random.default_rng().integers(0, n, size=(b, s, k)).astype(np.int32),
        rand(b, s, k),
    )
    y = c.run({"h": hv, "e": ev, "s": sv}, device, build=False)["y"]
    expected = np.zeros((b, s, hidden), np.float64)
    for i, j, m in np.ndindex(b, s, k):
        x, ex = hv[i, j].astype(np.float64), ev[i, j, m]
        g, u = x @ wg[ex], x @ wu[ex]
        if extras == "biases":
            g, u = g + bg[ex], u + bu[ex]
        if act == "SILU":
            g = g / (1 + np.exp(-g))
        mul = g * u
        if extras == "fp8":
            q = torch.from_numpy((mul / scale[ex]).astype(np.float32)).clamp(-448, 448).to(torch.float8_e4m3fn)
            mul = q.double().numpy() * scale[ex]
        out = mul @ wd[ex] + (bd[ex] if extras == "biases" else 0)
        expected[i, j] += sv[i, j, m] * out
    assert_close(y, expected.astype(np.float32), rtol=1e-4)
