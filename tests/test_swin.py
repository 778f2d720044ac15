"""Swin (netdefs/swin.py): swin_t and swin_v2_t at 224 through the shared CLI, once each; properties on small
Swins.

Random weights from ``gen_wts.py --model netdef:swin:<arch> --random-init`` (biases and V2's logit scales drawn
at random instead of torchvision's constants): the real builder (TensorRT-RTX) builds the dynamic profile
1:4:8, ``check`` compares every module-named layer and the softmax with torchvision within 1e-4. swin_v2_t
at 224 (its weights were trained at 256) pads stage 3 (14 -> 16) and stage 4 (7 -> 8) to whole 8x8 windows.
Small Swins (width 32, depths 2/2/2/2, 2-4 heads) check V1 and V2 on inputs that pad before shifted windows
and before an odd patch merging, and that a wrong shift is named by check.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import gen_wts
import wts
from netdefs import swin
from netdefs.sources import state_dict_for_wts
from trtx import check, cli
from trtx.build import BatchSpec, BuildOptions, build_serialized
from trtx.net import Net

RTOL = 1e-4
#: arch -> (input size, module-named layers check compares)
FULL = {"swin_t": (224, 118), "swin_v2_t": (224, 166)}
SMALL = {"embed": 32, "depths": (2, 2, 2, 2), "heads": (2, 2, 4, 4)}


@pytest.fixture(scope="module", params=list(FULL))
def full(request, tmp_path_factory):
    arch = request.param
    path = tmp_path_factory.mktemp(arch) / f"{arch}.safetensors"
    assert gen_wts.main(["--model", f"netdef:swin:{arch}", "--random-init", "-o", str(path), "-q"]) == 0
    yield arch, path
    shutil.rmtree(path.parent)


def test_build_dynamic_batch(full, tmp_path):
    arch, weights = full
    size = FULL[arch][0]
    engine = tmp_path / f"{arch}.engine"
    argv = [
        "build",
        "--arch",
        arch,
        "-w",
        str(weights),
        "-o",
        str(engine),
        "--batch",
        "1:4:8",
        "--input-size",
        str(size),
    ]
    assert cli.main(swin.NETDEF, argv) == 0
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert engine.stat().st_size == meta["engine_bytes"] > 100_000_000  # 28M fp32 parameters
    assert [(t["name"], t["shape"], t["dtype"]) for t in meta["inputs"]] == [("data", [-1, 3, size, size], "float32")]
    assert meta["batch"] == {"min": 1, "opt": 4, "max": 8} and meta["unused_weights"] == []
    cfg = swin.configure(SimpleNamespace(arch=arch), None, meta)  # infer -e: from the metadata alone
    assert cfg.input_size == size and cfg.num_classes == 1000


def test_check_matches_torchvision(full, capsys):
    """Output and every module-named layer within 1e-4; the only rows not compared are the attention's qkv and
    proj Linear modules, whose weights torchvision's shifted_window_attention uses without calling them."""
    arch, weights = full
    size, count = FULL[arch]
    code = cli.main(swin.NETDEF, ["check", "--arch", arch, "-w", str(weights), "--input-size", str(size), "--json"])
    doc = json.loads(capsys.readouterr().out)
    rows = doc["outputs"] + doc["layers"]
    assert code == 0 and doc["passed"] and doc["first_divergent"] is None
    compared = [r for r in rows if r["passed"] is not None]
    assert all(r["passed"] for r in compared) and max(r["max_rel_err"] for r in compared) <= RTOL
    assert len(compared) == count + 1  # + prob
    skipped = {r["name"].rsplit(".", 1)[-1] for r in rows if r["passed"] is None}
    assert skipped == {"qkv", "proj"} and all(r["status"].startswith("module did not run") for r in rows
                                              if r["passed"] is None)  # fmt: skip
    assert [e["passed"] for e in doc["extras"]] == [True, True]
    names = {r["name"] for r in compared}
    assert {"features.1.1.attn", "features.7.1.attn", "features.6.reduction", "norm", "head"} <= names
    if arch == "swin_v2_t":
        assert "features.1.0.attn.cpb_mlp" in names


# ---- small Swins, in-process ---------------------------------------------------------------------------
def small_swin(arch: str, seed: int, window: int):
    import torch

    torch.manual_seed(seed)
    model = swin.source_model(arch, window=window, **SMALL)
    weights = wts.WeightMap(state_dict_for_wts(model))
    return SimpleNamespace(arch=arch, num_classes=1000, attention="matmul", **swin.structure(weights)), weights


