"""Every command line, driven by generated argument lists and hostile files (issue #17).

Hypothesis builds argument lists for ``gen_wts.py``, every netdef's commands through ``python -m netdefs`` (each
family's own options and extra commands included, read from its argparse parser), ``python -m plugins`` and
``python -m trtx``: valid files and hostile ones (a directory, an empty file, random bytes, a truncated .wts, NaN
weights, a pickled module, a key with a space, garbage JSON, /dev/zero, a damaged engine), numbers that make no sense,
unknown devices, junk tokens. Each call runs in-process (``main(argv)``, tests/clirun.py) in a fresh working folder
and must:

* exit 0, 1 (check failed) or 2 (usage or input error), never with an exception escaping ``main``;
* on exit 2 print exactly one error line, the last line of stderr; never a traceback;
* create or change no file outside the outputs its arguments name (``-o``, ``--outdir``, ``--graph``,
  ``--calib-cache``, ``--repo``, and the defaults: ``<arch>.engine``, ``out/infer``, gen_wts' CKPT.wts), and never
  touch an input: every file of the sandbox is fingerprinted (size, mtime, inode) before and after.

The examples are cheap by design: LeNet-sized weights, small counts, models that fail fast on the wrong weights.
``TRTX_PROPERTY_EXAMPLES`` sets the count (default 2,000: about two minutes on two cores); ``TRTX_PROPERTY_LOG=FILE``
appends every call with its exit status and last stderr line (what the examples exercised); pytest's
``--hypothesis-show-statistics`` counts them by command and exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from clirun import Result, call
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import netdefs
import wts
from netdefs import sources as model_sources
from trtx import cli, sources

EXAMPLES = int(os.environ.get("TRTX_PROPERTY_EXAMPLES", "2000"))
SANDBOX: Path | None = None


# ---- the sandbox: valid and hostile files ----------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def sandbox(tmp_path_factory):
    """``inputs/``: every file a generated argument may name; ``runs/``: one working folder per example."""
    global SANDBOX
    root = tmp_path_factory.mktemp("property")
    inputs = root / "inputs"
    inputs.mkdir()
    lenet = model_sources.build_model("netdef:lenet", seed=0)
    state = model_sources.state_dict_for_wts(lenet, "netdef:lenet")
    wts.save(state, inputs / "lenet.wts")
    shutil.copy(inputs / "lenet.wts", inputs / "weird name -ü.wts")
    (inputs / "link.wts").symlink_to(inputs / "lenet.wts")
    nan = dict(state, **{"conv1.weight": np.full_like(state["conv1.weight"], np.nan)})
    wts.save(nan, inputs / "nan.wts")
    text = (inputs / "lenet.wts").read_bytes()
    (inputs / "truncated.wts").write_bytes(text[: len(text) // 2])
    (inputs / "empty.wts").write_bytes(b"")
    (inputs / "random.bin").write_bytes(np.random.default_rng(0).bytes(2048))
    (inputs / "garbage.json").write_text('{"inputs": [')
    (inputs / "dir").mkdir()
    torch.save(lenet.state_dict(), inputs / "lenet.pt")
    torch.save({"conv weight": torch.ones(3)}, inputs / "space.pt")
    torch.save(torch.nn.Linear(2, 2), inputs / "module.pt")
    calib = inputs / "calib"
    calib.mkdir()
    for name in ("bus.jpg", "zidane.jpg"):
        shutil.copy(sources.sample_images() / name, calib / name)
    shutil.copy(sources.sample_images() / "bus.jpg", inputs / "bus.jpg")
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    assert call("lenet", ["build", "-w", inputs / "lenet.wts", "-o", inputs / "lenet.engine"]).rc == 0
    shutil.copy(inputs / "lenet.engine", inputs / "bad.engine")
    (inputs / "bad.engine.json").write_text("{}")
    cache = {"version": 1, "weights_sha256": "0" * 64, "method": "entropy", "images": 1, "amax": {"data": "big"}}
    (inputs / "cache.json").write_text(json.dumps(cache))
    shutil.copy(inputs / "lenet.wts", inputs / "w.json")  # weights whose name is another engine's metadata
    squeeze = model_sources.build_model("torchvision:squeezenet1_1", seed=0)
    wts.save(model_sources.state_dict_for_wts(squeeze, "torchvision:squeezenet1_1"), inputs / "squeezenet.wts")
    (root / "runs").mkdir()
    (root / "kernels").mkdir()
    shutil.copytree(inputs, root / "pristine", symlinks=True)
    SANDBOX = root
    previous = os.environ.get("TRTX_KERNEL_CACHE")
    os.environ["TRTX_KERNEL_CACHE"] = str(root / "kernels")
    yield root
    if previous is None:
        os.environ.pop("TRTX_KERNEL_CACHE", None)
    else:
        os.environ["TRTX_KERNEL_CACHE"] = previous
    SANDBOX = None
    shutil.rmtree(root, ignore_errors=True)


INPUT_FILES = ["lenet.wts", "weird name -ü.wts", "link.wts", "nan.wts", "truncated.wts", "empty.wts", "random.bin",
               "garbage.json", "dir", "lenet.pt", "space.pt", "module.pt", "calib", "bus.jpg", "broken.jpg",
               "lenet.engine", "lenet.engine.json", "bad.engine", "cache.json", "missing.wts", "w.json",
               "squeezenet.wts"]  # fmt: skip
SYSTEM_FILES = ["/dev/zero", "/dev/null", "/", "."]


# ---- values ----------------------------------------------------------------------------------------------
def inputs(*favourites: str) -> st.SearchStrategy[str]:
    """An input path: often one of ``favourites`` (what the option expects), else any sandbox or system file."""
    named = st.sampled_from([f"{{in}}/{f}" for f in INPUT_FILES] + SYSTEM_FILES)
    if not favourites:
        return named
    return st.one_of(st.sampled_from([f"{{in}}/{f}" for f in favourites]), named)


OUTPUTS = st.one_of(
    st.sampled_from(["out.engine", "o/x.wts", "x.safetensors", "res", ".", "sub/dir/", "x.svg", "x.dot", "x.png"]),
    inputs(),  # an input as an output: must be refused
)
COUNTS = st.sampled_from(["-3", "-1", "0", "1", "2", "x", "1.5", "", "1,2", "2:1"])
FLOATS = st.sampled_from(["-1", "0", "1e-4", "0.5", "nan", "inf", "x"])
DEVICES = st.sampled_from(["cpu", "cuda", "cuda:3", "tpu", "", "CPU", "meta"])
JUNK = st.one_of(st.text(max_size=6), st.sampled_from(["--", "-", "--help", "-x", "--bogus", "\x00"]))

#: option dest -> its values (anything else: by type or choices, below)
BY_DEST = {
    "weights": inputs("lenet.wts", "lenet.wts", "nan.wts", "truncated.wts", "weird name -ü.wts"),
    "engine": inputs("lenet.engine", "bad.engine"),
    "image": inputs("bus.jpg", "broken.jpg"),
    "sources": inputs("bus.jpg", "calib", "broken.jpg"),
    "calib": inputs("calib"),
    "calib_cache": st.one_of(OUTPUTS, inputs("cache.json", "garbage.json")),
    "onnx": inputs(),
    "names": inputs(),
    "output": OUTPUTS,
    "outdir": OUTPUTS,
    "out": OUTPUTS,
    "graph": OUTPUTS,
    "repo": OUTPUTS,
    "device": DEVICES,
    "calib_device": DEVICES,
    "nms_device": st.sampled_from(["auto", "cpu", "cuda", "x"]),
    "batch": st.one_of(COUNTS, st.sampled_from(["1:2:4", "4:2:1", "1:x:2", "2,1", "0:1:2"])),
    "imgsz": st.sampled_from(["32", "64", "0", "-32", "31", "x"]),
    "gpu_arch": st.sampled_from(["sm_86", "current", "sm_1", "x", "86,89", ""]),
    "arch": st.sampled_from(["sm_86", "compute_80", "sm_1", "x", "", "lenet5", "resnet18"]),
    "module": st.sampled_from(["plugins", "plugins.nope", "nonexistent_module_x", "os.path"]),
    "model": st.sampled_from(
        [
            "netdef:lenet",
            "netdef:lenet:lenet5",
            "netdef:lenet:bad",
            "yolov5s",
            "foo:bar",
            "torchvision:nope",
            "netdef:nope",
            "netdef",
            ":",
        ]
    ),  # fmt: skip
}


def option_values(action: argparse.Action) -> st.SearchStrategy:
    """Values for one option: by its dest, its choices, its type; sometimes junk."""
    if action.dest in BY_DEST:
        base = BY_DEST[action.dest]
    elif action.choices is not None:
        base = st.sampled_from([str(c) for c in action.choices] + ["bogus"])
    elif action.type is float or getattr(action.type, "__name__", "").endswith("float"):
        base = FLOATS
    else:
        base = COUNTS
    return st.one_of(base, base, base, JUNK)


@st.composite
def parser_argv(draw, parser: argparse.ArgumentParser, positionals: bool = True, most: int = 6) -> list[str]:
    """An argument list for ``parser``: a random subset of its options with generated values, its positionals."""
    optional = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    chosen = draw(st.lists(st.sampled_from(optional), max_size=most, unique_by=lambda a: a.dest)) if optional else []
    argv: list[str] = []
    for action in chosen:
        flag = draw(st.sampled_from(action.option_strings))
        if action.nargs == 0:
            argv.append(flag)
            continue
        count = action.nargs if isinstance(action.nargs, int) else 1
        argv += [flag, *(draw(option_values(action)) for _ in range(count))]
    for action in (a for a in parser._actions if not a.option_strings and positionals):
        if isinstance(action, argparse._SubParsersAction):
            continue
        count = draw(st.integers(1, 2)) if action.nargs in ("+", "*") else 1
        argv += [draw(option_values(action)) for _ in range(count)]
    if draw(st.integers(0, 9)) == 9:  # (hypothesis draws small numbers most: 9 is the rare case)
        argv.insert(draw(st.integers(0, len(argv))), draw(JUNK))
    return argv


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


# ---- argument lists per entry point ----------------------------------------------------------------------
FAMILY_PARSERS = {family: cli._parser(netdefs.load(family)) for family in netdefs.FAMILIES}
#: families whose commands run with LeNet weights: the rest get weights that do not fit and must say so fast
CHEAP = ("lenet",)
#: command -> argument lists that work, to which a few generated options are added
VALID = {
    "build": [["-w", "{in}/lenet.wts", "-o", "out.engine"], ["-w", "{in}/lenet.wts"]],
    "check": [["-w", "{in}/lenet.wts"], ["-w", "{in}/lenet.wts", "--no-layers"]],
    "inspect": [["-w", "{in}/lenet.wts"], ["-w", "{in}/lenet.wts", "--graph", "g.dot"]],
    "infer": [["-w", "{in}/lenet.wts", "{in}/bus.jpg", "-o", "res"], ["-w", "{in}/lenet.wts", "{in}/calib"]],
    "bench": [["-w", "{in}/lenet.wts", "--iters", "1", "--warmup", "0"]],
}


#: calls whose output is one of their inputs, by any name: each must be refused (exit 2, nothing written)
COLLISIONS = [
    ("lenet", ["build", "-w", "{in}/lenet.wts", "-o", "{in}/lenet.wts"]),
    ("lenet", ["build", "-w", "{in}/lenet.wts", "-o", "{in}/link.wts"]),
    ("lenet", ["build", "-w", "{in}/w.json", "-o", "{in}/w"]),
    ("lenet", ["build", "-w", "{in}/lenet.wts", "-o", "{in}/../inputs/lenet.wts"]),
    ("lenet", ["inspect", "-w", "{in}/lenet.wts", "--graph", "{in}/lenet.wts"]),
    (
        "lenet",
        [
            "build",
            "-w",
            "{in}/lenet.wts",
            "--precision",
            "int8",
            "--calib",
            "{in}/calib",
            "--calib-cache",
            "{in}/lenet.wts",
            "-o",
            "x.engine",
        ],
    ),  # fmt: skip
    ("squeezenet", ["infer", "--arch", "squeezenet1_1", "-w", "{in}/squeezenet.wts", "{in}/bus.jpg", "-o", "{in}"]),
    (
        "squeezenet",
        ["infer", "--arch", "squeezenet1_1", "-w", "{in}/squeezenet.wts", "{in}/calib", "-o", "{in}/calib/"],
    ),  # fmt: skip
    (
        "squeezenet",
        [
            "infer",
            "--arch",
            "squeezenet1_1",
            "-w",
            "{in}/squeezenet.wts",
            "{in}/calib/bus.jpg",
            "{in}/bus.jpg",
            "-o",
            "res",
        ],
    ),  # fmt: skip
    ("gen_wts", ["-w", "{in}/lenet.pt", "-o", "{in}/lenet.pt"]),
    ("gen_wts", ["-w", "{in}/lenet.pt", "-o", "{in}/../inputs/lenet.pt"]),
]


@st.composite
def netdef_call(draw) -> tuple[str, list[str]]:
    """`python -m netdefs MODEL COMMAND ...` (or a netdef's own script): the family's commands and options. Half
    the calls are LeNet's, half of those start from a call that works."""
    family = "lenet" if draw(st.booleans()) else draw(st.sampled_from(netdefs.FAMILIES))
    commands = _subparsers(FAMILY_PARSERS[family])
    command = draw(st.sampled_from(sorted(commands)))
    if family in CHEAP and command in VALID and draw(st.booleans()):  # a valid call, a few options more
        argv = [command, *draw(st.sampled_from(VALID[command])), *draw(parser_argv(commands[command], False, 2))]
    else:
        argv = [command, *draw(parser_argv(commands[command]))]
    if draw(st.booleans()):
        return family, argv
    models = [m.name for m in netdefs.load(family).model_names()]
    model = draw(st.sampled_from([*models, family, "nope", "list"]))
    return "netdefs", [model, *argv]


@st.composite
def gen_wts_call(draw) -> tuple[str, list[str]]:
    options = [
        ("-w", inputs("lenet.pt", "space.pt", "module.pt", "lenet.wts", "random.bin")),
        ("-o", OUTPUTS),
        ("-m", BY_DEST["model"]),
        ("--random-init", None),
        ("--seed", COUNTS),
        ("-t", st.sampled_from(["detect", "cls", "seg", "x"])),
        ("--unsafe-pickle", None),
        ("-q", None),
    ]
    chosen = draw(st.lists(st.sampled_from(options), max_size=6, unique_by=lambda o: o[0]))
    argv: list[str] = []
    if draw(st.booleans()):  # a call that works, and perhaps one option more
        works = [
            ["-w", "{in}/lenet.pt", "-o", "w.wts"],
            ["-m", "netdef:lenet", "--random-init"],
            ["-m", "netdef:lenet:lenet5", "--random-init", "-o", "sub/w.safetensors"],
        ]
        argv = draw(st.sampled_from(works))
        chosen = chosen[:1]
    for flag, values in chosen:
        argv += [flag] if values is None else [flag, draw(st.one_of(values, values, JUNK))]
    return "gen_wts", argv


@st.composite
def plugins_call(draw) -> tuple[str, list[str]]:
    command = draw(st.sampled_from(["list", "compile", "nope", "--help"]))
    argv = [command]
    if command == "compile":
        if draw(st.booleans()):
            argv += ["--arch", draw(BY_DEST["arch"])]
        if draw(st.integers(0, 3)) == 0:
            argv += ["--jobs", draw(COUNTS)]
        if draw(st.integers(0, 7)) == 0:
            argv += ["--verbose"]
    if draw(st.integers(0, 3)) == 0:
        argv = ["--module", draw(BY_DEST["module"]), *argv]
    return "plugins", argv


@st.composite
def trtx_call(draw) -> tuple[str, list[str]]:
    kind = draw(st.sampled_from(["doctor", "triton", "deepstream", "nope"]))
    if kind == "triton":
        argv = ["export", "triton", *(draw(BY_DEST["engine"]) for _ in range(draw(st.integers(1, 2))))]
        argv += ["--repo", draw(OUTPUTS)] if draw(st.integers(0, 4)) else []
        argv += ["--instances", draw(COUNTS)] if draw(st.booleans()) else []
        argv += ["--max-queue-delay-us", draw(COUNTS)] if draw(st.integers(0, 3)) == 0 else []
        argv += ["--name", draw(st.sampled_from(["m", "", "../up", "a/b"]))] if draw(st.integers(0, 3)) == 0 else []
    elif kind == "deepstream":
        argv = ["export", "deepstream", draw(BY_DEST["engine"])]
        argv += ["-o", draw(OUTPUTS)] if draw(st.integers(0, 4)) else []
        argv += ["--parse-func", "f"] if draw(st.integers(0, 3)) == 0 else []
        argv += ["--custom-lib", draw(inputs())] if draw(st.integers(0, 3)) == 0 else []
    else:
        argv = [kind]
    return "trtx", argv


CALLS = st.one_of(
    netdef_call(), netdef_call(), netdef_call(), gen_wts_call(), plugins_call(), trtx_call(),
    st.sampled_from(COLLISIONS),
)  # fmt: skip


# ---- what each call may write ------------------------------------------------------------------------------
def declared(entry: str, argv: list[str], cwd: Path) -> tuple[list[Path], list[Path]]:
    """(the files ``argv`` names as inputs, the files and folders it names as outputs, with the commands'
    defaults); nothing when it does not parse."""
    quiet = contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO())
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with quiet[0], quiet[1]:
            inputs, outputs = _io(entry, argv)
            return [cwd / p for p in inputs], [cwd / p for p in outputs]
    except SystemExit:
        return [], []
    finally:
        os.chdir(previous)


