"""Transformer layers: IAttention (``add_attention`` / ``add_attention_v2``), RotaryEmbedding, KVCacheUpdate, MoE.

Attention: docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/Attention.html and the "Fused
Attention" chapter of the TensorRT developer guide.

The network holds an attention as two layers: ``ATTENTION_INPUT`` takes query, key, value and the optional
mask (3), normalization quantize scale (4), query lengths (5) and key/value lengths (6); ``ATTENTION_OUTPUT``
passes its result on. The input layer computes

    output = normalize(Q · Kᵀ  [+ float mask | where bool mask and the causal mask allow]) · V

with no scaling (TensorRT requires Q or K to be pre-multiplied by the attention scale). Grouped-query attention:
query head ``i`` reads key/value head ``i // (heads_q / heads_kv)``. Causal UPPER_LEFT lets query ``i`` attend to
keys ``j <= i``, LOWER_RIGHT to ``j <= i + s_kv - s_q``. Normalization SOFTMAX is over the keys (a query row
masked everywhere gives NaN, as a softmax of nothing); NONE uses the scores as they are. A normalization
quantize scale quantizes the normalized scores to INT8 or FP8 (Quantize.html) and dequantizes them before the
second product. PACKED_NHD tensors ``[tokens, heads, h]`` hold the sequences end to end; lengths ``[b + 1]``
are cumulative token counts, the output keeps the query's form.
"""

from __future__ import annotations

import torch

from trtx.reference.core import LayerCall, implements

_QUANT_RANGE = {"INT8": (-128.0, 127.0)}


