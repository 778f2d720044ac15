"""wts: bit-exact round trips, tensorrtx compatibility (both directions), strict errors, WeightMap."""

from __future__ import annotations

import os
import re
import struct

import numpy as np
import pytest

import wts
from wts import WtsFormatError


@pytest.fixture(params=["c", "numpy"])
def fast_path(request, monkeypatch):
    """The text format's fast paths both ways: the C extension wts._fasthex and numpy + binascii."""
    from wts import text

    if request.param == "numpy":
        monkeypatch.setattr(text, "_decode_records", None)
        monkeypatch.setattr(text, "_encode_records", None)
    elif text._decode_records is None:
        pytest.skip("wts._fasthex is not built (no C compiler at install): the numpy path is tested")
    return request.param


SPECIAL_BITS = [
    0x00000000,  # +0
    0x80000000,  # -0
    0x7F800000,  # +inf
    0xFF800000,  # -inf
    0x7FC00000,  # quiet NaN
    0x7FC12345,  # quiet NaN with payload
    0xFFC00001,  # negative quiet NaN with payload
    0x7F800001,  # signaling NaN
    0xFFA00000,  # negative signaling NaN
    0x00000001,  # smallest subnormal
    0x807FFFFF,  # largest negative subnormal
    0x00800000,  # smallest normal
    0x7F7FFFFF,  # largest finite
    0x3F800000,  # 1.0
]


def bits(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).reshape(-1).view(np.uint32)


def tensorrtx_write(path, state: dict, first_sep: str = "") -> None:
    """tensorrtx's gen_wts.py writer: one struct.pack per value (``first_sep=" "`` gives yolov5's two spaces)."""
    with open(path, "w") as f:
        f.write(f"{len(state)}\n")
        for k, v in state.items():
            vr = np.asarray(v, dtype=np.float32).reshape(-1)
            f.write(f"{k} {len(vr)}{first_sep if len(vr) else ''}")
            for vv in vr:
                f.write(" ")
                f.write(struct.pack(">f", float(vv)).hex())
            f.write("\n")


def random_state(seed: int, shapes) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"layer{i}.weight": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}


SHAPES = [(), (1,), (3,), (0,), (7, 5), (16, 3, 3, 3), (2, 1, 1, 1, 4), (70000,), (131073,)]


# ---- round trips ------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".wts", ".safetensors"])
def test_round_trip_is_bit_exact_for_special_values(fast_path, tmp_path, suffix):
    rng = np.random.default_rng(1)
    random_bits = rng.integers(0, 2**32, size=5000, dtype=np.uint64).astype(np.uint32)
    state = {
        "special": np.array(SPECIAL_BITS, dtype=np.uint32).view(np.float32),
        "random.bits": random_bits.view(np.float32),  # includes NaNs with arbitrary payloads
        **random_state(2, SHAPES),
    }
    path = tmp_path / f"m{suffix}"
    wts.save(state, path)
    loaded = wts.load(path)
    assert list(loaded) == list(state)
    for name, value in state.items():
        got = loaded[name]
        assert got.dtype == np.float32 and got.ndim == 1
        np.testing.assert_array_equal(bits(got), bits(value), err_msg=name)


def test_file_from_tensorrtx_writer_loads_to_identical_bits(fast_path, tmp_path):
    # struct.pack('>f', float(v)) quiets signaling NaNs, so the per-value writer gets quiet NaNs only
    quiet = [b for b in SPECIAL_BITS if not (0x7F800001 <= (b & 0x7FFFFFFF) < 0x7FC00000)]
    state = {"special": np.array(quiet, dtype=np.uint32).view(np.float32), **random_state(3, SHAPES[:7])}
    for sep in ("", " "):
        path = tmp_path / f"trtx{len(sep)}.wts"
        tensorrtx_write(path, state, first_sep=sep)
        loaded = wts.load(path)
        for name, value in state.items():
            np.testing.assert_array_equal(bits(loaded[name]), bits(value), err_msg=name)


def test_output_is_byte_identical_to_tensorrtx_writer(fast_path, tmp_path):
    state = random_state(4, SHAPES[:7])
    state["bn.num_batches_tracked"] = np.array(1234, dtype=np.int64)  # int buffers are written as float
    tensorrtx_write(tmp_path / "ref.wts", state)
    wts.save(state, tmp_path / "ours.wts")
    assert (tmp_path / "ours.wts").read_bytes() == (tmp_path / "ref.wts").read_bytes()