def _io(entry: str, argv: list[str]) -> tuple[list[str], list[str]]:
    if entry == "gen_wts":
        import gen_wts

        args = gen_wts.parse_args(argv)
        return [args.weights] if args.weights else [], [str(args.output)]
    if entry == "trtx":
        engines = [a for a in argv[2:] if not a.startswith("-")][:2]
        inputs = [*engines, *(f"{e}.json" for e in engines)]
        if argv[:2] == ["export", "triton"]:
            return inputs, [argv[argv.index("--repo") + 1]] if "--repo" in argv else []
        if argv[:2] == ["export", "deepstream"]:
            return inputs, [argv[argv.index("-o") + 1]] if "-o" in argv else []
        return [], []
    if entry == "plugins":
        return [], []
    if entry == "netdefs":
        from netdefs.__main__ import discover, resolve

        if len(argv) < 2 or argv[1].startswith("-"):
            return [], []
        family, selects = resolve(argv[0], discover()[0])
        entry, argv = family, [argv[1], *selects, *argv[2:]]
    nd = netdefs.load(entry)
    args = cli._parser(nd).parse_args(argv)
    names = vars(args)
    inputs = [names[k] for k in ("weights", "engine", "image", "calib", "onnx", "names") if names.get(k)]
    inputs += list(names.get("sources") or [])
    inputs += [f"{names['engine']}.json"] if names.get("engine") else []
    out = [names[k] for k in ("graph", "calib_cache", "outdir", "output") if names.get(k)]
    if names.get("graph"):
        out.append(str(Path(args.graph).with_suffix(".dot")))  # written instead where Graphviz is not installed
    if args.command == "build":
        engine = cli.build_output(nd, args)
        out += [str(engine), f"{engine}.json"]
    return [str(p) for p in inputs], [str(p) for p in out]


