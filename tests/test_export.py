"""``python -m trtx export triton|deepstream`` on engines built here by the real TensorRT-RTX builder.

yolov5s (dynamic batch 1:4:8 for four GPU archs; fixed batch 2 for one arch) and resnet50 (four archs) are built
once per module with ``--gpu-arch`` through the commands users type; properties that need no real model (several
engines, errors, overwrite rules) use the tiny conv engine of ``make_tiny_engine``. Every ``config.pbtxt`` is
parsed with Triton's own schema (tritonclient's ``model_config_pb2.ModelConfig``) and compared with the metadata.
No Triton server and no TensorRT runtime run here: docs/deploy.md says what that leaves unverified.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gen_wts
from trtx.__main__ import main as trtx_main
from trtx.export import ExportError, bundle, triton
from trtx_base import dtypes

# the dev extra installs tritonclient (make venv); a machine without it (the bare GPU box) skips this module
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs pip install -e '.[dev]'")
text_format = pytest.importorskip("google.protobuf.text_format")

FOUR = "sm_80,sm_86,sm_89,sm_120"
ENV = dict(os.environ, YOLO_OFFLINE="1")


def netdef_build(model: str, weights: Path, engine: Path, *options: str) -> Path:
    """``python -m netdefs MODEL build``: the command a user types."""
    cmd = [sys.executable, "-m", "netdefs", model, "build", "-w", str(weights), "-o", str(engine), *options]
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    return engine


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export")
    w = {}
    for name, source in (("yolov5s", "yolov5:yolov5s"), ("resnet50", "torchvision:resnet50")):
        w[name] = folder / f"{name}.safetensors"
        assert gen_wts.main(["-m", source, "--random-init", "-o", str(w[name]), "-q"]) == 0
    built = {
        "yolov5s": netdef_build("yolov5s", w["yolov5s"], folder / "yolov5s.engine",
                                "--imgsz", "320", "--batch", "1:4:8", "--gpu-arch", FOUR),
        "yolov5s_b2": netdef_build("yolov5s", w["yolov5s"], folder / "yolov5s_b2.engine",
                                   "--imgsz", "320", "--batch", "2", "--gpu-arch", "sm_86"),
        "resnet50": netdef_build("resnet50", w["resnet50"], folder / "resnet50.engine", "--gpu-arch", FOUR),
    }  # fmt: skip
    for path in w.values():
        path.unlink()
    yield built
    shutil.rmtree(folder)


def meta_of(engine: Path) -> dict:
    return json.loads(Path(f"{engine}.json").read_text())


def export(engines: list[Path], repo: Path, *options: str) -> tuple[model_config_pb2.ModelConfig, Path]:
    """Run ``export triton`` and parse the config it wrote with Triton's schema."""
    assert trtx_main(["export", "triton", *map(str, engines), "--repo", str(repo), *options]) == 0
    name = options[options.index("--name") + 1] if "--name" in options else engines[0].stem
    folder = repo / name
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()), folder


@pytest.fixture(scope="module")
def exported(engines, tmp_path_factory) -> dict[str, tuple[model_config_pb2.ModelConfig, Path]]:
    repo = tmp_path_factory.mktemp("repo")
    return {
        "yolov5s": export([engines["yolov5s"]], repo, "--instances", "3", "--max-queue-delay-us", "250"),
        "yolov5s_b2": export([engines["yolov5s_b2"]], repo),
        "resnet50": export([engines["resnet50"]], repo),
    }


MODELS = ["yolov5s", "yolov5s_b2", "resnet50"]


def test_builds_name_their_gpu_targets(engines):
    """Acceptance: build --gpu-arch sm_80,sm_86,sm_89,sm_120 on yolov5s and resnet50 on this CPU machine."""
    for name in ("yolov5s", "resnet50"):
        meta = meta_of(engines[name])
        assert meta["gpu"] == {"archs": FOUR.split(","), "chosen_by": "--gpu-arch", "one_engine_for_all": True}
        assert engines[name].stat().st_size == meta["engine_bytes"] > 1_000_000
    assert meta_of(engines["yolov5s_b2"])["gpu"]["archs"] == ["sm_86"]


