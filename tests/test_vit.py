"""ViT (netdefs/vit.py): vit_b_16 full size through the shared CLI, once; properties on small ViTs.

vit_b_16 with random weights (``gen_wts.py --model netdef:vit:vit_b_16 --random-init``, which draws the head,
class token and attention biases torchvision leaves at zero): the real builder (TensorRT-RTX) builds the
dynamic profile 1:4:8 in fp32 (matmul attention) and fp16, and ``check`` compares every module-named layer and
the softmax with torchvision within 1e-4 (fp32) and the fp16 tolerance. The properties that need no full model
(attention forms, a broken attention scale found by check, several seeds and batches, a dynamic batch) run on
ViTs of 2 layers, 4 heads, width 64 at 32x32 (``vit.source_model`` overrides), in-process.
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
from netdefs import common, vit
from netdefs.sources import state_dict_for_wts
from trtx import check, cli, sources
from trtx.build import BatchSpec, BuildOptions, build_serialized
from trtx.net import Net

RTOL = 1e-4
FP16_RTOL = 1e-2  # check's fp16 tolerance (relative RMS error), docs/check-and-inspect.md
BUS = sources.sample_images() / "bus.jpg"
SMALL = {"layers": 2, "heads": 4, "hidden": 64, "mlp": 128, "patch": 8}


@pytest.fixture(scope="module")
def vit_b_16(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit_b_16") / "vit_b_16.safetensors"
    assert gen_wts.main(["--model", "netdef:vit:vit_b_16", "--random-init", "-o", str(path), "-q"]) == 0
    yield path
    shutil.rmtree(path.parent)


def _check_json(capsys, *argv) -> tuple[int, dict]:
    code = cli.main(vit.NETDEF, ["check", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


# ---- vit_b_16, full size, through the CLI ------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["matmul", "trt"])
def test_build_vit_b_16_dynamic_batch(vit_b_16, attention, tmp_path):
    engine = tmp_path / "vit.engine"
    argv = ["build", "-w", str(vit_b_16), "-o", str(engine), "--batch", "1:4:8", "--attention", attention]
    assert cli.main(vit.NETDEF, argv) == 0
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert engine.stat().st_size == meta["engine_bytes"] > 300_000_000  # 86M fp32 parameters
    assert [(t["name"], t["shape"], t["dtype"]) for t in meta["inputs"]] == [("data", [-1, 3, 224, 224], "float32")]
    assert [(t["name"], t["shape"], t["dtype"]) for t in meta["outputs"]] == [("prob", [-1, 1000], "float32")]
    assert meta["batch"] == {"min": 1, "opt": 4, "max": 8} and meta["unused_weights"] == []
    assert meta["attention"] == attention and meta["arch"] == "vit_b_16"
    cfg = vit.configure(SimpleNamespace(arch="vit_b_16"), None, meta)  # infer -e: from the metadata alone
    assert (cfg.input_size, cfg.resize, cfg.num_classes) == (224, 256, 1000)


def test_check_vit_b_16_matches_torchvision(vit_b_16, capsys):
    """Output and every module-named layer within 1e-4: 12 x (ln_1, self_attention, ln_2, mlp.0/1/3, mlp,
    block), the position embedding, encoder.ln, heads; nothing left uncompared."""
    code, doc = _check_json(capsys, "-w", str(vit_b_16))
    rows = doc["outputs"] + doc["layers"]
    assert code == 0 and doc["passed"] and doc["first_divergent"] is None
    assert [r["name"] for r in rows if r["passed"] is not True] == []
    assert max(r["max_rel_err"] for r in rows) <= RTOL
    names = {r["name"] for r in doc["layers"]}
    assert len(doc["layers"]) == 103
    assert {f"encoder.layers.encoder_layer_{i}.self_attention:0" for i in range(12)} <= names
    (head,) = [r for r in doc["layers"] if r["name"] == "heads.head"]
    assert 1e-2 < head["max_abs_err"] / head["max_rel_err"] < 1e3  # max |logit|: neither vanishing nor exploding
    assert [e["passed"] for e in doc["extras"]] == [True, True]  # top-5, logits not constant


def test_check_vit_b_16_attention_layer(vit_b_16, capsys):
    """--attention trt: TensorRT's attention layer in every block, the same 103 layers within 1e-4."""
    code, doc = _check_json(capsys, "-w", str(vit_b_16), "--attention", "trt")
    rows = doc["outputs"] + doc["layers"]
    assert code == 0 and doc["passed"] and len(doc["layers"]) == 103
    assert max(r["max_rel_err"] for r in rows) <= RTOL


