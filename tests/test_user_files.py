"""A user's files are theirs (issue #17): no command writes over an input or lets two inputs share an output, writes
are atomic and leave no temporary file behind, engines are used only with the metadata that describes them, and every
mistake a user can make with a file or a flag is one line on stderr with exit status 2 -- never a traceback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from clirun import REPO, call

import wts
from netdefs import sources as model_sources
from trtx import sources
from trtx_base import files

BUS = sources.sample_images() / "bus.jpg"
ZIDANE = sources.sample_images() / "zidane.jpg"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("files")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def lenet_wts(folder) -> Path:
    path = folder / "lenet.wts"
    wts.save(model_sources.state_dict_for_wts(model_sources.build_model("netdef:lenet", seed=5), "netdef:lenet"), path)
    return path


@pytest.fixture(scope="module")
def squeeze_wts(folder) -> Path:
    """A small ImageNet classifier: its infer writes an annotated picture and a JSON per image."""
    path = folder / "squeezenet1_1.wts"
    model = model_sources.build_model("torchvision:squeezenet1_1", seed=5)
    wts.save(model_sources.state_dict_for_wts(model, "torchvision:squeezenet1_1"), path)
    return path


@pytest.fixture(scope="module")
def engine(folder, lenet_wts) -> Path:
    path = folder / "lenet.engine"
    assert call("lenet", ["build", "-w", lenet_wts, "-o", path]).rc == 0
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its sha256: what must not change."""
    return {str(p.relative_to(path)): digest(p) for p in sorted(path.rglob("*")) if p.is_file()}


SQUEEZE = ["squeezenet", "infer", "--arch", "squeezenet1_1"]