def test_reader_accepts_writer_variants(fast_path, tmp_path):
    text = (
        "4\r\n"
        "a 3  3f800000 0x40000000 0X1\r\n"  # two spaces, 0x prefixes, no zero padding
        "b 2 \t BF800000\t7fc00000   \r\n"  # tabs, upper case, trailing whitespace, CRLF
        "c 0\r\n"
        "d 1 0xffffffff\n"  # LF after CRLF lines
    )
    path = tmp_path / "v.wts"
    path.write_bytes(text.encode())
    loaded = wts.load(path)
    assert bits(loaded["a"]).tolist() == [0x3F800000, 0x40000000, 0x1]
    assert bits(loaded["b"]).tolist() == [0xBF800000, 0x7FC00000]
    assert loaded["c"].size == 0
    assert bits(loaded["d"]).tolist() == [0xFFFFFFFF]


def test_trailing_blank_lines_are_fine(tmp_path):
    path = tmp_path / "t.wts"
    path.write_text("1\nx 1 3f800000\n\n  \n")
    assert wts.load(path)["x"].tolist() == [1.0]


def test_save_converts_torch_tensors_and_dtypes(fast_path, tmp_path):
    torch = pytest.importorskip("torch")
    state = {"w": torch.arange(6, dtype=torch.float16).reshape(2, 3), "n": torch.tensor(7), "d": np.arange(3.0)}
    wts.save(state, tmp_path / "t.wts")
    loaded = wts.load(tmp_path / "t.wts")
    assert loaded["w"].tolist() == [0, 1, 2, 3, 4, 5] and loaded["n"].tolist() == [7] and loaded["d"].size == 3


@pytest.mark.parametrize("name", ["", "has space", "tab\tname", "new\nline"])
def test_save_rejects_unwritable_names(tmp_path, name):
    with pytest.raises(ValueError, match="name"):
        wts.save({name: np.zeros(1, np.float32)}, tmp_path / "t.wts")
    assert not any(tmp_path.iterdir())