def test_fp16_vit_b_16_builds_and_checks(vit_b_16, tmp_path, capsys):
    """fp16: matmuls and GELU in fp16, LayerNorm statistics and softmax in fp32 (the fp32 policy, no warning);
    every layer within check's fp16 tolerance (1e-2 relative RMS), top-1 the same."""
    engine = tmp_path / "vit16.engine"
    assert cli.main(vit.NETDEF, ["build", "-w", str(vit_b_16), "-o", str(engine), "--precision", "fp16"]) == 0
    assert "computes in fp16" not in capsys.readouterr().err
    assert json.loads(Path(f"{engine}.json").read_text())["precision"] == "fp16"
    code, doc = _check_json(capsys, "-w", str(vit_b_16), "--precision", "fp16")
    assert code == 0 and doc["passed"], doc["first_divergent"]
    worst = max(r["rms_rel_err"] for r in doc["outputs"] + doc["layers"])
    assert worst <= FP16_RTOL
    print(f"vit_b_16 fp16: worst relative RMS error {worst:.2e}")


def test_inspect_and_infer_vit_b_16(vit_b_16, tmp_path, capsys):
    assert cli.main(vit.NETDEF, ["inspect", "-w", str(vit_b_16)]) == 0
    table = capsys.readouterr().out.split()
    assert "encoder.layers.encoder_layer_11.self_attention.attention.softmax" in table and "SOFTMAX" in table
    out = tmp_path / "infer"
    assert cli.main(vit.NETDEF, ["infer", "-w", str(vit_b_16), "-o", str(out), str(BUS)]) == 0
    top5 = json.loads((out / "bus.json").read_text())["top5"]
    assert len(top5) == 5 and 0 < sum(t["prob"] for t in top5) <= 1 + 1e-5


