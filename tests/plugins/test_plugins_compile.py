"""NVRTC compilation, the kernel cache and argument packing -- all on the CPU, without a CUDA driver."""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from plugins import __main__ as cli
from plugins import compiler, kernel
from plugins.kernel import Kernel, LaunchError, pack_arguments, parse_signature

ROOT = Path(__file__).resolve().parents[2]
SIX_ARCHS = "sm_75,sm_80,sm_86,sm_89,sm_90,sm_120"
AXPY = """
#include "trtx.cuh"
extern "C" __global__ void axpy(float* y, const float* x, float a, int n) {
    const long long i = global_index();
    if (i < n) y[i] += a * x[i];
}
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "kernel-cache"
    monkeypatch.setenv("TRTX_KERNEL_CACHE", str(path))
    compiler._memory.clear()
    yield path
    compiler._memory.clear()


def test_every_kernel_compiles_for_the_six_architectures(cache, capsys):
    assert cli.main(["compile", "--arch", SIX_ARCHS]) == 0
    out = capsys.readouterr().out
    # at least swish x2 dtypes, yolo_decode x2 dtypes, nms (3 kernels, one module): 5 modules x 6 archs
    modules = len(cli._units(kernel.ALL_KERNELS))
    assert modules >= 5 and f"{6 * modules}/{6 * modules} compiled" in out, out
    cubins = sorted(cache.rglob("*.cubin"))
    assert len(cubins) == 6 * modules
    assert all(p.read_bytes()[:4] == b"\x7fELF" for p in cubins)
    assert not list(cache.rglob("*.tmp")), "atomic writes leave no temporary files"
    for arch in SIX_ARCHS.split(","):
        assert f"ok   {arch:8} plugins/ops/yolo_decode.cu" in out
    # a second run is served by the disk cache
    compiler._memory.clear()
    assert cli.main(["compile", "--arch", SIX_ARCHS]) == 0
    assert capsys.readouterr().out.count("(cache)") == 6 * modules


def test_compile_cli_rejects_an_unknown_architecture(capsys):
    assert cli.main(["compile", "--arch", "sm_50"]) == 2
    err = capsys.readouterr().err
    assert "sm_50" in err and "sm_75" in err  # says what NVRTC supports


def test_compile_cli_fails_on_a_broken_kernel(tmp_path):
    (tmp_path / "broken_kernels.py").write_text(
        textwrap.dedent(
            """
            from plugins.kernel import Kernel
            BROKEN = Kernel('extern "C" __global__ void broken(float* y) {\\n    y[0] = undefined_name;\\n}\\n',
                            "broken")
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}", "TRTX_KERNEL_CACHE": str(tmp_path / "c")}
    proc = subprocess.run(
        [sys.executable, "-m", "plugins", "--module", "broken_kernels", "compile", "--arch", "sm_90"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL sm_90" in proc.stderr
    assert "broken.cu:2: error" in proc.stderr and "y[0] = undefined_name;" in proc.stderr
    assert "ok   sm_90    plugins/ops/nms.cu" in proc.stdout  # the good kernels still compiled


def test_compile_error_names_file_line_and_source(tmp_path, cache):
    source = tmp_path / "bad.cu"
    source.write_text('#include "trtx.cuh"\nextern "C" __global__ void bad(float* y) {\n    y[0] = to_flot(1.0f);\n}\n')
    with pytest.raises(compiler.CompileError) as info:
        Kernel(source, "bad", _register=False).compile("sm_86")
    msg = str(info.value)
    assert f"{source}:3: error" in msg
    assert "3 |     y[0] = to_flot(1.0f);" in msg
    assert "--- NVRTC log ---" in msg and "to_flot" in msg.split("--- NVRTC log ---")[1]


def test_cache_key_covers_source_arch_options_and_nvrtc_version(cache, monkeypatch):
    k = Kernel(AXPY, "axpy", _register=False)
    first = k.compile("sm_80")
    assert not first.cached and first.kind == "cubin" and first.image[:4] == b"\x7fELF"
    compiler._memory.clear()
    again = k.compile("sm_80")
    assert again.cached and again.image == first.image and again.key == first.key
    assert k.compile("sm_86").key != first.key
    assert Kernel(AXPY, "axpy", options=("--fmad=false",), _register=False).compile("sm_80").key != first.key
    assert Kernel(AXPY + "\n", "axpy", _register=False).compile("sm_80").key != first.key
    headers = compiler._headers(None)
    base = compiler.cache_key(AXPY, "sm_80", ("-x",), headers, "f.cu")
    assert compiler.cache_key(AXPY, "sm_80", ("-x",), headers, "f.cu") == base
    assert compiler.cache_key(AXPY, "sm_80", ("-x",), {**headers, "trtx.cuh": "changed"}, "f.cu") != base
    monkeypatch.setattr(compiler, "nvrtc_version", lambda: (99, 1))
    assert compiler.cache_key(AXPY, "sm_80", ("-x",), headers, "f.cu") != base


def test_ptx_target(cache):
    result = Kernel(AXPY, "axpy", _register=False).compile("compute_90")
    assert result.kind == "ptx" and b".entry axpy" in result.image and result.image.endswith(b"\0")


def _compile_in_process(cache_path: str) -> bytes:
    os.environ["TRTX_KERNEL_CACHE"] = cache_path
    from plugins.kernel import Kernel

    return Kernel(AXPY, "axpy", _register=False).compile("sm_89").image


def test_concurrent_builds_share_the_cache_safely(tmp_path):
    cache_path = str(tmp_path / "shared")
    with ProcessPoolExecutor(4) as pool:
        images = list(pool.map(_compile_in_process, [cache_path] * 4))
    files = list(Path(cache_path).rglob("*.cubin"))
    assert len(files) == 1 and not list(Path(cache_path).rglob("*.tmp"))
    assert all(img == files[0].read_bytes() for img in images)


def test_architecture_of_a_device():
    assert compiler.arch_for_capability((9, 0)) == "sm_90"
    assert compiler.arch_for_capability((8, 6)) == "sm_86"
    newest = max(compiler.supported_archs())
    assert compiler.arch_for_capability((99, 9)) == f"compute_{newest}"  # PTX for a device newer than NVRTC
    assert compiler.normalize_arch(90) == compiler.normalize_arch("sm90") == "sm_90"


def test_signature_parsing():
    src = (
        'extern "C" __global__ void __launch_bounds__(256) k(const float* __restrict__ a, int n,\n'
        "  unsigned long long m, double d, S s, trtx_half* h) {}"
    )
    assert parse_signature(src, "k") == [
        ("a", "ptr"),
        ("n", "int32"),
        ("m", "uint64"),
        ("d", "float64"),
        ("s", "struct:S"),
        ("h", "ptr"),
    ]
    assert parse_signature(src, "other") is None
    with pytest.raises(LaunchError, match="signature="):
        _ = Kernel("__global__ void k(int n) {}", "k", _register=False).signature  # no extern "C"


def _slots(params, addresses, buffer):
    raw, base = buffer.raw, ctypes.addressof(buffer)
    table = struct.unpack_from(f"<{len(addresses)}Q", raw, params - base)
    assert list(table) == addresses  # kernelParams points at the parameters' addresses
    return [raw[a - base : a - base + 8] for a in addresses]


def test_argument_packing():
    params = parse_signature(AXPY, "axpy")
    packed = pack_arguments(params, [0x1000, None, 2.5, 7], "axpy")
    y, x, a, n = _slots(*packed)
    addresses = packed[1]
    assert int.from_bytes(y, "little") == 0x1000 and int.from_bytes(x, "little") == 0
    assert np.frombuffer(a[:4], np.float32)[0] == 2.5 and np.frombuffer(n[:4], np.int32)[0] == 7
    assert [a - addresses[0] for a in addresses] == [0, 8, 16, 24]
    (big,) = _slots(*pack_arguments([("m", "uint64")], [2**64 - 1], "k"))
    assert big == b"\xff" * 8
    (h,) = _slots(*pack_arguments([("f", "float32")], [np.float32(0.1)], "k"))
    assert np.frombuffer(h[:4], np.float32)[0] == np.float32(0.1)
    with pytest.raises(LaunchError, match=r"takes 4 arguments, got 3"):
        pack_arguments(params, [0, 0, 1.0], "axpy")
    with pytest.raises(LaunchError, match=r"'n' = 4294967296 does not fit int32"):
        pack_arguments(params, [0, 0, 1.0, 2**32], "axpy")
    with pytest.raises(LaunchError, match=r"'n' is int32, got float 1.5"):
        pack_arguments(params, [0, 0, 1.0, 1.5], "axpy")
    with pytest.raises(LaunchError, match=r"'a' = 1e\+39 overflows float32"):
        pack_arguments(params, [0, 0, 1e39, 1], "axpy")
    with pytest.raises(LaunchError, match=r"argument 'y': tensor is on cpu"):
        pack_arguments(params, [torch.zeros(3), 0, 1.0, 3], "axpy")
    with pytest.raises(LaunchError, match="passed by value"):
        pack_arguments([("s", "struct:S")], [3], "k")
    blob = np.arange(5, dtype=np.float32)
    _, addresses, buffer = pack_arguments([("s", "struct:S"), ("n", "int32")], [blob, 3], "k")
    assert buffer.raw[:20] == blob.tobytes() and addresses[1] - addresses[0] == 24


def test_dtype_variants():
    k = Kernel(ROOT / "plugins" / "ops" / "swish.cu", "swish", dtypes=("float32", "float16"), _register=False)
    assert k["float16"].defines == {"scalar_t": "trtx_half"} and k["float32"].defines == {"scalar_t": "float"}
    assert k["float16"] is k["float16"]
    with pytest.raises(LaunchError, match="no int8 variant"):
        k["int8"]
    with pytest.raises(LaunchError, match="launch kernel\\[dtype\\]"):
        k.launch(1, 1, [])


def test_no_torch_tensorrt_or_libcuda_needed_to_import_and_compile(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        import plugins.core, plugins.ops.yolo_decode, plugins.ops.nms, plugins.ops.swish, plugins.kernel
        assert "torch" not in sys.modules, "torch imported"
        assert not [m for m in sys.modules if m.startswith("tensorrt")], "TensorRT imported"
        print(plugins.ops.yolo_decode.KERNEL["float16"].compile("sm_90").kind)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRTX_KERNEL_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cubin"


def test_cuda_errors_are_named():
    drv = kernel.driver()
    with pytest.raises(kernel.CudaError, match=r"cuMemAlloc failed: CUDA_ERROR_INVALID_VALUE"):
        kernel.check((drv.CUresult.CUDA_ERROR_INVALID_VALUE,), "cuMemAlloc")
    assert kernel.check((drv.CUresult.CUDA_SUCCESS, 5), "x") == 5


def test_compiling_leaves_python_constants_alone(cache):
    # NVRTC's empty log is one byte; writing it into ``b" " * 1`` (CPython's shared one-byte string) once
    # turned every b" " in the process into b"\0" and broke the .wts writer in later tests.
    space = bytes([32])
    compiler.compile_source(AXPY, arch="sm_90", filename="axpy.cu", use_cache=False)
    assert b" " == space and b" ".join([b"a", b"b"]) == b"a b"
