"""The retinaface_decode plugin on the CPU: NVRTC compilation for every architecture, the kernel's signature and
prior layout, fields and shape rule, and its torch reference against biubug6's PriorBox / decode / softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netdefs.retinaface import priors as rf
from netdefs.retinaface import source
from plugins import compiler
from plugins import retinaface_decode as rd
from plugins.core import PluginError

ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_120")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRTX_KERNEL_CACHE", str(tmp_path / "kernel-cache"))
    compiler._memory.clear()
    yield tmp_path / "kernel-cache"
    compiler._memory.clear()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_kernel_compiles_for_every_architecture(cache, dtype):
    for arch in ARCHS:
        compiled = rd.KERNEL[dtype].compile(arch, use_cache=False)
        assert compiled.kind == "cubin" and compiled.image[:4] == b"\x7fELF", arch


def test_kernel_signature_and_prior_struct():
    names = [n for n, _ in rd.KERNEL["float32"].signature]
    codes = dict(rd.KERNEL["float32"].signature)
    assert names[:6] == ["loc", "conf", "landms", "num", "dets", "landmarks"]
    assert codes["layout"] == "struct:RetinaPriors" and codes["max_det"] == "int32"
    assert rd.PRIORS_DTYPE.itemsize == 4 * (1 + 5 * rd.MAX_LEVELS + rd.MAX_SIZES)  # no padding: all 4-byte ints


def emulate_priors(layout: np.ndarray, priors: int, height: int, width: int) -> np.ndarray:
    """The kernel's prior computation (retinaface_decode.cu) for every prior index, in numpy."""
    p = layout[0]
    out = np.empty((priors, 4), np.float32)
    for a in range(priors):
        level = 0
        while level + 1 < p["levels"] and a >= p["end"][level]:
            level += 1
        local = a - (p["end"][level - 1] if level else 0)
        k, cell = local % p["sizes"][level], local // p["sizes"][level]
        i, j = divmod(cell, p["cols"][level])
        step, size = int(p["step"][level]), int(p["min_size"][p["first"][level] + k])
        out[a] = ((j + 0.5) * step / width, (i + 0.5) * step / height, size / width, size / height)
    return out


@pytest.mark.parametrize("size", [(120, 200), (75, 333)])
def test_kernel_prior_layout_gives_priorbox(size):
    plugin = rd.RetinafaceDecode(height=size[0], width=size[1])
    assert plugin.num_priors == rf.num_priors(*size)
    got = emulate_priors(plugin.layout(), plugin.num_priors, *size)
    assert np.array_equal(got, rf.prior_boxes(*size))
    priors, level = plugin.priors()
    assert torch.equal(priors, torch.from_numpy(rf.prior_boxes(*size)))
    assert np.array_equal(level.numpy(), rf.prior_levels(*size))


def test_reference_equals_biubug6_decode_and_softmax():
    h, w, batch = 120, 200, 3
    a = rf.num_priors(h, w)
    g = torch.Generator().manual_seed(0)
    loc, landms = torch.randn(batch, a, 4, generator=g), torch.randn(batch, a, 10, generator=g)
    conf = torch.randn(batch, a, 2, generator=g) * 2
    conf[..., 1] -= torch.arange(batch)[:, None].float()  # fewer faces in later images
    num, dets, landmarks = rd.reference([loc, conf, landms], height=h, width=w, conf_threshold=0.6, max_det=a)
    m = source.biubug6()
    priors = torch.from_numpy(rf.prior_boxes(h, w))
    scale = torch.tensor([w, h] * 5, dtype=torch.float32)
    scores = torch.softmax(conf, -1)[..., 1]
    for b in range(batch):
        keep = torch.nonzero(scores[b] > 0.6).reshape(-1)
        assert int(num[b]) == len(keep) > 0
        boxes = m.decode(loc[b], priors, rf.VARIANCE) * scale[:4]
        rows = dets[b, : len(keep)]
        assert torch.equal(rows[:, 7], keep.float()) and torch.equal(rows[:, 4], scores[b, keep])
        corners = torch.cat([rows[:, :2] - rows[:, 2:4] / 2, rows[:, :2] + rows[:, 2:4] / 2], 1)
        torch.testing.assert_close(corners, boxes[keep], rtol=1e-6, atol=1e-4)
        assert torch.equal(rows[:, 6], torch.from_numpy(rf.prior_levels(h, w)[keep.numpy()]).float())
        assert (dets[b, len(keep) :] == 0).all()
        assert torch.equal(landmarks[b], m.decode_landm(landms[b], priors, rf.VARIANCE) * scale)
    assert num.tolist() == sorted(num.tolist(), reverse=True)


def test_reference_counts_past_max_det_and_takes_fp16():
    h, w = 64, 64
    a = rf.num_priors(h, w)
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(2, a, n, generator=g) for n in (4, 2, 10)]
    num, dets, _ = rd.reference(inputs, height=h, width=w, conf_threshold=0.1, max_det=5)
    full, _, _ = rd.reference(inputs, height=h, width=w, conf_threshold=0.1, max_det=a)
    assert torch.equal(num, full) and (num > 5).all() and dets.shape == (2, 5, 8)
    half = [t.half() for t in inputs]
    ref16 = rd.reference(half, height=h, width=w, conf_threshold=0.1, max_det=a)
    ref32 = rd.reference([t.float() for t in half], height=h, width=w, conf_threshold=0.1, max_det=a)
    assert all(torch.equal(x, y) for x, y in zip(ref16, ref32))


def test_fields_and_shape_rule_name_the_problem():
    plugin = rd.RetinafaceDecode(height=640, width=640)
    a = 16800
    assert plugin.concrete_shapes([(4, a, 4), (4, a, 2), (4, a, 10)]) == [(4,), (4, 5000, 8), (4, a, 10)]
    with pytest.raises(PluginError, match="a 640x640 input has 16800"):
        plugin.output_shapes((1, 100, 4), (1, 100, 2), (1, 100, 10))
    with pytest.raises(PluginError, match=r"conf must be \[B, priors, 2\]"):
        plugin.output_shapes((1, a, 4), (1, a, 3), (1, a, 10))
    with pytest.raises(PluginError, match="min_sizes"):
        rd.RetinafaceDecode(height=640, width=640, min_sizes=(16, 32, 64))
    with pytest.raises(PluginError, match="required"):
        rd.RetinafaceDecode(height=640)
    with pytest.raises(PluginError, match="same_as|is float16 but loc is float32"):
        plugin.check_dtypes(["float32", "float16", "float32"])
    clone = rd.RetinafaceDecode.from_field_collection(_fields(plugin))
    assert clone == plugin


def _fields(plugin):
    class Field:
        def __init__(self, name, data):
            self.name, self.data = name, data

    return [Field(name, f.to_array(plugin.values()[name])) for name, f in plugin.fields.items()]
