"""Classic classifiers, part 1 (resnet*, resnext, wide_resnet, mobilenet v2/v3, shufflenet v2, squeezenet,
vgg, alexnet, mnasnet): from ``gen_wts.py --model torchvision:<arch> --random-init`` through the shared CLI.

For each model: the real builder (TensorRT-RTX) builds batch 1 and the dynamic profile 1:4:8; ``check``
compares the network (reference executor) with torchvision -- the softmax output, the logits and every layer
named like a module -- within 1e-4 of each tensor's scale, and the top-5 classes agree; ``inspect`` lists the
layers; ``infer`` (reference backend) prints the top-5 of bus.jpg with ImageNet names. One random weights
file per model, written once (``gen_wts`` randomizes BatchNorm statistics, so activations stay O(1) through
the deep nets); the largest models go through ``.safetensors``, quicker to write and read than ``.wts`` text.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

import gen_wts
from trtx import cli, sources

RTOL = 1e-4
BUS = sources.sample_images() / "bus.jpg"

#: arch -> (netdef module, logits layer, fewest module-named layers check must compare)
MODELS = {
    "resnet18": ("resnet", "fc", 59),
    "resnet34": ("resnet", "fc", 99),
    "resnet50": ("resnet", "fc", 134),
    "resnet101": ("resnet", "fc", 253),
    "resnext50_32x4d": ("resnet", "fc", 134),
    "wide_resnet50_2": ("resnet", "fc", 134),
    "mobilenet_v2": ("mobilenet", "classifier.1", 202),
    "mobilenet_v3_small": ("mobilenet", "classifier.3", 189),
    "mobilenet_v3_large": ("mobilenet", "classifier.3", 231),
    "shufflenet_v2_x0_5": ("shufflenet", "fc", 191),
    "shufflenet_v2_x1_0": ("shufflenet", "fc", 191),
    "squeezenet1_0": ("squeezenet", "classifier.3", 66),
    "squeezenet1_1": ("squeezenet", "classifier.3", 66),
    "vgg11": ("vgg", "classifier.6", 28),
    "vgg16": ("vgg", "classifier.6", 38),
    "vgg16_bn": ("vgg", "classifier.6", 51),
    "alexnet": ("alexnet", "classifier.6", 20),
    "mnasnet1_0": ("mnasnet", "classifier.1", 172),
}
SLOW = {"resnet101", "resnext50_32x4d", "wide_resnet50_2", "vgg11", "vgg16", "vgg16_bn"}
#: big weights go through .safetensors (a 500 MB model is 1.2 GB of .wts text)
SAFETENSORS = {"wide_resnet50_2", "vgg11", "vgg16", "vgg16_bn", "alexnet"}
#: checked with a batch of 2 (the dynamic-batch paths: flatten, shufflenet's channel split)
CHECK_BATCH_2 = {"resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_1", "mnasnet1_0"}
ARCHS = [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in MODELS]


def _netdef(arch: str):
    return importlib.import_module(f"netdefs.{MODELS[arch][0]}")


@pytest.fixture(scope="module", params=ARCHS)
def model(request, tmp_path_factory):
    """(arch, netdef module, weights path) with the random weights gen_wts.py writes for torchvision:<arch>."""
    arch = request.param
    suffix = ".safetensors" if arch in SAFETENSORS else ".wts"
    path = tmp_path_factory.mktemp(arch) / f"{arch}{suffix}"
    assert gen_wts.main(["--model", f"torchvision:{arch}", "--random-init", "-o", str(path), "-q"]) == 0
    yield arch, _netdef(arch), path
    shutil.rmtree(path.parent)  # up to 1.2 GB a model: one at a time on disk


@pytest.mark.parametrize("batch", ["1", "1:4:8"])
def test_build(model, batch, tmp_path):
    arch, nd, weights = model
    engine = tmp_path / f"{arch}.engine"
    assert cli.main(nd.NETDEF, ["build", "--arch", arch, "-w", str(weights), "-o", str(engine), "--batch", batch]) == 0
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert engine.stat().st_size == meta["engine_bytes"] > 1_000_000
    assert meta["inputs"] == [{"name": "data", "shape": [-1, 3, 224, 224], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "prob", "shape": [-1, 1000], "dtype": "float32", "batched": True}]
    lo, opt, hi = (int(b) for b in (batch.split(":") if ":" in batch else [batch] * 3))
    assert meta["batch"] == {"min": lo, "opt": opt, "max": hi}
    assert meta["arch"] == arch and meta["num_classes"] == 1000 and meta["unused_weights"] == []
    cfg = nd.configure(argparse.Namespace(arch=arch), None, meta)  # what `infer -e` configures from
    assert (cfg.arch, cfg.num_classes, cfg.input_size) == (arch, 1000, 224)


def test_check_matches_torchvision(model, capsys):
    """Output, logits and every module-named layer within 1e-4 relative; top-5 identical; none skipped."""
    arch, nd, weights = model
    _, logits, fewest = MODELS[arch]
    batch = "2" if arch in CHECK_BATCH_2 else "1"
    code = cli.main(nd.NETDEF, ["check", "--arch", arch, "-w", str(weights), "--json", "--batch", batch])
    doc = json.loads(capsys.readouterr().out)
    rows = doc["outputs"] + doc["layers"]
    assert code == 0 and doc["passed"] and doc["first_divergent"] is None
    assert [r["name"] for r in rows if r["passed"] is not True] == []
    assert max(r["max_rel_err"] for r in rows) <= RTOL
    assert len(doc["layers"]) >= fewest
    logits_row = next(r for r in doc["layers"] if r["name"] == logits)
    assert logits_row["shape"][0] == int(batch) and logits_row["max_rel_err"] <= RTOL
    extras = {e["name"]: e for e in doc["extras"]}
    for b in range(int(batch)):
        assert extras[f"top5[{b}]"]["passed"], extras[f"top5[{b}]"]["message"]
        assert extras[f"logits[{b}] not constant"]["passed"], extras[f"logits[{b}] not constant"]["message"]
    with capsys.disabled():
        print(f"\n{arch}: {len(doc['layers'])} layers, max rel err {max(r['max_rel_err'] for r in rows):.2e}, "
              f"logits {logits_row['max_rel_err']:.2e}")  # fmt: skip


def test_inspect_lists_the_layers(model, capsys):
    arch, nd, weights = model
    assert cli.main(nd.NETDEF, ["inspect", "--arch", arch, "-w", str(weights), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = json.dumps(doc)
    assert MODELS[arch][1] in names and '"prob"' in names


def test_infer_prints_top5_with_imagenet_names(model, tmp_path, capsys):
    """``infer`` (reference backend): top-5 with ImageNet class names printed, JSON and annotated image written."""
    from netdefs import imagenet

    arch, nd, weights = model
    outdir = tmp_path / "infer"
    assert cli.main(nd.NETDEF, ["infer", "--arch", arch, "-w", str(weights), str(BUS), "-o", str(outdir)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("bus.jpg: "))
    top5 = json.loads((outdir / "bus.json").read_text())["top5"]
    assert len(top5) == 5 and [r["prob"] for r in top5] == sorted((r["prob"] for r in top5), reverse=True)
    for r in top5:
        assert r["name"] == imagenet.class_names()[r["class"]] and f"{r['name']} ({r['class']})" in line
    assert (outdir / "bus.jpg").stat().st_size > 10_000


@pytest.fixture(scope="module")
def squeezenet_wts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("squeezenet") / "squeezenet1_1.wts"
    assert gen_wts.main(["--model", "torchvision:squeezenet1_1", "--random-init", "-o", str(path), "-q"]) == 0
    return path


def test_check_on_an_image(squeezenet_wts, capsys):
    """``check --image``: the netdef's preprocessing of a real photo as the input (batch 2: the image twice)."""
    nd = _netdef("squeezenet1_1")
    argv = ["check", "--arch", "squeezenet1_1", "-w", str(squeezenet_wts), "--image", str(BUS), "--batch", "2"]
    assert cli.main(nd.NETDEF, [*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] and doc["outputs"][0]["shape"] == [2, 1000]
    assert [e["passed"] for e in doc["extras"]] == [True] * 4


def test_bench_reference_backend(squeezenet_wts, capsys):
    nd = _netdef("squeezenet1_1")
    argv = ["bench", "--arch", "squeezenet1_1", "-w", str(squeezenet_wts), "--image", str(BUS), "--batch", "1,2"]
    assert cli.main(nd.NETDEF, [*argv, "--iters", "1", "--warmup", "0"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["1", "2"] and all(float(r[-1]) > 0 for r in rows)
