"""Fleet builds: engines for chosen GPU archs from a CPU machine (TensorRT-RTX's compute-capability targets).

Built with the real TensorRT-RTX builder on small networks; yolov5s and resnet50 are built for four archs in
tests/test_export.py, whose engines are exported from.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from trtx import doctor, runtime
from trtx.build import BuildOptions, GpuArchError, build_serialized, metadata, parse_gpu_archs, resolve_gpu_archs
from trtx.net import Net
from trtx_base import backend, cudainfo

TARGETS = backend.get().build_targets


def tiny_net(batch: int = -1) -> Net:
    rng = np.random.default_rng(0)
    net = Net({"c.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "c.bias": np.ones(8, np.float32)})
    y = net.conv(net.input("x", (batch, 3, 16, 16)), "c", 3, padding=1).get_output(0)
    net.output(net.network.add_activation(y, net.trt.ActivationType.RELU).get_output(0), "y")
    return net


def test_build_targets_are_the_backends_compute_capabilities():
    """The list comes from TensorRT-RTX's own ComputeCapability enum (SM75 ... SM121), in capability order."""
    trt = backend.get().trt
    expected = sorted(m.value for n, m in trt.ComputeCapability.__members__.items() if n.startswith("SM"))
    assert [int(a[3:]) for a in TARGETS] == expected
    assert {"sm_80", "sm_86", "sm_89", "sm_120"} <= set(TARGETS)
    assert set(backend.get().default_build_targets) <= set(TARGETS)


@pytest.mark.parametrize(
    ("text", "archs"),
    [("sm_86,sm_89,sm_120", ("sm_86", "sm_89", "sm_120")), ("120, 8.6,sm86,sm_86", ("sm_86", "sm_120")),
     ("SM_80", ("sm_80",))],
)  # fmt: skip
def test_parse_gpu_archs(text, archs):
    assert parse_gpu_archs(text, TARGETS) == archs


@pytest.mark.parametrize("text", ["sm_90", "sm_86,sm_70", "volta", "", "sm_"])
def test_unknown_arch_is_one_line_listing_the_supported(text):
    with pytest.raises(GpuArchError) as info:
        resolve_gpu_archs(text)
    message = str(info.value)
    assert "\n" not in message and message.startswith("--gpu-arch")
    assert message.endswith("supported: " + ", ".join(TARGETS))


def test_a_backend_without_targets_refuses_with_its_reason():
    """Full TensorRT builds for the GPU it runs on: no targets, and the refusal is the backend's own reason."""
    with pytest.raises(GpuArchError, match="builds engines for the GPU it runs on"):
        parse_gpu_archs("sm_86", (), "tensorrt 10.9 builds engines for the GPU it runs on")


def test_current_without_a_gpu_says_so():
    devices, _ = cudainfo.devices()
    if devices:
        pytest.skip("this machine has a GPU")
    with pytest.raises(GpuArchError, match="this machine has no GPU") as info:
        resolve_gpu_archs("current")
    assert "\n" not in str(info.value) and "sm_86" in str(info.value)


@pytest.mark.gpu
def test_current_is_this_machines_gpu_or_a_one_line_refusal():
    """With a GPU: its arch where the backend targets it (RTX GPUs), else the one-line list (H100/H200: sm_90)."""
    devices, _ = cudainfo.devices()
    archs = sorted({d.arch for d in devices}, key=backend.arch_capability)
    if all(a in TARGETS for a in archs):
        assert resolve_gpu_archs("current") == tuple(archs)
    else:
        with pytest.raises(GpuArchError) as info:
            resolve_gpu_archs("current")
        assert "cannot build for this machine's" in str(info.value) and ", ".join(TARGETS) in str(info.value)


def test_targets_reach_the_builder_config():
    """What _set_gpu_archs writes is what IBuilderConfig reports back (index by index)."""
    from trtx.build import _set_gpu_archs

    net = tiny_net()
    config = net.builder.create_builder_config()
    _set_gpu_archs(net.trt, config, ("sm_80", "sm_86", "sm_120"))
    got = [config.get_compute_capability(i) for i in range(config.num_compute_capabilities)]
    cc = net.trt.ComputeCapability
    assert got == [cc.SM80, cc.SM86, cc.SM120]