def fingerprint(root: Path) -> dict[str, tuple]:
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            with contextlib.suppress(FileNotFoundError):
                s = os.lstat(p)
                seen[p] = (s.st_size, s.st_mtime_ns, s.st_ino, s.st_mode)
    return seen


def allowed(path: str, outputs: list[Path]) -> bool:
    p = Path(os.path.abspath(path))
    for out in outputs:
        out = Path(os.path.abspath(out))
        if p == out or out in p.parents or p == out.with_name(out.name + ".json"):
            return True
    return False


def check_call(entry: str, argv: list[str], run_dir: Path, result: Result, before: dict, after: dict) -> None:
    shown = f"{entry} {argv}\nstdout: {result.out[-2000:]}\nstderr: {result.err[-3000:]}"
    assert result.crash is None, f"{shown}\n{result.crash}"
    assert result.rc in (0, 1, 2), shown
    assert "Traceback" not in result.err, shown
    if result.rc == 2:
        lines = result.error_lines()
        assert len(lines) == 1, shown
        assert result.err.rstrip("\n").splitlines()[-1] == lines[0], shown
    inputs, outputs = declared(entry, argv, run_dir)
    inputs = {os.path.realpath(p) for p in inputs if "\0" not in str(p)}
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    for p in changed:
        assert p in after, f"{p} was deleted\n{shown}"
        assert allowed(p, [*outputs, SANDBOX / "kernels"]), f"{p} was written, not an output ({outputs})\n{shown}"
        assert os.path.realpath(p) not in inputs or p not in before, f"input {p} was changed\n{shown}"