def compare(cfg, weights, size: int, batch: int, seed: int, precision: str = "fp32"):
    cfg.input_size = cfg.resize = size
    net = Net(weights, name="swin", precision=precision)
    swin.define(net, cfg)
    assert net.unused_weights() == []
    feeds = {"data": np.random.default_rng(seed).standard_normal((batch, 3, size, size))}
    return check.compare(net, swin.torch_model(cfg, weights), feeds, forward=swin.NETDEF.torch.forward,
                         precision=precision)  # fmt: skip


@pytest.mark.parametrize(
    ("arch", "size", "window", "batch"),
    [
        ("swin_t", 64, 4, 2),  # no padding; the last stage (2x2) is one padded window, unshifted
        ("swin_v2_t", 96, 8, 1),  # stage 2: 12x12 padded to 16x16, shifted by 4
        ("swin_t", 104, 4, 2),  # 26x26: padded windows at stage 1, an odd 13x13 map merged at features.4
    ],
)
def test_small_swin_matches_torchvision(arch, size, window, batch):
    cfg, weights = small_swin(arch, size + window, window)
    result = compare(cfg, weights, size, batch, seed=size)
    assert result.passed, result.table()
    assert result.max_rel_err <= RTOL and len(result.layers) > 100


def test_small_swin_v2_fp16_with_padded_windows():
    """fp16 V2 with padded windows: the keys of zero-padded patches are exactly 0 (V2 zeroes the key bias), and
    F.normalize's eps must not round to 0 in fp16 (0 / 0); normalize computes in fp32, the network stays finite
    and within check's fp16 tolerance."""
    cfg, weights = small_swin("swin_v2_t", 11, 8)
    result = compare(cfg, weights, 96, 1, seed=11, precision="fp16")
    assert result.passed, result.table()
    assert all(r.status != "non-finite values differ" for r in result.layers)


def test_wrong_window_shift_is_the_first_divergent_layer(monkeypatch):
    """Shifting by window/2 - 1 instead of window/2: the unshifted first block matches, the first shifted one's
    attention does not."""
    cfg, weights = small_swin("swin_t", 7, 4)
    block = swin.swin_block

    def wrong(net, x, path, cfg, heads, shift):
        return block(net, x, path, cfg, heads, shift - 1 if shift else 0)

    monkeypatch.setattr(swin, "swin_block", wrong)
    result = compare(cfg, weights, 64, 1, seed=7)
    assert not result.passed
    assert result.first_divergent == "features.1.1.attn"
    assert {r.name: r.passed for r in result.layers}["features.1.1.norm1"]


def test_shift_mask_is_torchvisions(monkeypatch):
    """The mask: 0 within a region of the rolled map, -100 across; torchvision's own, recovered from the scores
    its shifted_window_attention hands to softmax (all-zero input and weights: the scores are the mask)."""
    import torch
    import torchvision.models.swin_transformer as tv

    mask = swin.shift_mask((16, 16), 8, (4, 4))
    assert mask.shape == (4, 64, 64) and set(np.unique(mask)) == {0.0, -100.0}
    assert (mask[0] == 0).all()  # the top-left window sees no seam
    seen = {}
    softmax = torch.nn.functional.softmax

    def spy(attn, dim):
        seen["attn"] = attn.clone()
        return softmax(attn, dim=dim)

    monkeypatch.setattr(tv.F, "softmax", spy)
    zeros = torch.zeros
    tv.shifted_window_attention(zeros(1, 16, 16, 8), zeros(24, 8), zeros(8, 8), zeros(1, 1, 64, 64), [8, 8], 1,
                                [4, 4], training=False)  # fmt: skip
    assert np.array_equal(seen["attn"][:, 0].numpy(), mask)


@pytest.mark.parametrize(("arch", "size", "window"), [("swin_t", 64, 4), ("swin_v2_t", 96, 8)])
def test_small_swin_attention_layer_matches_torchvision(arch, size, window):
    """--attention trt with shifted windows: position bias + shift mask as the attention layer's add mask over
    [B, nW·heads, N, N]."""
    cfg, weights = small_swin(arch, 3, window)
    cfg.attention = "trt"
    result = compare(cfg, weights, size, 2, seed=3)
    assert result.passed and result.max_rel_err <= RTOL, result.table()


def test_both_attention_forms_build_with_a_dynamic_batch():
    cfg, weights = small_swin("swin_v2_t", 9, 8)
    cfg.input_size = cfg.resize = 96
    for form in ("matmul", "trt"):
        cfg.attention = form
        net = Net(weights, name=f"swin-{form}")
        swin.define(net, cfg)
        types = [net.network.get_layer(i).type.name for i in range(net.network.num_layers)]
        assert types.count("ATTENTION_OUTPUT") == (8 if form == "trt" else 0)
        assert len(build_serialized(net, BuildOptions(batch=BatchSpec.parse("1:2:4")))) > 100_000