@pytest.fixture(scope="module")
def plans() -> dict[tuple[str, ...], bytes]:
    """The tiny network built for several target sets (each a real TensorRT-RTX build, ~0.1 s)."""
    sets = [(), ("sm_86",), ("sm_120",), ("sm_80", "sm_86", "sm_89", "sm_120"), ("sm_75",)]
    return {s: build_serialized(tiny_net(), BuildOptions(gpu_archs=s, progress=False)) for s in sets}


def test_one_engine_serves_the_whole_set(plans):
    """TensorRT-RTX makes one engine for a set of archs, and it is about the size of a single-arch one: the AOT
    build compiles no per-arch GPU code (kernels are generated for the GPU at load time). A backend needing one
    engine per arch would have to grow with the set or refuse it."""
    assert backend.get().multi_target_engines
    single, four = len(plans[("sm_86",)]), len(plans[("sm_80", "sm_86", "sm_89", "sm_120")])
    assert four < 1.1 * single
    assert plans[("sm_75",)] != plans[("sm_86",)]  # the targets change the plan (Turing is a separate option)


def test_metadata_names_the_targets(make_tiny_engine, tmp_path):
    engine = make_tiny_engine(tmp_path / "t.engine", gpu_archs=resolve_gpu_archs("sm_89,sm_86"))
    gpu = json.loads((tmp_path / "t.engine.json").read_text())["gpu"]
    assert gpu == {"archs": ["sm_86", "sm_89"], "chosen_by": "--gpu-arch", "one_engine_for_all": True}
    assert engine.stat().st_size > 10_000

    default = metadata(tiny_net(), BuildOptions(progress=False), netdef="tiny")["gpu"]
    assert default["archs"] == list(backend.get().default_build_targets) and default["chosen_by"].endswith("default")


def test_outputs_record_whether_they_follow_the_batch():
    """Axis 0 of an elementwise output follows the batch; the rows an NMS layer keeps do not (data-dependent).
    Read by giving the dynamic input concrete batch sizes; its shape is restored afterwards."""
    from trtx.build import io_description

    net = Net(None, name="nms")
    boxes = net.input("boxes", (-1, 10, 4))
    scores = net.input("scores", (-1, 10, 1))
    limit = net.constant(np.array(5, np.int32), "limit", np.int32)
    nms = net.network.add_nms(boxes, scores, limit)
    net.output(nms.get_output(0), "kept", np.int32)
    net.output(net.network.add_activation(scores, net.trt.ActivationType.SIGMOID).get_output(0), "prob")
    io = io_description(net)
    assert {o["name"]: o["batched"] for o in io["outputs"]} == {"kept": False, "prob": True}
    assert [i["shape"] for i in io["inputs"]] == [[-1, 10, 4], [-1, 10, 1]]
    fixed = io_description(tiny_net(batch=2))
    assert fixed["outputs"][0]["batched"] is None  # no dynamic input: nothing to tell by


def test_doctor_lists_the_targets():
    text, ok = doctor.report()
    line = next(r for r in text.splitlines() if r.startswith("GPU targets"))
    assert ok and all(a in line.split() for a in TARGETS) and "one engine serves the whole set" in line


def test_runtime_and_export_import_no_torch(make_tiny_engine, tmp_path):
    """Deploy-time code: the runtime and the export commands (run for real on an engine) never import torch."""
    engine = make_tiny_engine(tmp_path / "t.engine")
    code = (
        "import sys, trtx.runtime\n"
        "from trtx.__main__ import main\n"
        f"assert main(['export', 'triton', {str(engine)!r}, '--repo', {str(tmp_path / 'repo')!r}]) == 0\n"
        f"assert main(['export', 'deepstream', {str(engine)!r}, '-o', {str(tmp_path)!r}]) == 2  # not a detector\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'cv2') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "repo" / "t" / "config.pbtxt").is_file()


@pytest.mark.gpu
def test_engine_for_other_archs_is_refused_in_one_line(make_tiny_engine, tmp_path):
    """On a GPU the engine was not built for, the runtime names both before TensorRT is asked."""
    devices, _ = cudainfo.devices()
    other = next(a for a in TARGETS if a != devices[0].arch)
    engine = make_tiny_engine(tmp_path / "o.engine", gpu_archs=(other,))
    with pytest.raises(runtime.EngineError) as info:
        runtime.Engine(engine)
    message = str(info.value)
    assert "\n" not in message and f"was built for {other}" in message and devices[0].arch in message
