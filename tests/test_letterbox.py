"""trtx.letterbox: the CPU path equals ultralytics' letterbox + ToTensor; the fused GPU kernel compiles for sm_90
with NVRTC here and (on a GPU) equals the CPU path within 1/255."""

from __future__ import annotations

import numpy as np
import pytest

from trtx import letterbox as lb

SIZES = [(1080, 810), (720, 1280), (640, 640), (480, 640), (333, 517), (17, 1000), (2000, 31)]


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("dst", [(640, 640), (384, 640), (320, 256)])
def test_cpu_matches_yolov5_letterbox(hw, dst):
    aug = pytest.importorskip("yolov5.utils.augmentations")
    image = _image(*hw, seed=hw[0] * 7 + hw[1])
    expected, ratio, (dw, dh) = aug.letterbox(image, dst, auto=False)
    got, geometry = lb.letterbox(image, dst)
    np.testing.assert_array_equal(got, expected)
    assert geometry.r == ratio[0]
    batch, _ = lb.letterbox_batch([image, image[::-1].copy()], dst)
    tensor = np.ascontiguousarray(expected.transpose(2, 0, 1)[::-1]).astype(np.float32) / 255.0
    assert batch.shape == (2, 3, *dst) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], tensor)


def test_scale_boxes_matches_yolov5():
    torch = pytest.importorskip("torch")
    general = pytest.importorskip("yolov5.utils.general")
    rng = np.random.default_rng(0)
    boxes = np.sort(rng.uniform(-20, 660, (50, 2, 2)), axis=1).transpose(0, 2, 1).reshape(50, 4)
    boxes = boxes[:, [0, 1, 2, 3]].astype(np.float32)
    for src in [(1080, 810), (720, 1280)]:
        expected = general.scale_boxes((640, 640), torch.from_numpy(boxes.copy()), src).numpy()
        np.testing.assert_allclose(lb.scale_boxes(boxes, (640, 640), src), expected, rtol=0, atol=1e-4)


def test_center_crop_matches_yolov5_classify_transforms():
    torch = pytest.importorskip("torch")
    aug = pytest.importorskip("yolov5.utils.augmentations")
    image = _image(300, 500, 3)
    expected = aug.classify_transforms(224)(image).numpy()
    got = lb.center_crop_normalize([image], (224, 224), aug.IMAGENET_MEAN, aug.IMAGENET_STD)[0]
    assert torch is not None
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="BGR uint8 HWC"):
        lb.letterbox(np.zeros((10, 10), np.uint8), (32, 32))
    with pytest.raises(ValueError, match="BGR uint8 HWC"):
        lb.letterbox(np.zeros((10, 10, 3), np.float32), (32, 32))