def test_save_is_atomic(tmp_path):
    path = tmp_path / "t.wts"
    wts.save({"x": np.ones(3, np.float32)}, path)
    before = path.read_bytes()

    class Boom:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        wts.save({"x": np.ones(2, np.float32), "y": Boom()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.wts"]


# ---- strict errors ----------------------------------------------------------------------------------
BAD_FILES = {
    "empty": ("", 1, None, "empty file"),
    "only whitespace": ("\n \n", 1, None, "empty file"),
    "header not a number": ("two\nx 1 0\n", 1, None, "number of tensors"),
    "header count > lines": ("3\nx 1 00000000\ny 1 00000000\n", 4, None, "declares 3 tensors"),
    "header count > lines, blank end": ("3\nx 1 00000000\n\n\n", 3, None, "file ends after 1"),
    "header count, no tensors": ("2\n", 2, None, "file ends after 0"),
    "header count < lines": ("1\nx 1 00000000\ny 1 00000000\n", 3, "y", "declares 1 tensors"),
    "fewer values than count": ("1\nx 3 00000000 00000000\n", 2, "x", "count says 3 values but the line has 2"),
    "more values than count": ("1\nx 1 00000000 00000000\n", 2, "x", "count says 1 values but the line has 2"),
    "count 0 with values": ("1\nx 0 00000000\n", 2, "x", "count says 0 values"),
    "non-hex digit": ("1\nx 2 00000000 3f80000g\n", 2, "x", "value 2: token '3f80000g'"),
    "9 digits": ("1\nx 2 00000000 3f8000000\n", 2, "x", "value 2: token '3f8000000'"),
    "bare 0x": ("1\nx 1 0x\n", 2, "x", "value 1: token '0x'"),
    "0x with 9 digits": ("1\nx 1 0x123456789\n", 2, "x", "value 1"),
    "minus sign": ("1\nx 1 -3f800000\n", 2, "x", "value 1"),
    "truncated mid-line": ("1\nx 4 00000000 3f800000 3f8", 2, "x", "truncated"),
    "truncated mid-token": ("1\nx 2 00000000 3f8", 2, "x", "no final newline"),
    "truncated mid-token, 0x": ("1\nx 2 00000000 0x", 2, "x", "value 2"),
    "duplicate names": ("2\nx 1 00000000\nx 1 00000000\n", 3, "x", "duplicate tensor name (first on line 2)"),
    "absurd count": ("1\nx 4294967296 00000000\n", 2, "x", "absurd"),
    "huge count, few values": ("1\nx 4000000000 00000000\n", 2, "x", "count says 4000000000 values"),
    "count not a number": ("1\nx 1e3 00000000\n", 2, "x", "not a decimal number"),
    "negative count": ("1\nx -1 00000000\n", 2, "x", "not a decimal number"),
    "missing count": ("1\nx\n", 2, "x", "count is missing"),
    "blank line in the middle": ("2\nx 1 00000000\n\ny 1 00000000\n", 3, None, "empty line"),
    "NUL byte": ("1\nx 2 00000000 0\x001\n", 2, "x", "NUL"),
    "control character": ("1\nx 2 00000000 0\x1b1\n", 2, "x", "control character 0x1b"),
    "non-ASCII in a token": ("1\nx 2 00000000 3f\xc3\xa9\n", 2, "x", "value 2"),
    "bad utf-8 name": (b"1\n\xff\xfe 1 00000000\n", 2, None, "UTF-8"),
    "control char in name": ("1\nx\x01y 1 00000000\n", 2, None, "control"),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_defects_raise_wts_format_error_naming_file_line_tensor(fast_path, tmp_path, case):
    content, line, tensor, fragment = BAD_FILES[case]
    path = tmp_path / "bad.wts"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(WtsFormatError) as info:
        wts.load(path)
    err = info.value
    message = str(err)
    assert str(path) in message
    assert f"line {line}" in message and err.line == line
    assert err.tensor == tensor
    if tensor is not None:
        assert repr(tensor) in message
    assert fragment in message, message


def test_defect_deep_inside_a_large_tensor_is_located(fast_path, tmp_path):
    state = {"big": np.arange(200_000, dtype=np.float32), "after": np.ones(2, np.float32)}
    path = tmp_path / "m.wts"
    wts.save(state, path)
    data = bytearray(path.read_bytes())
    start = data.index(b"big 200000") + len(b"big 200000")
    pos = start + 9 * 150_000 + 3  # inside value 150001
    data[pos] = ord("z")
    path.write_bytes(bytes(data))
    with pytest.raises(WtsFormatError, match=r"line 2, tensor 'big': value 150001: token") as info:
        wts.load(path)
    assert info.value.line == 2


def test_absurd_count_does_not_allocate(tmp_path):
    path = tmp_path / "a.wts"
    path.write_text("1\nx 4294967295 " + "00000000 " * 10 + "\n")
    with pytest.raises(WtsFormatError, match="count says 4294967295 values but the line has 10"):
        wts.load(path)


def test_header_with_huge_declared_count(tmp_path):
    path = tmp_path / "h.wts"
    path.write_text("9999999999\nx 1 00000000\n")
    with pytest.raises(WtsFormatError, match="line 3: line 1 declares 9999999999 tensors"):
        wts.load(path)


# ---- safetensors --------------------------------------------------------------------------------------
def test_safetensors_interoperates_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    state = random_state(5, [(4, 3, 3), (8,), (0,)])
    state["nbt"] = np.array(3, dtype=np.int64)
    st.save_file(state, str(tmp_path / "theirs.safetensors"))
    loaded = wts.load(tmp_path / "theirs.safetensors")
    for name, value in state.items():
        np.testing.assert_array_equal(loaded[name], np.asarray(value, np.float32).reshape(-1))
    wts.save({k: v for k, v in state.items() if k != "nbt"}, tmp_path / "ours.safetensors")
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    for name, value in theirs.items():
        assert value.shape == state[name].shape and value.dtype == np.float32
        np.testing.assert_array_equal(value, state[name])


def test_safetensors_float32_load_is_zero_copy(tmp_path):
    wts.save({"x": np.arange(1024, dtype=np.float32)}, tmp_path / "z.safetensors")
    x = wts.load(tmp_path / "z.safetensors")["x"]
    assert not x.flags.owndata and not x.flags.writeable
    base = x
    while getattr(base, "base", None) is not None and not isinstance(base, memoryview):
        base = base.base
    assert "mmap" in type(base).__name__ or isinstance(base, memoryview)


def test_safetensors_other_dtypes_become_float32(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    values = torch.tensor([1.5, -2.25, 3.0e38, float("inf")])
    state = {"bf16": values.bfloat16(), "f16": values[:2].half(), "i64": torch.tensor([5]), "f64": values.double()}
    st.save_file(state, str(tmp_path / "d.safetensors"))
    loaded = wts.load(tmp_path / "d.safetensors")
    for name, value in state.items():
        np.testing.assert_array_equal(loaded[name], value.float().numpy(), err_msg=name)


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda b: b[:4], "too short"),
        (lambda b: (10**9).to_bytes(8, "little") + b[8:], "header length"),
        (lambda b: b[:8] + b"[" + b[9:], "JSON header"),
        (lambda b: b[:-4], "data_offsets"),
        (lambda b: b + b"\0\0\0\0", "cover"),
        (lambda b: b.replace(b'"F32"', b'"F99"'), "unsupported dtype"),
    ],
)
def test_safetensors_defects_raise_wts_format_error(tmp_path, mutate, fragment):
    path = tmp_path / "m.safetensors"
    wts.save({"a": np.ones(3, np.float32), "b": np.ones(2, np.float32)}, path)
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(WtsFormatError, match=re.escape(fragment)) as info:
        wts.load(path)
    assert str(path) in str(info.value)


# ---- WeightMap ----------------------------------------------------------------------------------------
def test_weightmap_tracks_reads_and_suggests_close_names(tmp_path):
    path = tmp_path / "m.wts"
    wts.save(
        {"model.0.conv.weight": np.ones(4), "model.0.bn.weight": np.ones(2), "model.1.conv.weight": np.ones(1)}, path
    )
    wm = wts.load(path)
    assert wm.path == os.fspath(path)
    assert wm.unused() == ["model.0.conv.weight", "model.0.bn.weight", "model.1.conv.weight"]
    assert "model.0.bn.weight" in wm and len(wm) == 3 and wm.unused() == list(wm)  # `in`/len mark nothing
    wm["model.0.conv.weight"]
    wm.peek("model.1.conv.weight")
    assert wm.unused() == ["model.0.bn.weight", "model.1.conv.weight"]
    with pytest.raises(KeyError) as info:
        wm["model.0.conv.wieght"]
    message = str(info.value)
    assert message.startswith("no weight 'model.0.conv.wieght'") and "model.0.conv.weight" in message
    assert str(path) in message


def test_weightmap_is_read_only(tmp_path):
    wts.save({"x": np.ones(3, np.float32)}, tmp_path / "m.wts")
    wm = wts.load(tmp_path / "m.wts")
    with pytest.raises(TypeError):
        wm["x"] = np.zeros(3)  # type: ignore[index]
    with pytest.raises(ValueError):
        wm["x"][0] = 5.0


def test_net_array_reports_the_weightmap_message(tmp_path):
    from trtx.net import Net, NetdefError

    wts.save({"conv.weight": np.ones(4, np.float32)}, tmp_path / "m.wts")
    net = Net(wts.load(tmp_path / "m.wts"), name="m")
    with pytest.raises(NetdefError, match="closest names: conv.weight"):
        net.array("conv.wieght")
    assert net.unused_weights() == ["conv.weight"]
    net.array("conv.weight", (1, 4))
    assert net.unused_weights() == []


def test_wts_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, wts; wts.WeightMap({}); assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


# ---- writer internals -----------------------------------------------------------------------------------
def test_background_writer_reports_write_errors():
    from wts.text import write_wts

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with open("/dev/full", "wb") as f, pytest.raises(OSError):
        write_wts([("x", np.ones(200_000, np.float32))], f, count=1)


def test_writer_output_is_the_same_into_memory_and_into_files(fast_path, tmp_path):
    import io

    from wts.text import write_wts

    state = random_state(6, [(150_000,), (3,), (0,)])
    buffer = io.BytesIO()
    seen = []
    write_wts(state.items(), buffer, count=len(state), progress=seen.append)
    with open(tmp_path / "f.wts", "wb") as f:
        write_wts(state.items(), f, count=len(state))
    assert buffer.getvalue() == (tmp_path / "f.wts").read_bytes()
    assert sum(seen) == 150_003


def test_fast_path_is_built_where_a_compiler_is():
    import shutil
    import sysconfig

    from wts import text

    compiler = shutil.which("cc") or shutil.which("gcc")
    headers = os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
    if compiler and headers:  # setup.py builds wts._fasthex; its build failing silently would cost 3x on reads
        assert text._decode_records is not None and text._encode_records is not None