# ---- never over an input, never two inputs into one output ---------------------------------------------
def test_infer_never_writes_over_the_input_image(squeeze_wts, tmp_path):
    """`infer src/bus.jpg -o src` replaced the user's photo with the annotated copy (exit 0)."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(BUS, src / "bus.jpg")
    before = tree(tmp_path)
    r = call(SQUEEZE[0], [*SQUEEZE[1:], "-w", squeeze_wts, src / "bus.jpg", "-o", src])
    assert r.rc == 2 and "over the input" in r.one_line_error() and str(src / "bus.jpg") in r.err
    r = call(SQUEEZE[0], [*SQUEEZE[1:], "-w", squeeze_wts, src, "-o", tmp_path / "src/../src"])  # by another name
    assert r.rc == 2 and "over the input" in r.one_line_error()
    assert tree(tmp_path) == before


def test_infer_never_lets_two_inputs_share_an_output(squeeze_wts, tmp_path):
    """`infer d1/img.jpg d2/img.jpg -o out` wrote d2's result over d1's (exit 0)."""
    for d, photo in (("d1", BUS), ("d2", ZIDANE)):
        (tmp_path / d).mkdir()
        shutil.copy(photo, tmp_path / d / "img.jpg")
    shutil.copy(ZIDANE, tmp_path / "d2" / "img.png")  # same stem: the JSON files would collide
    before = tree(tmp_path)
    r = call(SQUEEZE[0], [*SQUEEZE[1:], "-w", squeeze_wts, tmp_path / "d1/img.jpg", tmp_path / "d2/img.jpg",
                          "-o", tmp_path / "out"])  # fmt: skip
    line = r.one_line_error()
    assert r.rc == 2 and "d1/img.jpg and" in line and "d2/img.jpg would both be written to" in line
    r = call(SQUEEZE[0], [*SQUEEZE[1:], "-w", squeeze_wts, tmp_path / "d2", "-o", tmp_path / "out"])
    assert r.rc == 2 and "img.json" in r.one_line_error()
    assert tree(tmp_path) == before and not (tmp_path / "out").exists()


def test_infer_writes_one_picture_and_one_json_per_image_and_keeps_the_inputs(squeeze_wts, tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(BUS, tmp_path / "in" / "a.jpg")
    shutil.copy(ZIDANE, tmp_path / "in" / "b.jpg")
    before = tree(tmp_path / "in")
    r = call(SQUEEZE[0], [*SQUEEZE[1:], "-w", squeeze_wts, tmp_path / "in", "-o", tmp_path / "out", "--batch", "2"])
    assert r.rc == 0, r.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "a.json", "b.jpg", "b.json"]
    assert json.loads((tmp_path / "out" / "b.json").read_text())["image"] == str(tmp_path / "in" / "b.jpg")
    assert tree(tmp_path / "in") == before


def test_infer_reports_an_unreadable_image_goes_on_and_fails_at_the_end(squeeze_wts, tmp_path):
    """`infer` on a folder stopped at the first unreadable image; now it says which, does the rest, exits 2."""
    (tmp_path / "in").mkdir()
    shutil.copy(BUS, tmp_path / "in" / "a.jpg")
    (tmp_path / "in" / "b.jpg").write_bytes(b"not a jpeg at all")
    shutil.copy(ZIDANE, tmp_path / "in" / "c.jpg")
    r = call(SQUEEZE[0], [*SQUEEZE[1:], "-w", squeeze_wts, tmp_path / "in", "-o", tmp_path / "out"])
    assert r.rc == 2
    line = r.one_line_error()
    assert line.startswith("error: 1 of 3 image(s) could not be read:") and str(tmp_path / "in" / "b.jpg") in line
    assert f"warning: {tmp_path / 'in' / 'b.jpg'}: not a readable image, skipped" in r.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "a.json", "c.jpg", "c.json"]


def test_build_never_writes_over_its_weights(lenet_wts, tmp_path):
    """`build -w lenet.wts -o lenet.wts` replaced the weights with the engine (exit 0)."""
    weights = tmp_path / "lenet.wts"
    shutil.copy(lenet_wts, weights)
    (tmp_path / "link.engine").symlink_to(weights)
    os.link(weights, tmp_path / "hard.engine")
    before = tree(tmp_path)
    for out in (weights, tmp_path / "link.engine", tmp_path / "hard.engine", tmp_path / "x/../lenet.wts"):
        r = call("lenet", ["build", "-w", weights, "-o", out])
        assert r.rc == 2 and "trtx never writes over an input" in r.one_line_error()
    shutil.copy(weights, tmp_path / "w.json")
    r = call("lenet", ["build", "-w", tmp_path / "w.json", "-o", tmp_path / "w"])  # the metadata w.json: the weights
    assert r.rc == 2 and f"-o's metadata {tmp_path / 'w.json'} is the input" in r.one_line_error()
    assert {k: v for k, v in tree(tmp_path).items() if k in before} == before


def test_gen_wts_never_writes_over_its_checkpoint(tmp_path):
    """`gen_wts.py -w tiny.pt -o tiny.pt` replaced the checkpoint with .wts text (exit 0)."""
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "tiny.pt")
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "tiny.wts")  # a checkpoint named .wts
    before = tree(tmp_path)
    for argv in (["-w", "tiny.pt", "-o", "tiny.pt"], ["-w", "tiny.wts"], ["-w", "tiny.pt", "-o", "./tiny.pt"]):
        r = call("gen_wts", argv, cwd=tmp_path)
        assert r.rc == 2 and "trtx never writes over an input" in r.one_line_error(), argv
    assert tree(tmp_path) == before


# ---- atomic writes and the temporary files of killed writes ---------------------------------------------
def _write_big(path: Path, under_run: bool = False) -> subprocess.Popen:
    """A process writing 400 MB of .wts to ``path`` (slow enough to be caught mid-write); ``under_run``: inside
    trtx_base.cli.run, as every trtx command line."""
    save = f"wts.save({{'x': np.ones(40_000_000, np.float32)}}, {str(path)!r})"
    if under_run:
        save = f"from trtx_base.cli import run; sys.exit(run(lambda: {save} and 0))"
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); import numpy as np, wts; {save}"
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)


def _wait_for_temp(path: Path, proc: subprocess.Popen) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        temps = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.") and p.stat().st_size > 0]
        if temps:
            return temps[0]
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    raise AssertionError("the writer never started")


def test_a_killed_write_leaves_a_temp_file_the_next_write_of_that_file_removes(tmp_path):
    target = tmp_path / "big.wts"
    proc = _write_big(target)
    temp = _wait_for_temp(target, proc)
    proc.kill()
    proc.wait()
    assert temp.exists() and not target.exists()  # what a SIGKILL (or a power cut) leaves
    alive = tmp_path / f".big.wts.{files._HOST}-{os.getpid()}.abcdefgh.tmp"  # a write in progress: not touched
    alive.write_bytes(b"busy")
    other_host = tmp_path / ".big.wts.elsewhere-1.abcdefgh.tmp"  # another machine's (a shared disk): not touched
    other_host.write_bytes(b"busy")
    legacy = tmp_path / ".big.wts.k3j_x9q2.tmp"  # older trtx's mkstemp name, an hour old
    legacy.write_bytes(b"old")
    os.utime(legacy, (time.time() - 3600, time.time() - 3600))
    wts.save({"x": np.ones(4, np.float32)}, target)
    assert not temp.exists() and not legacy.exists() and alive.exists() and other_host.exists()
    assert list(wts.load(target)) == ["x"]


def test_sigterm_during_a_write_leaves_neither_the_file_nor_a_temp(tmp_path):
    """A CLI stopped by `kill` (or CI's timeout) removes its temporary file: trtx_base.cli.run's SIGTERM handler."""
    target = tmp_path / "big.wts"
    proc = _write_big(target, under_run=True)
    _wait_for_temp(target, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert list(tmp_path.iterdir()) == []


def test_unreadable_and_unwritable_files_are_one_line_errors(lenet_wts, tmp_path):
    """Files the user may not read, a folder they may not write, a read-only disk, a full disk (an engine and a .wts
    too big for it): one line naming the file, exit 2, nothing left behind. One restricted interpreter runs every
    call: without root's permission override (setpriv), in a private mount namespace with a full and a read-only
    tmpfs where the machine allows one (unshare)."""
    secret, locked = tmp_path / "secret.wts", tmp_path / "locked"
    shutil.copy(lenet_wts, secret)
    torch.save({"w": torch.ones(2)}, tmp_path / "secret.pt")
    locked.mkdir()
    for p in (secret, tmp_path / "secret.pt"):
        p.chmod(0)
    locked.chmod(0o555)
    random_init = ["--model", "netdef:lenet", "--random-init", "-o"]
    cases = [
        (["lenet", ["check", "-w", secret]], f"-w weights {secret}: permission denied"),
        (["gen_wts", ["-w", tmp_path / "secret.pt", "-o", tmp_path / "x.wts"]], "secret.pt: permission denied"),
        (["lenet", ["build", "-w", lenet_wts, "-o", locked / "l.engine"]], f"write {locked}/l.engine: Permission"),
        (["gen_wts", [*random_init, locked / "x.wts"]], f"cannot write {locked}/x.wts: Permission denied"),
    ]
    mounts = _mount_namespace()
    if mounts:
        cases += [
            (["lenet", ["build", "-w", lenet_wts, "-o", "/mnt/full/l.engine"]], "write /mnt/full/l.engine: No space"),
            (["gen_wts", [*random_init, "/mnt/full/x.wts"]], "cannot write /mnt/full/x.wts: No space left on device"),
            (["lenet", ["build", "-w", lenet_wts, "-o", "/mnt/ro/l.engine"]], "/mnt/ro/l.engine: Read-only file"),
            (["gen_wts", [*random_init, "/mnt/ro/x.wts"]], "cannot write /mnt/ro/x.wts: Read-only file system"),
        ]
    calls = json.dumps([[entry, [str(a) for a in argv]] for (entry, argv), _ in cases])
    unprivileged = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: root reads and writes any file")
        unprivileged = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    run = " ".join([*unprivileged, sys.executable, str(REPO / "tests" / "clirun.py")])
    script = f"{mounts} {run} && ls -A /mnt/full /mnt/ro" if mounts else run
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script] if mounts else script.split(), input=calls,
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results, _, listing = proc.stdout.partition("\n")
    for r, (_, text) in zip(json.loads(results), cases):
        assert r["rc"] == 2 and r["crash"] is None, r
        (line,) = [x for x in r["err"].splitlines() if "error:" in x]
        assert text in line, line
    assert list(locked.iterdir()) == [] and listing.split() == ["/mnt/full:", "/mnt/ro:"][: 2 if mounts else 0]
    if not mounts:
        pytest.skip("a full or read-only disk needs a private mount namespace (unshare -m, as root); tested the rest")


def _mount_namespace() -> str:
    """Shell commands mounting a 256 KiB tmpfs /mnt/full and a read-only /mnt/ro in a private mount namespace; ""
    where the machine allows none (not root, or a container without mount permission)."""
    mounts = ("mount -t tmpfs tmpfs /mnt && mkdir /mnt/full /mnt/ro && mount -t tmpfs -o size=256k tmpfs /mnt/full && "
              "mount -t tmpfs -o ro tmpfs /mnt/ro &&")  # fmt: skip
    if shutil.which("unshare") is None:
        return ""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", mounts + " true"], capture_output=True)
    return mounts if probe.returncode == 0 else ""


# ---- engines and their metadata ---------------------------------------------------------------------------
@pytest.fixture
def pair(engine, tmp_path) -> tuple[Path, Path]:
    """A copy of the lenet engine and its metadata, to damage."""
    shutil.copy(engine, tmp_path / "lenet.engine")
    shutil.copy(engine.with_name("lenet.engine.json"), tmp_path / "lenet.engine.json")
    return tmp_path / "lenet.engine", tmp_path / "lenet.engine.json"


def _infer_engine(engine: Path, *extra) -> str:
    r = call("lenet", ["infer", "-e", engine, str(BUS), "-o", engine.parent / "out", *extra])
    assert r.rc == 2
    return r.one_line_error()


def test_an_edited_metadata_file_is_refused(pair):
    engine, meta_path = pair
    meta = json.loads(meta_path.read_text())
    meta["num_classes"] = 11
    meta_path.write_text(json.dumps(meta, indent=2))
    assert f"{meta_path} was edited after the build" in _infer_engine(engine)


def test_a_swapped_metadata_file_is_refused(pair, lenet_wts, tmp_path):
    engine, meta_path = pair
    assert call("lenet", ["build", "-w", lenet_wts, "-o", tmp_path / "other.engine", "--batch", "1:2:4"]).rc == 0
    time.sleep(0.01)
    shutil.copy(tmp_path / "other.engine.json", meta_path)
    line = _infer_engine(engine)
    assert f"{engine} (" in line and "is not the engine lenet.engine.json describes" in line
    assert "lenet.engine.json was rewritten for another engine" in line


def test_a_damaged_engine_is_refused(pair):
    engine, _ = pair
    time.sleep(0.01)
    engine.write_bytes(engine.read_bytes()[:-100])
    line = _infer_engine(engine)
    assert f"{engine} was replaced after lenet.engine.json was written" in line


@pytest.mark.parametrize("content", [b'{"inputs": [', b"\xff\xfe garbage", b"[1, 2]", b"{}"])
def test_a_corrupt_metadata_file_is_one_line_naming_it(pair, content):
    engine, meta_path = pair
    meta_path.write_bytes(content)
    assert str(meta_path) in _infer_engine(engine)


def test_a_missing_metadata_file_is_one_line(pair):
    engine, meta_path = pair
    meta_path.unlink()
    assert "no metadata lenet.engine.json beside it" in _infer_engine(engine)


@pytest.mark.parametrize("flag", [["-w", "{w}"], ["--precision", "fp16"], ["--device", "cuda"]])
def test_flags_an_engine_ignores_are_refused(pair, lenet_wts, flag):
    """`infer -e E -w W` silently ran E and ignored W."""
    engine, _ = pair
    line = _infer_engine(engine, *[f.format(w=lenet_wts) for f in flag])
    assert f"{flag[0]}: ignored with an engine (-e)" in line


def test_an_engine_is_refused_by_the_reference_backend(pair, lenet_wts):
    engine, _ = pair
    assert "-e ENGINE is ignored by --backend reference" in _infer_engine(engine, "--backend", "reference", "-w",
                                                                          str(lenet_wts))  # fmt: skip


# ---- every listed mistake: one line, exit 2, no traceback ---------------------------------------------------
@pytest.fixture(scope="module")
def bad(folder, lenet_wts) -> dict[str, Path]:
    """Hostile files: a directory, a checkpoint whose key has a space, not-a-checkpoint files, calibration caches."""
    out = {"dir": folder / "a_dir", "calib": folder / "calib"}
    out["dir"].mkdir()
    out["calib"].mkdir()
    shutil.copy(BUS, out["calib"] / "bus.jpg")
    torch.save({"conv weight": torch.ones(3), "bias": torch.zeros(3)}, folder / "space.pt")
    (folder / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    for name, amax in (("string", "big"), ("negative", -1.0), ("nan", float("nan"))):
        doc = {"version": 1, "weights_sha256": files_sha(lenet_wts), "method": "entropy", "images": 1,
               "amax": {"data": amax}}  # fmt: skip
        (folder / f"cache_{name}.json").write_text(json.dumps(doc))
    out.update(space=folder / "space.pt", random=folder / "random.bin")
    return out


def files_sha(path: Path) -> str:
    from trtx.build import file_sha256

    return file_sha256(path)


#: build in int8 from the calibration folder: the start of the int8 mistakes below
INT8 = ["build", "-w", "{w}", "-o", "{tmp}/x.engine", "--precision", "int8"]
MISTAKES = [
    ("lenet", ["check", "-w", "{dir}"], "-w weights {dir} is a directory, not a file"),
    ("lenet", ["build", "-w", "{dir}", "-o", "{tmp}/x.engine"], "is a directory, not a file"),
    ("gen_wts", ["-w", "{dir}", "-o", "{tmp}/x.wts"], "checkpoint {dir} is a directory, not a file"),
    ("lenet", ["build", "-w", "{w}", "-o", "{dir}"], "-o {dir} is a directory; give a file name"),
    ("gen_wts", ["--model", "yolov5s", "--random-init", "-o", "{tmp}/x.wts"], "is not SOURCE:NAME"),
    ("gen_wts", ["-w", "{space}", "-o", "{tmp}/x.wts"], "tensor name 'conv weight' cannot be written"),
    ("gen_wts", ["-w", "{w}", "-o", "{tmp}/x.wts"], "it looks like a .wts file"),
    ("gen_wts", ["-w", "{random}", "-o", "{tmp}/x.wts"], "not a PyTorch checkpoint"),
    ("gen_wts", ["-w", "/dev/zero", "-o", "{tmp}/x.wts"], "/dev/zero is not a regular file"),
    ("lenet", ["check", "-w", "/dev/zero"], "/dev/zero is not a regular file"),
    ("lenet", ["check", "-w", "{w}", "--device", "tpu"], "--device tpu: not a device"),
    ("lenet", ["infer", "-w", "{w}", "--batch", "0", "{bus}", "-o", "{tmp}"], "'0' must be a whole number >= 1"),
    ("lenet", ["check", "-w", "{w}", "--batch", "-2"], "'-2' must be a whole number >= 1"),
    ("lenet", ["bench", "-w", "{w}", "--batch", "1,x"], "'x' is not a whole number"),
    ("lenet", ["build", "-w", "{w}", "--workspace", "-5", "-o", "{tmp}/x.engine"], "'-5' must be a whole number"),
    ("lenet", ["bench", "-w", "{w}", "--iters", "0"], "argument --iters: '0' must be a whole number >= 1"),
    ("lenet", [*INT8, "--calib", "{calib}", "--calib-images", "0"], "'0' must be a whole number >= 1"),
    ("lenet", [*INT8, "--calib", "{calib}", "--calib-images", "-3"], "'-3' must be a whole number >= 1"),
    ("lenet", [*INT8, "--calib", "{calib}", "--int8-fallback", "5"], "--int8-fallback 5: the network has 5 quan"),
    ("lenet", [*INT8, "--calib-cache", "{cache_string}"], "tensor 'data' has amax 'big'"),
    ("lenet", [*INT8, "--calib-cache", "{cache_nan}"], "tensor 'data' has amax nan"),
    ("lenet", [*INT8, "--calib", "{calib}", "--calib-cache", "{w}"], "--calib-cache {w} is the input {w}"),
    ("lenet", ["build", "-w", "{w}", "--calib-images", "4", "-o", "{tmp}/x.engine"], "apply to --precision int8 only"),
    ("lenet", ["inspect", "-w", "{w}", "--graph", "{tmp}/g.jpg"], "--graph {tmp}/g.jpg: give a .svg, .png or .dot"),
    ("lenet", ["check", "-w", "{w}", "--image", "{tmp}/missing.jpg"], "--image {tmp}/missing.jpg does not exist"),
    ("lenet", ["infer", "-w", "{w}", "{tmp}/missing.jpg", "-o", "{tmp}"], "{tmp}/missing.jpg: no such image"),
    ("lenet", ["infer", "-w", "{w}", "{bus}", "--json", "-o", "{tmp}"], "--json: lenet declares no JSON form"),
    ("lenet", ["check", "-w", "{w}", "--atol", "-1"], "'-1' must be a finite number >= 0"),
    ("lenet", ["check", "-w", "{w}", "--batch", "100000000000"], "out of memory (Unable to allocate"),
    ("yolov5", ["infer", "-w", "{w}", "--max-det", "0", "{bus}"], "argument --max-det: '0' must be a whole number"),
    ("ultralytics", ["build", "-w", "{w}", "--max-det", "-1"], "argument --max-det: '-1' must be a whole number"),
    ("retinaface", ["build", "-w", "{w}", "--keep-top-k", "0"], "argument --keep-top-k: '0' must be a whole"),
    ("yolov5", ["build", "-w", "{w}", "--conf", "1.5"], "argument --conf: '1.5' must lie in [0, 1]"),
]


@pytest.mark.parametrize("entry, argv, message", MISTAKES, ids=[" ".join(m[1][:1] + m[1][-2:]) for m in MISTAKES])
def test_a_mistake_is_one_line_and_exit_2(bad, lenet_wts, tmp_path, entry, argv, message):
    names = {**{k: str(v) for k, v in bad.items()}, "w": str(lenet_wts), "tmp": str(tmp_path), "bus": str(BUS)}
    names.update({f"cache_{k}": str(lenet_wts.parent / f"cache_{k}.json") for k in ("string", "negative", "nan")})
    before = tree(lenet_wts.parent)
    r = call(entry, [a.format(**names) for a in argv])
    assert r.rc == 2, (r.out, r.err, r.crash)
    line = r.one_line_error()
    assert message.format(**names) in line
    assert "--unsafe-pickle" not in line
    assert tree(lenet_wts.parent) == before and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU: --device cuda is valid here")
def test_device_cuda_without_a_gpu_is_one_line(lenet_wts):
    r = call("lenet", ["check", "-w", lenet_wts, "--device", "cuda"])
    assert r.rc == 2 and "--device cuda: PyTorch sees no CUDA GPU on this machine" in r.one_line_error()


def test_inputs_are_checked_before_the_model_loads(lenet_wts, tmp_path, monkeypatch):
    """A missing image, an output that is a directory: said before anything reads the weights (seconds earlier)."""
    import wts as wts_module

    def no_loading(*args, **kwargs):
        raise AssertionError("the weights were read before the inputs were checked")

    monkeypatch.setattr(wts_module, "load", no_loading)
    cases = [
        ["check", "-w", lenet_wts, "--image", tmp_path / "missing.jpg"],
        ["build", "-w", lenet_wts, "-o", tmp_path],
        ["infer", "-w", lenet_wts, tmp_path / "missing.jpg", "-o", tmp_path / "out"],
        ["bench", "-w", lenet_wts, "--image", tmp_path / "missing.jpg"],
        ["inspect", "-w", lenet_wts, "--graph", lenet_wts],
    ]
    for argv in cases:
        r = call("lenet", argv)
        assert r.rc == 2 and r.crash is None, (argv, r.err, r.crash)
        r.one_line_error()


def test_dev_zero_is_refused_at_once(tmp_path):
    """`-w /dev/zero` read without end (memory grew until the machine gave up)."""
    start = time.monotonic()
    for entry, argv in (("lenet", ["check", "-w", "/dev/zero"]), ("gen_wts", ["-w", "/dev/zero", "-o", "x.wts"])):
        r = call(entry, argv, cwd=tmp_path)
        assert r.rc == 2 and "/dev/zero is not a regular file" in r.one_line_error()
    assert time.monotonic() - start < 5
    with pytest.raises(wts.WtsFormatError, match="not a regular file"):
        wts.load("/dev/zero")


def test_a_checkpoints_class_names_travel_to_the_engine_and_the_results(tmp_path):
    """A trained yolov5 checkpoint's ``model.names`` were dropped (class0..2 in the engine JSON): gen_wts.py writes
    them beside the weights, build records them, infer labels with them."""
    model = model_sources.build_model("yolov5:yolov5n", seed=2)
    model.names = {0: "cat", 1: "dog", **{i: f"thing {i}" for i in range(2, 80)}}
    torch.save({"model": model, "epoch": 3}, tmp_path / "trained.pt")
    weights = tmp_path / "trained.wts"
    assert call("gen_wts", ["-w", tmp_path / "trained.pt", "--unsafe-pickle", "-o", weights, "-q"]).rc == 0
    assert "model.24.names" in wts.load(weights)
    engine = tmp_path / "trained.engine"
    assert call("yolov5", ["build", "-w", weights, "--imgsz", "64", "-o", engine]).rc == 0
    names = json.loads(Path(f"{engine}.json").read_text())["yolov5"]["names"]
    assert names[:3] == ["cat", "dog", "thing 2"] and len(names) == 80
    r = call("yolov5", ["infer", "-w", weights, "--imgsz", "64", "--conf", "0", str(BUS), "-o", tmp_path / "out"])
    assert r.rc == 0, r.err
    found = {d["category"] for d in json.loads((tmp_path / "out" / "bus.json").read_text())["detections"]}
    assert found and found <= set(names), found


NAMES_FILES = [
    (None, "is a directory"),
    (b"\xff\xfe\x00bad", "not a list of class"),
    (b"names: [a, b", "not YAML or JSON"),
    (b"42", "not a list of class"),
]


@pytest.mark.parametrize("content, message", NAMES_FILES)
def test_a_names_file_that_is_not_one_is_one_line(tmp_path, content, message):
    from netdefs.detection.options import names_file
    from trtx_base.errors import UserError

    path = tmp_path / "names.yaml"
    path.mkdir() if content is None else path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        names_file(str(path), 2)