def test_unsupported_arch_is_one_line_exit_2(engines, tmp_path):
    weights = tmp_path / "lenet.wts"
    assert gen_wts.main(["-m", "netdef:lenet", "--random-init", "-o", str(weights), "-q"]) == 0
    cmd = [sys.executable, "-m", "netdefs", "lenet", "build", "-w", str(weights), "-o", str(tmp_path / "l.engine"),
           "--gpu-arch", "sm_86,sm_90"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert done.returncode == 2 and not (tmp_path / "l.engine").exists()
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: --gpu-arch: 'sm_90' is not a GPU arch") and "sm_75, sm_80, sm_86" in lines[-1]


@pytest.mark.parametrize("model", MODELS)
def test_model_identity(model, engines, exported):
    config, folder = exported[model]
    assert (config.name, config.platform, folder.name) == (engines[model].stem, "tensorrt_plan", engines[model].stem)


@pytest.mark.parametrize("model", MODELS)
def test_max_batch_size_from_the_profile(model, engines, exported):
    """Dynamic 1:4:8 -> 8 (Triton batches); fixed batch 2 and resnet50's fixed 1 -> 0 (full dims)."""
    b = meta_of(engines[model])["batch"]
    expected = b["max"] if b["min"] == 1 < b["max"] else 0
    assert exported[model][0].max_batch_size == expected
    assert expected == {"yolov5s": 8, "yolov5s_b2": 0, "resnet50": 0}[model]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", ["input", "output"])
def test_tensors_equal_the_metadata(model, kind, engines, exported):
    """Names, Triton dtypes and dims: without the batch axis where Triton batches, else the fixed batch in front."""
    meta = meta_of(engines[model])
    config = exported[model][0]
    batch = meta["batch"]["max"]
    got = [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in getattr(config, kind)]
    expected = []
    for t in meta[f"{kind}s"]:
        shape = t["shape"][1:] if config.max_batch_size else [batch, *t["shape"][1:]]
        expected.append((t["name"], dtypes.triton_type(t["dtype"]), shape))
    assert got == expected
    if model.startswith("yolov5s"):
        names = [t[0] for t in got]
        assert names == (["images"] if kind == "input" else ["boxes", "scores", "classes"])
        assert got[-1][1] == ("TYPE_FP32" if kind == "input" else "TYPE_INT32")


@pytest.mark.parametrize("model", MODELS)
def test_dynamic_batching(model, engines, exported):
    config = exported[model][0]
    if not config.max_batch_size:
        assert not config.HasField("dynamic_batching")  # Triton cannot batch a fixed-batch engine
        return
    b = meta_of(engines[model])["batch"]
    assert list(config.dynamic_batching.preferred_batch_size) == [b["opt"], b["max"]] == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250


@pytest.mark.parametrize("model", MODELS)
def test_instance_group(model, exported):
    config = exported[model][0]
    groups = [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group]
    assert groups == [(3 if model == "yolov5s" else 1, "KIND_GPU")]


@pytest.mark.parametrize("model", MODELS)
def test_plan_is_the_engine_byte_for_byte(model, engines, exported):
    config, folder = exported[model]
    assert config.default_model_filename == "model.plan" and not config.cc_model_filenames
    assert [p.name for p in (folder / "1").iterdir()] == ["model.plan"]
    assert (folder / "1" / "model.plan").read_bytes() == engines[model].read_bytes()


@pytest.mark.parametrize("model", MODELS)
def test_parameters_name_plugins_and_builder(model, engines, exported):
    meta = meta_of(engines[model])
    params = {k: v.string_value for k, v in exported[model][0].parameters.items()}
    assert params == {
        "trtx_plugins": "none: the plan needs no plugin library",
        "trtx_built_with": f"{meta['backend']['name']} {meta['backend']['version']}",
    }


def test_one_plan_per_arch_through_cc_model_filenames(make_tiny_engine, tmp_path):
    """Several engines of one model (as full TensorRT builds them, one per GPU): each plan under its archs."""
    a = make_tiny_engine(tmp_path / "a.engine", gpu_archs=("sm_86",))
    b = make_tiny_engine(tmp_path / "b.engine", gpu_archs=("sm_89", "sm_120"))
    config, folder = export([a, b], tmp_path / "repo", "--name", "tiny")
    assert dict(config.cc_model_filenames) == {"8.6": "model_sm86.plan", "8.9": "model_sm89_sm120.plan",
                                               "12.0": "model_sm89_sm120.plan"}  # fmt: skip
    assert not config.default_model_filename
    assert (folder / "1" / "model_sm86.plan").read_bytes() == a.read_bytes()
    assert (folder / "1" / "model_sm89_sm120.plan").read_bytes() == b.read_bytes()
    assert config.max_batch_size == 4 and list(config.input[0].dims) == [3, 16, 16]


@pytest.fixture
def tiny(make_tiny_engine, tmp_path) -> Path:
    return make_tiny_engine(tmp_path / "tiny.engine")


def run_export(argv: list[str], capsys) -> tuple[int, str]:
    rc = trtx_main(["export", *argv])
    return rc, capsys.readouterr().err.strip()


def test_engine_changed_after_its_metadata_is_named(tiny, tmp_path, capsys):
    data = bytearray(tiny.read_bytes())
    data[-100] ^= 0xFF
    tiny.write_bytes(bytes(data))
    os.utime(tiny.with_name("tiny.engine.json"), (1_000_000_000, 1_000_000_000))  # the .json is older
    rc, err = run_export(["triton", str(tiny), "--repo", str(tmp_path / "r")], capsys)
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"{tiny} was replaced after tiny.engine.json was written" in err and "is not the engine" in err
    assert not (tmp_path / "r" / "tiny").exists()


def test_metadata_rewritten_for_another_engine_is_named(tiny, make_tiny_engine, tmp_path, capsys):
    other = make_tiny_engine(tmp_path / "other.engine", batch="1:4:8")
    shutil.copy(Path(f"{other}.json"), Path(f"{tiny}.json"))
    os.utime(tiny, (1_000_000_000, 1_000_000_000))  # the engine is older
    rc, err = run_export(["triton", str(tiny), "--repo", str(tmp_path / "r")], capsys)
    assert rc == 2 and "tiny.engine.json was rewritten for another engine" in err


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda e: Path(f"{e}.json").unlink(), "no metadata tiny.engine.json beside it"),
        (lambda e: Path(f"{e}.json").write_text('{"inputs": [\n'), "tiny.engine.json: not JSON (line 2"),
        (lambda e: Path(f"{e}.json").write_text("[1]"), "not trtx engine metadata"),
        (lambda e: Path(f"{e}.json").write_text('{"inputs": []}'), "no backend, precision, batch, outputs"),
        (lambda e: e.unlink(), "no such engine file"),
    ],
)
def test_bad_pairs_are_one_line(tiny, tmp_path, capsys, damage, message):
    damage(tiny)
    rc, err = run_export(["triton", str(tiny), "--repo", str(tmp_path / "r")], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and message in err


def test_passing_the_metadata_instead_of_the_engine(tiny, tmp_path):
    with pytest.raises(ExportError, match="pass the engine file, not its metadata"):
        bundle.load(f"{tiny}.json")


def test_reexport_replaces_its_own_folder_only(tiny, tmp_path, capsys):
    repo = tmp_path / "repo"
    export([tiny], repo, "--instances", "1")
    config, _ = export([tiny], repo, "--instances", "2")  # ours: replaced
    assert config.instance_group[0].count == 2
    assert sorted(p.name for p in repo.iterdir()) == ["tiny"]  # no staging folder left behind
    foreign = repo / "theirs"
    foreign.mkdir()
    (foreign / "config.pbtxt").write_text('name: "theirs"\n')
    rc, err = run_export(["triton", str(tiny), "--repo", str(repo), "--name", "theirs"], capsys)
    assert rc == 2 and "exists and was not written by trtx export triton" in err
    assert (foreign / "config.pbtxt").read_text() == 'name: "theirs"\n'


def test_never_writes_over_an_input(make_tiny_engine, tmp_path, capsys):
    repo = tmp_path / "repo"
    engine = make_tiny_engine(repo / "tiny" / "1" / "model.plan")
    (repo / "tiny" / "config.pbtxt").write_text(f"{triton.MARKER}\n")
    rc, err = run_export(["triton", str(engine), "--repo", str(repo), "--name", "tiny"], capsys)
    assert rc == 2 and "lies inside" in err and engine.is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-queue-delay-us", "10"], "Triton cannot batch"),
        (["--instances", "0"], "--instances 0: must be at least 1"),
        (["--name", "a/b"], "--name 'a/b'"),
    ],
)
def test_bad_flags_are_one_line(make_tiny_engine, tmp_path, capsys, argv, message):
    engine = make_tiny_engine(tmp_path / "fixed.engine", batch="1")
    rc, err = run_export(["triton", str(engine), "--repo", str(tmp_path / "r"), *argv], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and message in err


def test_several_engines_must_be_one_model_on_distinct_archs(make_tiny_engine, tmp_path, capsys):
    a = make_tiny_engine(tmp_path / "a.engine", gpu_archs=("sm_86",))
    b = make_tiny_engine(tmp_path / "b.engine", gpu_archs=("sm_86", "sm_89"))
    c = make_tiny_engine(tmp_path / "c.engine", batch="1:4:8", gpu_archs=("sm_120",))
    rc, err = run_export(["triton", str(a), str(b), "--repo", str(tmp_path / "r")], capsys)
    assert rc == 2 and "sm_86 is served by both" in err
    rc, err = run_export(["triton", str(a), str(c), "--repo", str(tmp_path / "r")], capsys)
    assert rc == 2 and "is not the same model" in err and "batch profile" in err


def test_profile_above_one_and_unbatched_outputs_keep_full_dims(make_tiny_engine, tmp_path):
    """A profile 2:4:8 cannot take Triton's batches of 1; outputs that do not follow the batch (NMS rows) cannot
    be split by request: both give max_batch_size 0 with a variable batch axis."""
    above = bundle.load(make_tiny_engine(tmp_path / "above.engine", batch="2:4:8"))
    config = text_format.Parse(triton.config_text([above], "above"), model_config_pb2.ModelConfig())
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [-1, 3, 16, 16]
    meta = dict(above.meta, batch={"min": 1, "opt": 4, "max": 8})
    meta["outputs"] = [dict(meta["outputs"][0], batched=False)]
    unbatched = bundle.Bundle(above.path, above.data, meta)
    config = text_format.Parse(triton.config_text([unbatched], "rows"), model_config_pb2.ModelConfig())
    assert config.max_batch_size == 0 and list(config.output[0].dims) == [-1, 8, 16, 16]


def test_plugin_engines_are_noted(tiny):
    """Plugins recorded in the metadata: AOT ones need nothing, Python ones are named with the way out."""
    b = bundle.load(tiny)
    meta = dict(b.meta, plugins=[{"name": "yolo_decode", "version": "1", "namespace": "trtx", "aot": True},
                                 {"name": "nms", "version": "1", "namespace": "trtx"}])  # fmt: skip
    with_plugins = bundle.Bundle(b.path, b.data, meta)
    config = text_format.Parse(triton.config_text([with_plugins], "p"), model_config_pb2.ModelConfig())
    note = config.parameters["trtx_plugins"].string_value
    assert "trtx::yolo_decode v1 compiled into the plan (AOT)" in note
    assert "trtx::nms v1: Python IPluginV3" in note and "docs/plugins.md" in note
    assert any("trtx::nms" in w for w in with_plugins.warnings(triton.SERVER))


# ---- DeepStream -------------------------------------------------------------------------------------------------
def test_deepstream_config_matches_the_engine(engines, tmp_path, capsys):
    engine = engines["yolov5s"]
    meta = meta_of(engine)
    out = tmp_path / "ds"
    rc, err = run_export(["deepstream", str(engine), "-o", str(out)], capsys)
    assert rc == 0, err
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(out / "config_infer_yolov5s.txt")
    prop, attrs = parser["property"], parser["class-attrs-all"]
    det, post = meta["detector"], meta["yolov5"]["postprocess"]
    assert (out / prop["model-engine-file"]).resolve() == engine.resolve()
    assert prop["network-type"] == "0" and prop["network-mode"] == "0"  # fp32
    assert int(prop["num-detected-classes"]) == det["num_classes"] == meta["yolov5"]["num_classes"] == 80
    assert (
        prop["output-blob-names"].split(";") == [o["name"] for o in meta["outputs"]] == ["boxes", "scores", "classes"]
    )
    assert prop["cluster-mode"] == "2" and post["nms"] == "after-engine"  # nvinfer's NMS: the engine has none
    assert float(attrs["nms-iou-threshold"]) == post["iou"] and float(attrs["pre-cluster-threshold"]) == post["conf"]
    assert int(attrs["topk"]) == post["max_det"]
    assert prop["infer-dims"] == "3;320;320" and int(prop["batch-size"]) == meta["batch"]["max"] == 8
    assert float(prop["net-scale-factor"]) == 1 / 255 and prop["model-color-format"] == "0"  # RGB
    assert prop["maintain-aspect-ratio"] == prop["symmetric-padding"] == "1"  # centred letterbox
    labels = (out / prop["labelfile-path"]).read_text().splitlines()
    assert labels == meta["yolov5"]["names"] and labels[0] == "person"
    assert "parse-bbox-func-name" not in prop  # commented out until a parser is named


def test_deepstream_parser_flags_and_refusals(engines, tmp_path, capsys):
    out = tmp_path / "ds"
    argv = ["deepstream", str(engines["yolov5s"]), "-o", str(out), "--name", "y"]
    rc, _ = run_export([*argv, "--parse-func", "ParseYolo", "--custom-lib", "/opt/lib/libyolo.so"], capsys)
    prop = configparser.ConfigParser(interpolation=None)
    prop.read(out / "config_infer_y.txt")
    assert rc == 0 and prop["property"]["parse-bbox-func-name"] == "ParseYolo"
    assert prop["property"]["custom-lib-path"] == "/opt/lib/libyolo.so"
    rc, err = run_export([*argv, "--parse-func", "ParseYolo"], capsys)
    assert rc == 2 and "go together" in err
    rc, err = run_export(["deepstream", str(engines["resnet50"]), "-o", str(out)], capsys)
    assert rc == 2 and "no 'detector' section (netdef 'resnet')" in err
    (out / "config_infer_mine.txt").write_text("[property]\n")
    rc, err = run_export(["deepstream", str(engines["yolov5s"]), "-o", str(out), "--name", "mine"], capsys)
    assert rc == 2 and "was not written by trtx export deepstream" in err
    assert (out / "config_infer_mine.txt").read_text() == "[property]\n"


def test_docs_client_example_compiles_against_the_installed_apis():
    """docs/deploy.md's client (never run against a server here): it compiles, and the tritonclient and trtx names
    it calls exist."""
    import tritonclient.grpc as grpcclient

    from trtx import letterbox, nms

    text = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    compile(blocks[0], "docs/deploy.md", "exec")
    used = set(re.findall(r"(grpcclient|letterbox|nms)\.(\w+)\(", blocks[0]))
    assert used == {("grpcclient", "InferenceServerClient"), ("grpcclient", "InferInput"),
                    ("grpcclient", "InferRequestedOutput"), ("letterbox", "letterbox_batch"),
                    ("nms", "non_max_suppression"), ("letterbox", "scale_boxes")}  # fmt: skip
    modules = {"grpcclient": grpcclient, "letterbox": letterbox, "nms": nms}
    assert all(callable(getattr(modules[m], name, None)) for m, name in used)