RUN = iter(range(10**9))


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(CALLS)
def test_every_cli_exits_0_1_or_2_with_one_error_line_and_writes_only_its_outputs(case):
    entry, argv = case
    run_dir = SANDBOX / "runs" / str(next(RUN))
    run_dir.mkdir()
    argv = [a.replace("{in}", str(SANDBOX / "inputs")) for a in argv]
    before = fingerprint(SANDBOX)
    result = call(entry, argv, cwd=run_dir)
    after = fingerprint(SANDBOX)
    command = next((a for a in argv if not a.startswith("-")), "") if entry != "netdefs" else " ".join(argv[:2])
    event(f"{entry} {command[:20]}: exit {result.rc}")
    if os.environ.get("TRTX_PROPERTY_LOG"):
        with open(os.environ["TRTX_PROPERTY_LOG"], "a") as log:
            log.write(f"{entry} {argv} -> {result.rc} {result.err.strip().splitlines()[-1:]}\n")
    try:
        check_call(entry, argv, run_dir, result, before, after)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        _restore_inputs(before, after)


def _restore_inputs(before: dict, after: dict) -> None:
    """Outputs a call was allowed to write into inputs/: removed, and overwritten inputs put back, so every call
    sees the same files."""
    inputs, pristine = str(SANDBOX / "inputs"), str(SANDBOX / "pristine")
    for p in sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p) and p.startswith(inputs)):
        if p not in before:
            with contextlib.suppress(OSError):
                os.unlink(p)
        else:
            source = pristine + p[len(inputs) :]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
            if os.path.islink(source):
                os.symlink(os.readlink(source), p)
            else:
                shutil.copy2(source, p)
    for dirpath, dirnames, _ in os.walk(inputs, topdown=False):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.exists(pristine + full[len(inputs) :]):
                shutil.rmtree(full, ignore_errors=True)
