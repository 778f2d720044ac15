"""``python -m netdefs``: every model with the file that serves it, from the registry netdefs.FAMILIES; and
``python -m netdefs <model> <command> ...`` runs that file's CLI with ``--arch <model>``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gen_wts
from netdefs import __main__ as netdefs_main

REPO = Path(__file__).resolve().parents[1]

#: the classic classifiers of part 1 and the file serving each
PART1 = {
    **dict.fromkeys(("resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "wide_resnet50_2"), "resnet"),
    **dict.fromkeys(("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"), "mobilenet"),
    **dict.fromkeys(("shufflenet_v2_x0_5", "shufflenet_v2_x1_0"), "shufflenet"),
    **dict.fromkeys(("squeezenet1_0", "squeezenet1_1"), "squeezenet"),
    **dict.fromkeys(("vgg11", "vgg16", "vgg16_bn"), "vgg"),
    "alexnet": "alexnet",
    "mnasnet1_0": "mnasnet",
}


def _listed() -> dict[str, str]:
    """model -> file, from the real command line."""
    out = subprocess.run(
        [sys.executable, "-m", "netdefs", "list"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0].split() == ["model", "netdef"]
    return {line.split()[0]: line.split()[1] for line in out[1:]}


def test_list_names_every_model_with_its_file():
    listed = _listed()
    for model, module in PART1.items():
        assert listed[model] == f"netdefs/{module}.py"
    # every registered family is listed, model by model
    import netdefs

    for family in netdefs.FAMILIES:
        for model in netdefs.load(family).model_names():
            assert listed.get(model.name) == f"netdefs/{family}.py", model
    # model names that select other options than --arch
    assert listed["yolov5x6"] == listed["yolov5s-seg"] == listed["yolov5n-cls"] == "netdefs/yolov5.py"
    assert listed["retinaface_mnet"] == listed["retinaface_r50"] == "netdefs/retinaface.py"
    assert not {"netdefs/imagenet.py", "netdefs/common.py", "netdefs/__main__.py"} & set(listed.values())


def test_every_netdef_module_is_registered():
    """The registry is explicit (netdefs.FAMILIES): a module or package under netdefs/ that declares ``NETDEF``
    but is missing from it would be invisible to ``list`` and ``gen_wts.py --model netdef:``: this fails."""
    import netdefs

    declared = set()
    for path in (REPO / "netdefs").iterdir():
        source = path / "__init__.py" if path.is_dir() else path
        if path.name.startswith("_") or not source.is_file() or source.suffix != ".py":
            continue
        text = "\n".join(p.read_text() for p in ([source] + sorted(path.glob("*.py")) if path.is_dir() else [source]))
        if "\nNETDEF = " in text:
            declared.add(path.stem)
    assert declared == set(netdefs.FAMILIES)


def test_a_registered_family_is_listed(monkeypatch):
    """A family added to the registry shows up in ``list`` with its archs; its default is marked."""
    import netdefs
    from trtx.netdef import Netdef

    toy = Netdef("toy", "a toy", configure=None, define=None, archs=("toy_a", "toy_b"), default_arch="toy_b")
    monkeypatch.setattr(netdefs, "FAMILIES", ("toy",))
    monkeypatch.setattr(netdefs, "load", lambda family: toy)
    entries, errors = netdefs_main.discover()
    assert [(e.name, e.family, e.default, e.options) for e in entries] == [
        ("toy_a", "toy", False, ("--arch", "toy_a")),
        ("toy_b", "toy", True, ("--arch", "toy_b")),
    ]
    assert errors == {}


def test_resolve_model_family_and_errors(capsys):
    entries, _ = netdefs_main.discover()
    assert netdefs_main.resolve("wide_resnet50_2", entries) == ("resnet", ("--arch", "wide_resnet50_2"))
    assert netdefs_main.resolve("vgg", entries) == ("vgg", ())  # a family: its default arch
    assert netdefs_main.resolve("yolov5m-seg", entries) == ("yolov5", ("--variant", "m", "--task", "seg"))
    twice = entries + [netdefs_main.Entry("resnet18", "other", Path("other.py"), False, ("--arch", "resnet18"))]
    for argv, message in (
        (["resnet9", "build"], "error: no netdef serves 'resnet9'"),
        (["resnet50", "build", "--arch", "resnet18", "-w", "x.wts"], "error: 'resnet50' already selects --arch"),
        (["yolov5s", "build", "--task=cls", "-w", "x.wts"], "error: 'yolov5s' already selects --task detect"),
    ):
        with pytest.raises(SystemExit) as exc:
            netdefs_main.main(argv)
        assert exc.value.code == 2 and capsys.readouterr().err.startswith(message)
    with pytest.raises(SystemExit):
        netdefs_main.resolve("resnet18", twice)
    assert "defined by several netdefs (netdefs/resnet.py, netdefs/other.py)" in capsys.readouterr().err


def test_dispatch_fills_in_the_arch(tmp_path):
    """``python -m netdefs squeezenet1_0 build`` builds squeezenet1_0, not the file's default (1_1)."""
    weights = tmp_path / "squeezenet1_0.wts"
    assert gen_wts.main(["--model", "torchvision:squeezenet1_0", "--random-init", "-o", str(weights), "-q"]) == 0
    engine = tmp_path / "sq.engine"
    run = subprocess.run(
        [sys.executable, "-m", "netdefs", "squeezenet1_0", "build", "-w", str(weights), "-o", str(engine)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert meta["arch"] == "squeezenet1_0" and meta["netdef"] == "squeezenet"
    # the wrong weights for the arch: a clear one-line error, exit status 2
    run = subprocess.run(
        [sys.executable, "-m", "netdefs", "alexnet", "build", "-w", str(weights), "-o", str(engine)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "classifier.6.bias" in run.stderr and "Traceback" not in run.stderr
    # weights of the family's other arch: the structure read from the weights names --arch
    run = subprocess.run(
        [sys.executable, "-m", "netdefs", "squeezenet1_1", "build", "-w", str(weights), "-o", str(engine)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and run.stderr.startswith("error: weights have a 7x7 stem conv; squeezenet1_1 has")
    assert "(check --arch)" in run.stderr


def test_help():
    run = subprocess.run([sys.executable, "-m", "netdefs", "--help"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0 and "python -m netdefs" in run.stdout
    run = subprocess.run(
        [sys.executable, "-m", "netdefs", "resnet50", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 0 and "build" in run.stdout and "check" in run.stdout


def test_dispatch_fills_in_yolov5_variant_and_task(tmp_path):
    """``python -m netdefs yolov5n-cls inspect`` runs netdefs/yolov5.py with --variant n --task cls, which the
    weights must agree with."""
    weights = tmp_path / "yolov5n-cls.wts"
    assert gen_wts.main(["-m", "yolov5:yolov5n-cls", "--random-init", "-o", str(weights), "-q"]) == 0

    def run(model: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "netdefs", model, "inspect", "-w", str(weights), "--json"]
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True)

    ok = run("yolov5n-cls")
    assert ok.returncode == 0, ok.stderr
    assert "prob" in [o["name"] for o in json.loads(ok.stdout)["outputs"]]
    wrong = run("yolov5n")  # a detection model name for classifier weights: the weights' task is named
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr and "cls" in wrong.stderr