def test_weights_of_another_vit_are_refused(vit_b_16, tmp_path, capsys):
    assert cli.main(vit.NETDEF, ["build", "--arch", "vit_l_16", "-w", str(vit_b_16), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: weights have patch 16, 12 layers, width 768") and "(check --arch)" in err
    assert not (tmp_path / "x").exists()


# ---- small ViTs, in-process ---------------------------------------------------------------------------------
def small_vit(seed: int, image_size: int = 32, **overrides):
    """(cfg, weights) of a random small ViT."""
    import torch

    torch.manual_seed(seed)
    model = vit.source_model("vit_b_16", image_size=image_size, **{**SMALL, **overrides})
    weights = wts.WeightMap(state_dict_for_wts(model))
    cfg = SimpleNamespace(arch="vit_b_16", num_classes=1000, heads=overrides.get("heads", SMALL["heads"]),
                          attention="matmul", resize=image_size, **vit.structure(weights))  # fmt: skip
    return cfg, weights


def compare(cfg, weights, batch: int, seed: int, precision: str = "fp32"):
    net = Net(weights, precision=precision, name="vit")
    vit.define(net, cfg)
    assert net.unused_weights() == []
    feeds = {"data": np.random.default_rng(seed).standard_normal((batch, 3, cfg.input_size, cfg.input_size))}
    result = check.compare(net, vit.torch_model(cfg, weights), feeds, forward=vit.NETDEF.torch.forward,
                           precision=precision)  # fmt: skip
    return net, result


@pytest.mark.parametrize(("seed", "batch"), [(1, 1), (2, 3)])
def test_small_vit_matches_torchvision(seed, batch):
    cfg, weights = small_vit(seed)
    _, result = compare(cfg, weights, batch, seed)
    assert result.passed and len(result.layers) == 23, result.table()  # 2 blocks x 8 + 7
    assert result.max_rel_err <= RTOL


def test_small_vit_with_representation_layer():
    """heads.pre_logits → Tanh → head, which torchvision builds for a representation_size."""
    cfg, weights = small_vit(3, representation=32)
    assert cfg.representation == 32
    _, result = compare(cfg, weights, 2, 3)
    assert result.passed and {"heads.pre_logits", "heads.act"} <= {r.name for r in result.layers}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_small_vit_attention_layer_matches_torchvision(precision):
    cfg, weights = small_vit(6)
    cfg.attention = "trt"
    net, result = compare(cfg, weights, 2, 6, precision)
    types = [net.network.get_layer(i).type.name for i in range(net.network.num_layers)]
    assert types.count("ATTENTION_OUTPUT") == cfg.layers and result.passed, result.table()


def test_broken_attention_scale_is_the_first_divergent_layer(monkeypatch):
    """The attention scale 1.05 x head_dim^-0.5: everything before the first self_attention matches, it does not."""
    cfg, weights = small_vit(4)
    sdpa = common.scaled_dot_product_attention

    def broken(net, q, k, v, name, *, scale=None, **kw):
        return sdpa(net, q, k, v, name, scale=scale * 1.05, **kw)

    monkeypatch.setattr(common, "scaled_dot_product_attention", broken)
    _, result = compare(cfg, weights, 2, 4)
    assert not result.passed
    assert result.first_divergent == "encoder.layers.encoder_layer_0.self_attention:0"
    rows = {r.name: r for r in result.layers}
    assert rows["encoder.layers.encoder_layer_0.ln_1"].passed


def test_small_vit_dynamic_batch_and_attention_layer_build():
    """Both attention forms build with a dynamic batch; the attention layer form has one ATTENTION layer per
    block and no softmax layer."""
    cfg, weights = small_vit(5)
    for form in ("matmul", "trt"):
        cfg.attention = form
        net = Net(weights, name=f"vit-{form}")
        vit.define(net, cfg)
        types = [net.network.get_layer(i).type.name for i in range(net.network.num_layers)]
        assert types.count("SOFTMAX") == (1 + cfg.layers if form == "matmul" else 1)  # + the prob head
        assert types.count("ATTENTION_OUTPUT") == (cfg.layers if form == "trt" else 0)
        assert len(build_serialized(net, BuildOptions(batch=BatchSpec.parse("1:2:4")))) > 100_000


# ---- the larger archs at a small input (slow) --------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("arch", "size"), [("vit_b_32", 64), ("vit_l_16", 64)])
def test_larger_vits_at_a_small_input(arch, size, tmp_path, capsys):
    """vit_b_32 (2x2 patches) and vit_l_16 (24 layers, 16 heads, width 1024; 4x4 patches) at 64x64: the input
    size comes from the weights' position embedding; build 1:2:4 and check within 1e-4."""
    import torch

    torch.manual_seed(0)
    path = tmp_path / f"{arch}.safetensors"
    wts.save(state_dict_for_wts(vit.source_model(arch, image_size=size)), path)
    engine = tmp_path / f"{arch}.engine"
    argv = ["--arch", arch, "-w", str(path)]
    assert cli.main(vit.NETDEF, ["build", *argv, "-o", str(engine), "--batch", "1:2:4"]) == 0
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert meta["inputs"][0]["shape"] == [-1, 3, size, size] and meta["unused_weights"] == []
    capsys.readouterr()
    code, doc = _check_json(capsys, *argv, "--batch", "2")
    assert code == 0 and doc["passed"] and doc["max_rel_err"] <= RTOL
    assert len(doc["layers"]) == 8 * vit.ARCHS[arch]["layers"] + 7