def _heads_first(call: LayerCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    dq, dkv = q.shape[1], k.shape[1]
    if k.shape != v.shape:
        raise call.error(f"key {tuple(k.shape)} and value {tuple(v.shape)} must have the same shape")
    if dkv == 0 or dq % dkv:
        raise call.error(f"{dq} query heads are not a multiple of {dkv} key/value heads")
    if q.shape[-1] != k.shape[-1] or q.shape[0] != k.shape[0]:
        raise call.error(f"query {tuple(q.shape)} and key {tuple(k.shape)} disagree in batch or head size")
    if dq != dkv:
        k = k.repeat_interleave(dq // dkv, dim=1)
        v = v.repeat_interleave(dq // dkv, dim=1)
    return k, v


def _causal(kind: str, sq: int, skv: int, device) -> torch.Tensor | None:
    if kind == "NONE":
        return None
    i = torch.arange(sq, device=device)[:, None]
    j = torch.arange(skv, device=device)[None, :]
    return j <= i if kind == "UPPER_LEFT" else j <= i + (skv - sq)


def _padded(call: LayerCall, q, k, v, mask, scale, norm: str, causal: str, quantize: str | None) -> torch.Tensor:
    """Attention on [b, heads, s, h] tensors."""
    k, v = _heads_first(call, q, k, v)
    scores = torch.matmul(q, k.transpose(-1, -2))
    allowed = _causal(causal, q.shape[2], k.shape[2], q.device)
    if mask is not None:
        if mask.dim() != 4 or mask.shape[-2:] != scores.shape[-2:]:
            raise call.error(f"mask {tuple(mask.shape)} must be [a0, a1, {scores.shape[2]}, {scores.shape[3]}]")
        if mask.dtype == torch.bool:
            allowed = mask if allowed is None else allowed & mask
        else:
            scores = scores + mask
    if norm == "SOFTMAX":
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        scores = torch.softmax(scores, dim=-1)
    elif allowed is not None:
        raise call.unsupported("a bool or causal mask with normalization NONE (no masked value is documented)")
    if quantize is not None:
        scores = _quantize(call, scores, scale, quantize)
    return torch.matmul(scores, v)


def _quantize(call: LayerCall, p: torch.Tensor, scale: torch.Tensor | None, to: str) -> torch.Tensor:
    if scale is None:
        raise call.error(f"normalization quantize type {to} needs a quantize scale (input 4)")
    s = scale.float().reshape(-1)
    if s.numel() != 1:
        raise call.unsupported(f"a normalization quantize scale of {s.numel()} values (per-tensor only)")
    s = s.reshape(())
    if to == "FP8":
        return (p / s).clamp(-448.0, 448.0).to(torch.float8_e4m3fn).float() * s
    if to not in _QUANT_RANGE:
        raise call.unsupported("normalization_quantize_to_type", to)
    lo, hi = _QUANT_RANGE[to]
    return torch.round(p / s).clamp(lo, hi) * s


def _lengths(call: LayerCall, index: int, total: int, what: str) -> list[int]:
    t = call.optional(index)
    if t is None:
        raise call.error(f"packed {what} needs cumulative lengths (input {index})")
    cum = call.ints(t)
    if len(cum) < 2 or cum[0] != 0 or cum[-1] != total or any(b < a for a, b in zip(cum, cum[1:])):
        raise call.error(f"{what} lengths {cum} must rise from 0 to the {total} packed tokens")
    return cum


@implements("ATTENTION_INPUT")
def attention_input(call: LayerCall) -> list[torch.Tensor]:
    att = call.layer.attention
    q, k, v = call.x(0), call.x(1), call.x(2)
    mask = call.optional(3)
    mask = None if mask is None else (mask if mask.dtype == torch.bool else mask.float())
    scale = call.optional(4)
    norm, causal = att.norm_op.name, att.causal_kind.name
    if norm not in ("SOFTMAX", "NONE"):
        raise call.unsupported("norm_op", att.norm_op)
    quantize = None
    if scale is not None:
        quantize = att.normalization_quantize_to_type.name  # read only when set: TensorRT logs an error otherwise
    if int(att.num_ranks) != 1:
        raise call.unsupported("num_ranks", int(att.num_ranks))
    packed_q = att.query_form.name == "PACKED_NHD"
    packed_kv = att.key_value_form.name == "PACKED_NHD"
    if not packed_q and not packed_kv:
        return [_padded(call, q, k, v, mask, scale, norm, causal, quantize)]
    # packed: one padded attention per sequence, the output packed like the query
    if mask is not None:
        raise call.unsupported("a mask with packed (PACKED_NHD) tensors (its layout is not documented)")
    cq = _lengths(call, 5, q.shape[0], "query") if packed_q else None
    ckv = _lengths(call, 6, k.shape[0], "key/value") if packed_kv else None
    batch = len(cq) - 1 if cq is not None else len(ckv) - 1
    outs = []
    for b in range(batch):
        qb = q[cq[b] : cq[b + 1]].transpose(0, 1)[None] if packed_q else q[b : b + 1]
        kb = k[ckv[b] : ckv[b + 1]].transpose(0, 1)[None] if packed_kv else k[b : b + 1]
        vb = v[ckv[b] : ckv[b + 1]].transpose(0, 1)[None] if packed_kv else v[b : b + 1]
        ob = _padded(call, qb, kb, vb, None, scale, norm, causal, quantize)
        outs.append(ob[0].transpose(0, 1) if packed_q else ob)
    return [torch.cat(outs, 0)]


@implements("ATTENTION_OUTPUT")
def attention_output(call: LayerCall) -> list[torch.Tensor]:
    return [call.x(0)]


@implements("ROTARY_EMBEDDING")
def rotary_embedding(call: LayerCall) -> list[torch.Tensor]:
    """RotaryEmbedding.html: x [b, d, s, h]; cos/sin [b, s, r/2], or [positions, r/2] indexed by position ids
    [b, s] (input 3); the first r = rotary_embedding_dim (0: h) elements of h rotate in pairs -- (i, i + r/2), or
    adjacent (2i, 2i + 1) when interleaved: (x1, x2) -> (x1·cos - x2·sin, x2·cos + x1·sin)."""
    x, cos, sin = call.x(0), call.x(1), call.x(2)
    positions = call.optional(3)
    if positions is not None:
        positions = positions.to(torch.int64)
        cos, sin = cos[positions], sin[positions]
    rotary = int(call.layer.rotary_embedding_dim) or x.shape[-1]
    if x.dim() != 4 or rotary % 2 or rotary > x.shape[-1]:
        raise call.error(f"input {tuple(x.shape)} with rotary_embedding_dim {rotary}: needs [b, d, s, h], even r <= h")
    want = (x.shape[0], x.shape[2], rotary // 2)
    if cos.shape != want or sin.shape != want:
        raise call.error(f"cos/sin caches {tuple(cos.shape)}/{tuple(sin.shape)} must be {want} (per token)")
    cos, sin = cos[:, None], sin[:, None]  # over the heads
    rot, rest = x[..., :rotary], x[..., rotary:]
    if call.layer.interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        turned = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
    else:
        x1, x2 = rot[..., : rotary // 2], rot[..., rotary // 2 :]
        turned = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return [torch.cat([turned, rest], dim=-1)]


@implements("KV_CACHE_UPDATE")
def kv_cache_update(call: LayerCall) -> list[torch.Tensor]:
    """KVCacheUpdate.html, LINEAR: output[i, :, write[i] + s, :] = update[i, :, s, :]. TensorRT writes into the
    cache input itself (the output shares its memory); the reference returns an updated copy and leaves the
    caller's cache tensor as it was."""
    layer = call.layer
    if layer.cache_mode.name != "LINEAR":
        raise call.unsupported("cache_mode", layer.cache_mode)
    cache, update = call.x(0), call.x(1)
    starts = call.ints(call.input(2))
    batch = cache.shape[0]
    if len(starts) != batch:
        raise call.error(f"{len(starts)} write indices for a batch of {batch}")
    if layer.update_form.name == "PACKED_NHD":
        cum = _lengths(call, 3, update.shape[0], "update")
        if len(cum) != batch + 1:
            raise call.error(f"update lengths {cum} must have batch + 1 = {batch + 1} entries")
        pieces = [update[cum[i] : cum[i + 1]].transpose(0, 1) for i in range(batch)]  # [heads, s_i, h]
    else:
        pieces = list(update)
    out = cache.clone()
    for i, (start, piece) in enumerate(zip(starts, pieces)):
        if start < 0 or start + piece.shape[1] > cache.shape[2]:
            raise call.error(f"batch item {i}: writing {piece.shape[1]} positions at {start} overruns {cache.shape[2]}")
        out[i, :, start : start + piece.shape[1]] = piece
    return [out]


@implements("MOE")
def moe(call: LayerCall) -> list[torch.Tensor]:
    """MoE.html: out[t] = Σ_k score[t, k] · expert_{e[t, k]}(h[t]), each expert a gated linear unit
    down(act(h·Wg + bg) ⊙ (h·Wu + bu)) + bd, act NONE or SILU; static FP8 quantization of the ⊙ product (input 9,
    per tensor or per expert: Quantize.html's FP8 rule, then dequantized)."""
    layer = call.layer
    h, experts, scores = call.x(0), call.input(1).to(torch.int64), call.x(2)
    if call.optional(3) is None:
        raise call.error("has no expert weights (set_gated_weights)")
    gate, up, down = call.x(3), call.x(4), call.x(5)
    biases = [call.optional(k) for k in (6, 7, 8)]
    act = layer.activation_type.name
    if act not in ("NONE", "SILU"):
        raise call.unsupported("activation_type", layer.activation_type)
    n = gate.shape[0]
    if experts.numel() and (int(experts.min()) < 0 or int(experts.max()) >= n):
        raise call.error(f"expert indices must be in [0, {n}), got {int(experts.min())}..{int(experts.max())}")
    x = h.unsqueeze(-2)  # [b, s, 1, H] against the top-k experts' [b, s, k, H, I]
    g = (x.unsqueeze(-2) @ gate[experts]).squeeze(-2)
    u = (x.unsqueeze(-2) @ up[experts]).squeeze(-2)
    if biases[0] is not None:
        g, u = g + biases[0].float()[experts], u + biases[1].float()[experts]
    if act == "SILU":
        g = torch.nn.functional.silu(g)
    mul = g * u
    scale = call.optional(9)
    if scale is not None:
        if layer.quantization_to_type.name != "FP8":
            raise call.unsupported("quantization_to_type", layer.quantization_to_type)
        s = scale.float().reshape(-1)
        s = s[experts].unsqueeze(-1) if s.numel() == n and n > 1 else s.reshape(())
        mul = (mul / s).clamp(-448.0, 448.0).to(torch.float8_e4m3fn).float() * s
    y = (mul.unsqueeze(-2) @ down[experts]).squeeze(-2)
    if biases[2] is not None:
        y = y + biases[2].float()[experts]
    return [(scores.unsqueeze(-1) * y).sum(-2)]