def test_param_block_matches_the_kernel_struct():
    """PARAM_DTYPE mirrors struct LetterboxImage field by field (48 bytes, 8-aligned)."""
    assert lb.PARAM_DTYPE.itemsize == 48
    source = lb.KERNEL_PATH.read_text()
    assert "unsigned long long src;" in source and "48 bytes" in source
    params, geometry = lb.image_params([0x1000], [(1080, 810, 3)], None, (640, 640))
    assert params["src_pitch"][0] == 810 * 3 and geometry[0].new == (480, 640) and params["left"][0] == 80


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_kernel_compiles_for_sm90(dtype):
    """NVRTC on the CPU: the kernel compiles for the H100 (sm_90) and Ada/Blackwell targets."""
    pytest.importorskip("cuda.bindings")
    k = lb.kernel(dtype)
    for arch in ("sm_90", "sm_89"):
        compiled = k.compile(arch)
        assert compiled.kind == "cubin" and len(compiled.image) > 1000
    assert [name for name, _ in k.signature] == ["images", "dst", "batch", "dst_w", "dst_h", "pad_value"]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gpu_kernel_matches_opencv(dtype):
    """Several sizes in one batch of 4 (host images) and device-resident images: max diff <= 1/255."""
    import torch

    dst = (640, 640)
    for sizes in [SIZES[:4], SIZES[3:7], [(1080, 1920)] * 4]:
        images = [_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
        expected, _ = lb.letterbox_batch(images, dst)
        out = torch.full((len(images), 3, *dst), float("nan"), dtype=getattr(torch, dtype), device="cuda")
        lb.GpuLetterbox(dst, dtype)(images, out=out)
        torch.cuda.synchronize()
        got = out.float().cpu().numpy()
        assert np.isfinite(got).all()
        tol = 1 / 255 + (2e-3 if dtype == "float16" else 1e-6)
        assert np.abs(got - expected).max() <= tol
        device_images = [torch.from_numpy(im).cuda() for im in images]
        out2 = torch.full_like(out, float("nan"))
        lb.GpuLetterbox(dst, dtype)(device_images, out=out2)
        torch.cuda.synchronize()
        assert torch.equal(out2, out)


def _emulate_kernel(image: np.ndarray, dst: tuple[int, int]) -> np.ndarray:
    """letterbox.cu's arithmetic in numpy float32 (source_coord, bilinear, pad, RGB planes / 255)."""
    params, _ = lb.image_params([0], [image.shape], None, dst)
    return _emulate_params(params[0], image, dst)


def _emulate_params(p: np.void, image: np.ndarray, dst: tuple[int, int]) -> np.ndarray:
    f32 = np.float32

    def axis(n_dst: int, start: int, new: int, scale: float, size: int):
        d = np.arange(n_dst) - start
        f = (d.astype(f32) + f32(0.5)) * f32(scale) - f32(0.5)
        i = np.floor(f).astype(np.int64)
        a = (f - i.astype(f32)).astype(f32)
        a[i < 0], i[i < 0] = 0, 0
        hi = i >= size - 1
        a[hi], i[hi] = 0, size - 1
        inside = (d >= 0) & (d < new)
        return i, np.minimum(i + 1, size - 1), a, inside

    x0, x1, ax, in_x = axis(dst[1], p["left"], p["new_w"], p["scale_x"], p["src_w"])
    y0, y1, ay, in_y = axis(dst[0], p["top"], p["new_h"], p["scale_y"], p["src_h"])
    im = image.astype(f32)
    ax, ay = ax[None, :, None], ay[:, None, None]
    top = im[y0][:, x0] * (f32(1) - ax) + im[y0][:, x1] * ax
    bottom = im[y1][:, x0] * (f32(1) - ax) + im[y1][:, x1] * ax
    v = (top * (f32(1) - ay) + bottom * ay) * f32(1 / 255)
    v[~(in_y[:, None] & in_x[None, :])] = f32(114) * f32(1 / 255)
    return v.transpose(2, 0, 1)[::-1]


@pytest.mark.parametrize("hw", SIZES)
def test_kernel_arithmetic_matches_opencv(hw):
    """The kernel's coordinate and interpolation math (emulated in numpy float32) is within 1/255 of OpenCV."""
    image = _image(*hw, seed=5)
    for dst in [(640, 640), (384, 640)]:
        expected, _ = lb.letterbox_batch([image], dst)
        assert np.abs(_emulate_kernel(image, dst) - expected[0]).max() <= 1 / 255


class _FakeDevice:
    """A byte heap standing in for device memory: GpuLetterbox's host-side plumbing (staging, parameter block,
    pitches, output checks) runs unchanged on the CPU, and the launch is emulated from the parameter block."""

    BASE = 1 << 32

    def __init__(self, size: int = 64 << 20) -> None:
        self.heap = np.zeros(size, np.uint8)
        self.top = 0
        device = self

        class Array:
            def __init__(self, shape, dtype) -> None:
                self.shape, self.dtype = tuple(shape), np.dtype(dtype)
                self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
                self.ptr = device.alloc(self.nbytes)

            @property
            def __cuda_array_interface__(self):
                return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3}

            def host(self) -> np.ndarray:
                return device.view(self.ptr, self.nbytes).view(self.dtype).reshape(self.shape)

        self.Array = Array

    def alloc(self, n: int) -> int:
        ptr = self.BASE + self.top
        self.top += (n + 255) // 256 * 256
        return ptr

    def view(self, ptr: int, n: int) -> np.ndarray:
        return self.heap[ptr - self.BASE : ptr - self.BASE + n]

    def memcpy_htod(self, dst: int, host: np.ndarray, stream=None) -> None:
        data = np.ascontiguousarray(host).view(np.uint8).reshape(-1)
        self.view(dst, data.size)[:] = data

    def launch(self, params_ptr, out, batch, dst_hw, dtype="float32", stream=None, pad_value=114) -> None:
        params = self.view(params_ptr, batch * lb.PARAM_DTYPE.itemsize).view(lb.PARAM_DTYPE)
        result = out.host()
        for b, p in enumerate(params):
            rows = self.view(int(p["src"]), int(p["src_pitch"]) * int(p["src_h"]))
            image = rows.reshape(p["src_h"], p["src_pitch"])[:, : 3 * p["src_w"]].reshape(p["src_h"], p["src_w"], 3)
            result[b] = _emulate_params(p, image, dst_hw)


def test_gpu_letterbox_plumbing_on_an_emulated_device(monkeypatch):
    """Host and device images of several sizes in one batch, a padded-pitch device image, the parameter block:
    GpuLetterbox with the kernel emulated from what it uploads equals OpenCV within 1/255."""
    from trtx import runtime

    dev = _FakeDevice()
    monkeypatch.setattr(runtime, "DeviceArray", dev.Array)
    monkeypatch.setattr(runtime, "memcpy_htod", dev.memcpy_htod)
    monkeypatch.setattr(lb, "launch", dev.launch)
    images = [_image(*hw, seed=i) for i, hw in enumerate([(1080, 810), (333, 517), (640, 640), (17, 1000)])]
    # image 1 lives "on the device" with 16 padding bytes per row, given through __cuda_array_interface__
    pitch = 3 * 517 + 16
    ptr = dev.alloc(pitch * 333)
    dev.view(ptr, pitch * 333).reshape(333, pitch)[:, : 3 * 517] = images[1].reshape(333, -1)

    class OnDevice:
        __cuda_array_interface__ = {"shape": (333, 517, 3), "typestr": "|u1", "data": (ptr, False),
                                    "strides": (pitch, 3, 1), "version": 3}  # fmt: skip

    gpu = lb.GpuLetterbox((384, 640))
    out = gpu([images[0], OnDevice(), images[2], images[3]])
    expected, geometry = lb.letterbox_batch(images, (384, 640))
    assert gpu.geometry == geometry
    assert np.abs(out.host() - expected).max() <= 1 / 255
    with pytest.raises(ValueError, match="out must be a contiguous float32"):
        gpu(images, out=dev.Array((4, 3, 384, 640), np.float16))
