"""The toy detector of docs/netdefs.md ("Writing a detector"), run from the docs themselves: the code block is
written to a file and imported, then built by the real builder, checked against its PyTorch model (every layer,
the detections after NMS) and run by infer; a broken head fails the check."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "netdefs.md"
MARKER = "<!-- the toy detector: tests/test_toy_detector.py executes the next code block -->"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The docs' code block as a module, and random weights for it (box sizes and class logits raised so that
    many cells are candidates and overlapping ones get suppressed)."""
    import torch

    import wts
    from netdefs import sources as model_sources
    from trtx import sources

    text = DOCS.read_text()
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.S).group(1)
    folder = tmp_path_factory.mktemp("toy")
    (folder / "toy_detector.py").write_text(block)
    spec = importlib.util.spec_from_file_location("toy_detector", folder / "toy_detector.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.ToyDetector()
    sources.randomize_norms(model, 0)
    with torch.no_grad():
        model.head.bias[2:] += 1.0  # boxes ~3 cells wide, and many over the score threshold: NMS has work
    state = model_sources.state_dict_for_wts(model)
    wts.save(state, folder / "toy.wts")
    broken = dict(state, **{"head.weight": state["head.weight"] * np.float32(1.1)})
    wts.save(broken, folder / "broken.wts")
    yield module, folder
    shutil.rmtree(folder)


def test_the_docs_toy_detector_builds_checks_and_infers(toy, capsys):
    from trtx import cli, sources

    module, folder = toy
    assert len(DOCS.read_text().split(MARKER)[1].split("```")[1].splitlines()) < 100  # a short example
    engine = folder / "toy.engine"
    assert cli.main(module.NETDEF, ["build", "-w", str(folder / "toy.wts"), "-o", str(engine), "--batch", "1:2:4"]) == 0
    assert engine.stat().st_size > 10_000
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert [o["name"] for o in meta["outputs"]] == ["boxes", "scores", "classes"] and meta["unused_weights"] == []
    capsys.readouterr()
    assert cli.main(module.NETDEF, ["check", "-w", str(folder / "toy.wts"), "--batch", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["passed"] and result["max_rel_err"] <= 1e-4
    assert {r["name"] for r in result["layers"] if r["passed"]} == {f"body.{i}" for i in range(9)} | {"head"}
    (name, passed, message) = (result["extras"][0][k] for k in ("name", "passed", "message"))
    assert name == "detections after NMS" and passed and "identical" in message, message
    detected = int(message.split()[0])
    candidates = 2 * 8 * 12  # batch 2, a 8 x 12 grid: NMS removed some
    assert 0 < detected < candidates
    bus = str(sources.sample_images() / "bus.jpg")
    out = folder / "infer"
    assert cli.main(module.NETDEF, ["infer", "-w", str(folder / "toy.wts"), bus, "-o", str(out)]) == 0
    assert "bus.jpg: " in capsys.readouterr().out and (out / "bus.jpg").stat().st_size > 10_000


def test_a_broken_toy_head_fails_the_check(toy):
    """The network reads a head 10 % off, PyTorch the good one: the outputs and the detections after NMS fail."""
    import wts
    from trtx import check
    from trtx.net import Net

    module, folder = toy
    net = Net(wts.load(folder / "broken.wts"))
    module.define(net, None)
    model = module.torch_model(None, wts.load(folder / "toy.wts"))
    feeds = {"images": np.random.default_rng(0).standard_normal((2, 3, *module.SIZE)).astype(np.float32)}
    result = check.compare(net, model, feeds, forward=module.NETDEF.torch.forward, layers=False)
    ((name, passed, message),) = module.check_extra(None, result.network_outputs, result.expected_outputs, "fp32")
    assert not result.passed and not passed and "differs from PyTorch's candidate" in message, message
