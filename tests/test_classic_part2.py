"""Classic classifiers, part 2 (googlenet, inception_v3, densenet121, efficientnet_b0, regnet_y_400mf,
convnext_tiny): from ``gen_wts.py --model torchvision:<arch> --random-init`` through the shared CLI.

For each model: the real builder (TensorRT-RTX) builds batch 1 and the dynamic profile 1:4:8, and ``check``
compares the network (reference executor) with torchvision, the softmax output and every layer named like a
module, within 1e-4 of each tensor's scale; ``inspect`` and ``infer`` (reference backend, top-5 with ImageNet
names) run too. One random .wts per model, written once per module; ``gen_wts`` randomizes the BatchNorm
and LayerNorm statistics, which keeps activations O(0.01-100) everywhere but in inception_v3 (see RESCALE).
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import gen_wts
import wts
from netdefs import sources as model_sources
from netdefs.imagenet import MEAN, STD
from trtx import cli, sources
from trtx.net import NetdefError

REPO = Path(__file__).resolve().parents[1]
RTOL = 1e-4

#: arch -> (netdef module, logits layer, fewest module-named layers check must compare)
MODELS = {
    "googlenet": ("googlenet", "fc", 190),
    "inception_v3": ("inception", "fc", 290),
    "densenet121": ("densenet", "classifier", 430),
    "efficientnet_b0": ("efficientnet", "classifier.1", 290),
    "regnet_y_400mf": ("regnet", "fc", 320),
    "convnext_tiny": ("convnext", "classifier.2", 200),
}
SLOW = {"inception_v3", "densenet121", "convnext_tiny"}
ARCHS = [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in MODELS]


def _netdef(arch: str):
    return importlib.import_module(f"netdefs.{MODELS[arch][0]}")


@pytest.fixture(scope="module", params=ARCHS)
def model(request, tmp_path_factory):
    """(arch, netdef module, .wts path) with the random weights gen_wts.py writes for torchvision:<arch>."""
    arch = request.param
    path = tmp_path_factory.mktemp(arch) / f"{arch}.wts"
    assert gen_wts.main(["--model", f"torchvision:{arch}", "--random-init", "-o", str(path), "-q"]) == 0
    if arch in RESCALE:
        rescale_to_fan_in(path, arch)
    yield arch, _netdef(arch), path
    shutil.rmtree(path.parent)  # one model's weights at a time on disk


#: models whose random init makes activations explode even with gen_wts' random BatchNorm statistics:
#: inception_v3 draws every conv weight with std 0.1 whatever its fan-in (x ~6 per conv), so its logits
#: reach ~1e13 and the softmax is one-hot (comparing ``prob`` and the top-5 would be vacuous). Re-estimating
#: the BatchNorm statistics from data instead keeps activations O(1) but makes this random network chaotic:
#: PyTorch fp32 itself then differs from fp64 by 1.7e-4 of the scale at Mixed_7c, over the 1e-4 tolerance.
RESCALE = {"inception_v3"}


def rescale_to_fan_in(path: Path, arch: str) -> None:
    """Scale each conv weight of the file at ``path`` to He's std sqrt(2 / fan_in), each linear weight to
    sqrt(1 / fan_in): gen_wts' random draws and BatchNorm statistics stay, activations stay O(10-100), and the
    network stays well-conditioned (fp32 vs fp64: 2e-6 of the scale at every block)."""
    import math

    import torch
    import torchvision

    model = torchvision.models.get_model(arch, weights=None, init_weights=False)
    sources.load_state(model, wts.load(path))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                gain = 2.0 if isinstance(m, torch.nn.Conv2d) else 1.0
                m.weight.mul_(math.sqrt(gain / m.weight[0].numel()) / float(m.weight.std()))
    wts.save(model_sources.state_dict_for_wts(model), path)


@pytest.mark.parametrize("batch", ["1", "1:4:8"])
def test_build(model, batch, tmp_path):
    arch, nd, weights = model
    engine = tmp_path / f"{arch}.engine"
    assert cli.main(nd.NETDEF, ["build", "--arch", arch, "-w", str(weights), "-o", str(engine), "--batch", batch]) == 0
    meta = json.loads(Path(f"{engine}.json").read_text())
    size = 299 if arch == "inception_v3" else 224
    assert engine.stat().st_size == meta["engine_bytes"] > 1_000_000
    assert meta["inputs"] == [{"name": "data", "shape": [-1, 3, size, size], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "prob", "shape": [-1, 1000], "dtype": "float32", "batched": True}]
    lo, opt, hi = (int(b) for b in (batch.split(":") if ":" in batch else [batch] * 3))
    assert meta["batch"] == {"min": lo, "opt": opt, "max": hi}
    assert meta["arch"] == arch and meta["num_classes"] == 1000
    # infer/bench with the engine configure from its metadata alone: the same input size and preprocessing
    cfg = nd.configure(type("Args", (), {"arch": arch, "transform_input": "auto"})(), None, meta)
    assert (cfg.input_size, cfg.num_classes) == (size, 1000)
    assert meta["preprocess"] == {"resize": cfg.resize, "crop": size, "mean": list(MEAN), "std": list(STD)}


def test_check_matches_torchvision(model, capsys):
    """Output and every module-named layer within 1e-4 relative; the logits layer among them; none skipped."""
    arch, nd, weights = model
    _, logits, fewest = MODELS[arch]
    code = cli.main(nd.NETDEF, ["check", "--arch", arch, "-w", str(weights), "--json"])
    doc = json.loads(capsys.readouterr().out)
    rows = doc["outputs"] + doc["layers"]
    assert code == 0 and doc["passed"] and doc["first_divergent"] is None
    assert [r["name"] for r in rows if r["passed"] is not True] == []
    assert max(r["max_rel_err"] for r in rows) <= RTOL
    assert len(doc["layers"]) >= fewest
    (row,) = [r for r in doc["layers"] if r["name"] == logits]
    # relative errors mean something only where the activations neither explode nor vanish
    assert row["max_abs_err"] > 0 and 1e-2 < row["max_abs_err"] / row["max_rel_err"] < 1e4, "max |logit|"
    print(f"{arch}: {len(doc['layers'])} layers, max rel err {max(r['max_rel_err'] for r in rows):.2e}")


def test_inspect_and_infer(model, tmp_path, capsys):
    """``inspect`` lists the layers; ``infer`` (reference executor) prints a top-5 of ImageNet class names."""
    arch, nd, weights = model
    assert cli.main(nd.NETDEF, ["inspect", "--arch", arch, "-w", str(weights)]) == 0
    table = capsys.readouterr().out
    assert MODELS[arch][1] in table.split() and "prob" in table.split()
    image = sources.sample_images() / "bus.jpg"
    out = tmp_path / "infer"
    assert cli.main(nd.NETDEF, ["infer", "--arch", arch, "-w", str(weights), "-o", str(out), str(image)]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("bus.jpg: ")]
    assert len(printed) == 1 and printed[0].count(",") == 4
    top5 = json.loads((out / "bus.json").read_text())["top5"]
    names = nd.imagenet.class_names()
    assert len(top5) == 5 and all(names[t["class"]] == t["name"] for t in top5)
    assert 0 < sum(t["prob"] for t in top5) <= 1.0 + 1e-5


# ---- googlenet / inception_v3: aux classifiers and transform_input ----------------------------------------
@pytest.mark.parametrize("model", ["googlenet"], indirect=True)
def test_googlenet_reports_aux_weights_as_unused_by_design(model, tmp_path, capsys):
    arch, nd, weights = model
    engine = tmp_path / "googlenet.engine"
    assert cli.main(nd.NETDEF, ["build", "-w", str(weights), "-o", str(engine)]) == 0
    err = capsys.readouterr().err
    unused = json.loads(Path(f"{engine}.json").read_text())["unused_weights"]
    aux = [k for k in wts.load(weights) if k.startswith(("aux1.", "aux2."))]
    assert sorted(unused) == sorted(aux) and len(aux) == 20  # conv, bn (5), fc1, fc2 of aux1 and aux2
    assert f"note: {len(aux)} weight(s) not read by design (auxiliary classifier" in err and "warning" not in err


@pytest.mark.parametrize("model", ["googlenet"], indirect=True)
def test_googlenet_check_with_transform_input(model, capsys):
    """--transform-input on: the network re-scales the input as torchvision's GoogLeNet(transform_input=True)."""
    arch, nd, weights = model
    assert cli.main(nd.NETDEF, ["check", "-w", str(weights), "--transform-input", "on", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] and doc["max_rel_err"] <= RTOL
    rows = {r["name"]: r for r in doc["layers"]}
    assert rows["conv1.conv"]["index"] == 1  # layer 0: transform_input


@pytest.mark.parametrize(
    ("arch", "drop_aux", "choice", "expected"),
    [
        ("googlenet", False, "auto", False),  # googlenet(): aux heads, transform_input=False
        ("googlenet", True, "auto", True),  # googlenet(weights=...): aux heads dropped, transform_input=True
        ("googlenet", False, "on", True),  # the raw torchvision checkpoint: aux heads kept, transform_input=True
        ("inception_v3", False, "off", False),
        ("inception_v3", True, "on", True),
    ],
)
def test_transform_input_follows_torchvision(arch, drop_aux, choice, expected):
    nd = _netdef(arch)
    fc = {"fc.weight": np.zeros(1000 * 10, np.float32), "fc.bias": np.zeros(1000, np.float32)}
    aux = {} if drop_aux else {("aux1.conv.conv.weight" if arch == "googlenet" else "AuxLogits.fc.bias"): np.zeros(1)}
    args = type("Args", (), {"arch": arch, "transform_input": choice})()
    cfg = nd.configure(args, wts.WeightMap({**fc, **aux}))
    assert cfg.transform_input is expected and cfg.aux_logits is not drop_aux


# ---- weights of another arch: a one-line error, before anything is built -----------------------------------
@pytest.mark.parametrize(
    ("model", "wrong"),
    [
        pytest.param("densenet121", "densenet169", marks=pytest.mark.slow),
        ("efficientnet_b0", "efficientnet_b1"),
        ("regnet_y_400mf", "regnet_x_400mf"),
        ("regnet_y_400mf", "regnet_y_800mf"),
        pytest.param("convnext_tiny", "convnext_small", marks=pytest.mark.slow),
    ],
    indirect=["model"],
)
def test_weights_of_another_arch_are_refused(model, wrong, tmp_path, capsys):
    arch, nd, weights = model
    assert cli.main(nd.NETDEF, ["build", "--arch", wrong, "-w", str(weights), "-o", str(tmp_path / "x.engine")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: weights have ") and f"{wrong} has" in err and "(check --arch)" in err
    assert not (tmp_path / "x.engine").exists()


def _state_sizes(arch: str) -> wts.WeightMap:
    """Zero weights with the keys and sizes of torchvision's ``arch`` (built on the meta device where it can be)."""
    import torch
    import torchvision

    meta = not arch.startswith("regnet")  # RegNet computes its widths with tensor ops: built on the CPU
    with torch.device("meta" if meta else "cpu"):
        state = torchvision.models.get_model(arch).state_dict()
    return wts.WeightMap({k: np.broadcast_to(np.float32(0), (v.numel(),)) for k, v in state.items()})


@pytest.mark.parametrize("family", ["densenet", "efficientnet", "regnet", "convnext"])
def test_every_arch_accepts_its_own_weights_only(family):
    """The ARCHS whose structure the weights carry: configure() accepts torchvision's weights of that arch and
    refuses those of every other arch of the family (for RegNet, the sizes up to 3.2 GF: cheap to build)."""
    nd = importlib.import_module(f"netdefs.{family}")
    archs = [a for a in nd.ARCHS if not a.endswith(("_8gf", "_16gf", "_32gf"))]
    for arch in archs:
        weights = _state_sizes(arch)
        for other in nd.ARCHS:
            args = type("Args", (), {"arch": other})()
            if other == arch:
                assert nd.configure(args, weights).arch == arch
            else:
                with pytest.raises(NetdefError, match=r"\(check --arch\)"):
                    nd.configure(args, weights)
