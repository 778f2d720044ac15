"""Letterbox preprocessing (ultralytics' ``letterbox(auto=False)``): on the CPU with OpenCV, or one fused GPU kernel.

The geometry is ultralytics': scale ``r = min(H / h, W / w)``, the image resized to
``(round(w·r), round(h·r))`` with ``cv2.INTER_LINEAR``, padded with 114 to ``H x W`` (the padding split as
``round(d/2 ∓ 0.1)``), then BGR→RGB, HWC→CHW, /255, stacked into a batch. :func:`letterbox_batch` is the CPU
reference and gives exactly the tensor yolov5's ``letterbox(im, (H, W), auto=False)`` + ``ToTensor`` gives.

:class:`GpuLetterbox` does all of it in one kernel (``trtx/kernels/letterbox.cu``): one thread per output
pixel computes the bilinear sample at OpenCV's source coordinate ``(x + 0.5)·(w/new_w) - 0.5`` (clamped at
the border as OpenCV does), or the pad value, and writes the three planes. OpenCV resizes uint8 with 11-bit
fixed-point weights and rounds; the kernel samples in float and does not round, so the two differ by at most
about 0.75/255.

Neither torch nor the CUDA driver is imported with this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PAD_VALUE = 114
KERNEL_PATH = Path(__file__).with_name("kernels") / "letterbox.cu"


@dataclass(frozen=True)
class Letterbox:
    """Where an ``src`` (h, w) image lands in the ``dst`` (H, W) input: scaled by ``r`` to ``new`` (w, h),
    then shifted by ``left``/``top`` pixels."""

    src: tuple[int, int]
    dst: tuple[int, int]
    r: float
    new: tuple[int, int]
    left: int
    top: int

    @classmethod
    def fit(cls, src_hw: Sequence[int], dst_hw: Sequence[int], scaleup: bool = True) -> Letterbox:
        h, w = int(src_hw[0]), int(src_hw[1])
        dh_, dw_ = int(dst_hw[0]), int(dst_hw[1])
        if h <= 0 or w <= 0:
            raise ValueError(f"letterbox: image size {w}x{h} is empty")
        r = min(dh_ / h, dw_ / w)
        if not scaleup:
            r = min(r, 1.0)
        new = int(round(w * r)), int(round(h * r))
        dw, dh = (dw_ - new[0]) / 2, (dh_ - new[1]) / 2
        return cls((h, w), (dh_, dw_), r, new, int(round(dw - 0.1)), int(round(dh - 0.1)))


def letterbox(image: np.ndarray, dst_hw: Sequence[int], color: int = PAD_VALUE) -> tuple[np.ndarray, Letterbox]:
    """One BGR uint8 HWC image letterboxed to ``dst_hw`` (uint8 HWC), with OpenCV, as ultralytics does it."""
    import cv2

    image = _as_image(image)
    g = Letterbox.fit(image.shape[:2], dst_hw)
    if (image.shape[1], image.shape[0]) != g.new:
        image = cv2.resize(image, g.new, interpolation=cv2.INTER_LINEAR)
    bottom = g.dst[0] - g.new[1] - g.top
    right = g.dst[1] - g.new[0] - g.left
    out = cv2.copyMakeBorder(image, g.top, bottom, g.left, right, cv2.BORDER_CONSTANT, value=(color,) * 3)
    return out, g


def letterbox_batch(
    images: Sequence[np.ndarray], dst_hw: Sequence[int], dtype: Any = np.float32
) -> tuple[np.ndarray, list[Letterbox]]:
    """BGR uint8 HWC images -> ``[B, 3, H, W]`` RGB in [0, 1] (``dtype``) and each image's geometry."""
    h, w = int(dst_hw[0]), int(dst_hw[1])
    out = np.empty((len(images), 3, h, w), dtype=dtype)
    geometry = []
    for b, image in enumerate(images):
        boxed, g = letterbox(image, (h, w))
        out[b] = boxed.transpose(2, 0, 1)[::-1]
        geometry.append(g)
    out /= np.asarray(255, dtype=dtype)
    return out, geometry


def scale_boxes(boxes: np.ndarray, dst_hw: Sequence[int], src_hw: Sequence[int]) -> np.ndarray:
    """Corner boxes in the letterboxed input back to the original image, clipped (yolov5's scale_boxes)."""
    boxes = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    gain = min(dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1])
    pad_x, pad_y = (dst_hw[1] - src_hw[1] * gain) / 2, (dst_hw[0] - src_hw[0] * gain) / 2
    boxes[:, [0, 2]] -= pad_x
    boxes[:, [1, 3]] -= pad_y
    boxes /= gain
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, src_hw[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, src_hw[0])
    return boxes


def center_crop_normalize(
    images: Sequence[np.ndarray], size: Sequence[int], mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """yolov5's classify_transforms: center square crop, resize to ``size`` (INTER_LINEAR), RGB, /255,
    (x - mean) / std -> ``[B, 3, H, W]`` float32."""
    import cv2

    h, w = int(size[0]), int(size[1])
    out = np.empty((len(images), 3, h, w), np.float32)
    m, s = np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]
    for b, image in enumerate(images):
        image = _as_image(image)
        ih, iw = image.shape[:2]
        side = min(ih, iw)
        top, left = (ih - side) // 2, (iw - side) // 2
        crop = cv2.resize(image[top : top + side, left : left + side], (w, h), interpolation=cv2.INTER_LINEAR)
        out[b] = (crop.transpose(2, 0, 1)[::-1].astype(np.float32) / np.float32(255) - m) / s
    return out


def _as_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"letterbox needs BGR uint8 HWC images, got {image.dtype} {image.shape}")
    return image


# ---- GPU --------------------------------------------------------------------------------------------------
#: the kernel's per-image parameter block (struct LetterboxImage in letterbox.cu), 48 bytes
PARAM_DTYPE = np.dtype(
    [
        ("src", np.uint64),
        ("src_w", np.int32),
        ("src_h", np.int32),
        ("src_pitch", np.int32),
        ("new_w", np.int32),
        ("new_h", np.int32),
        ("left", np.int32),
        ("top", np.int32),
        ("scale_x", np.float32),
        ("scale_y", np.float32),
        ("_pad", np.int32),  # C struct padding to 8-byte alignment
    ]
)
BLOCK = (32, 8, 1)


def kernel(dtype: str = "float32"):
    """The fused letterbox kernel (a :class:`plugins.kernel.Kernel` variant for ``float32`` or ``float16``)."""
    global _KERNEL
    if _KERNEL is None:
        from plugins.kernel import Kernel

        _KERNEL = Kernel(KERNEL_PATH, "letterbox", dtypes=("float32", "float16"), options=("--fmad=false",))
    return _KERNEL[dtype]


_KERNEL = None


def image_params(src_ptrs: Sequence[int], shapes: Sequence[Sequence[int]], pitches: Sequence[int] | None,
                 dst_hw: Sequence[int]) -> tuple[np.ndarray, list[Letterbox]]:  # fmt: skip
    """The kernel's parameter array for images at device addresses ``src_ptrs`` of (h, w) ``shapes``."""
    params = np.zeros(len(src_ptrs), PARAM_DTYPE)
    geometry = []
    for b, (ptr, shape) in enumerate(zip(src_ptrs, shapes)):
        g = Letterbox.fit(shape[:2], dst_hw)
        h, w = int(shape[0]), int(shape[1])
        params[b] = (
            int(ptr), w, h, int(pitches[b]) if pitches is not None else 3 * w, g.new[0], g.new[1], g.left, g.top,
            w / g.new[0], h / g.new[1], 0,
        )  # fmt: skip
        geometry.append(g)
    return params, geometry


class GpuLetterbox:
    """Letterbox a batch of BGR uint8 HWC images into a ``[B, 3, H, W]`` device tensor with one kernel launch.

    Images are host numpy arrays (uploaded into a reusable device buffer) or device arrays (anything with
    ``__cuda_array_interface__``, e.g. torch CUDA tensors, used in place). ``out`` is any device array of the
    right size (a torch tensor, a :class:`trtx.runtime.DeviceArray`...); without one, a DeviceArray is allocated.
    The staging and parameter buffers are reused from call to call: use one instance per stream. Needs the CUDA
    driver and NVRTC (cuda-python).
    """

    def __init__(self, dst_hw: Sequence[int], dtype: str = "float32") -> None:
        if dtype not in ("float32", "float16"):
            raise ValueError(f"GpuLetterbox dtype must be float32 or float16, got {dtype}")
        self.dst = int(dst_hw[0]), int(dst_hw[1])
        self.dtype = dtype
        self._staging = None
        self._params = None

    @property
    def params_ptr(self) -> int:
        """Device address of the last call's per-image parameters (to relaunch :func:`launch` on them)."""
        if self._params is None:
            raise RuntimeError("GpuLetterbox: no images letterboxed yet")
        return self._params.ptr

    def __call__(self, images: Sequence[Any], out: Any = None, stream: Any = None):
        from trtx.runtime import DeviceArray, cuda_array_interface, memcpy_htod

        ptrs, shapes, pitches, host = [], [], [], []
        for i, im in enumerate(images):
            cai = cuda_array_interface(im)
            if cai is None:
                arr = _as_image(im)
                host.append((i, np.ascontiguousarray(arr)))
                ptrs.append(0)
                shapes.append(arr.shape)
                pitches.append(3 * arr.shape[1])
            else:
                shape, strides = tuple(cai["shape"]), cai.get("strides")
                if cai["typestr"] not in ("|u1", "<u1") or len(shape) != 3 or shape[2] != 3:
                    raise ValueError(f"GpuLetterbox: device image {i} must be uint8 HWC BGR, got {cai['typestr']} "
                                     f"{shape}")  # fmt: skip
                if strides is not None and (strides[2] != 1 or strides[1] != 3):
                    raise ValueError(f"GpuLetterbox: device image {i} must have packed pixels (strides {strides})")
                ptrs.append(int(cai["data"][0]))
                shapes.append(shape)
                pitches.append(strides[0] if strides is not None else 3 * shape[1])
        if host:
            total = sum(a.nbytes for _, a in host)
            if self._staging is None or self._staging.nbytes < total:
                self._staging = DeviceArray((total,), np.uint8)
            offset = 0
            for i, arr in host:
                ptrs[i] = self._staging.ptr + offset
                memcpy_htod(ptrs[i], arr, stream)
                offset += arr.nbytes
        params, geometry = image_params(ptrs, shapes, pitches, self.dst)
        if self._params is None or self._params.nbytes < params.nbytes:
            self._params = DeviceArray((max(params.nbytes, PARAM_DTYPE.itemsize * 16),), np.uint8)
        memcpy_htod(self._params.ptr, params, stream)
        n = len(images)
        np_dtype = np.float32 if self.dtype == "float32" else np.float16
        if out is None:
            out = DeviceArray((n, 3, *self.dst), np_dtype)
        cai = cuda_array_interface(out)
        want = (n, 3, *self.dst)
        if cai is None or tuple(cai["shape"]) != want or np.dtype(cai["typestr"]) != np_dtype:
            got = "a host array" if cai is None else f"{np.dtype(cai['typestr'])} {tuple(cai['shape'])}"
            raise ValueError(f"GpuLetterbox: out must be a contiguous {np.dtype(np_dtype)} {want} device array, "
                             f"got {got}")  # fmt: skip
        if cai.get("strides") not in (None, _contiguous_strides(want, np_dtype)):
            raise ValueError(f"GpuLetterbox: out must be contiguous (strides {cai['strides']})")
        launch(self._params.ptr, out, n, self.dst, self.dtype, stream)
        self.geometry = geometry
        return out


def _contiguous_strides(shape: Sequence[int], dtype: Any) -> tuple[int, ...]:
    strides, step = [], np.dtype(dtype).itemsize
    for d in reversed(shape):
        strides.append(step)
        step *= int(d)
    return tuple(reversed(strides))


def launch(params_ptr: int, out: Any, batch: int, dst_hw: Sequence[int], dtype: str = "float32",
           stream: Any = None, pad_value: float = PAD_VALUE) -> None:  # fmt: skip
    """Launch the kernel on ``batch`` images described by the parameter array at ``params_ptr``."""
    h, w = int(dst_hw[0]), int(dst_hw[1])
    grid = ((w + BLOCK[0] - 1) // BLOCK[0], (h + BLOCK[1] - 1) // BLOCK[1], batch)
    kernel(dtype).launch(grid, BLOCK, [params_ptr, out, batch, w, h, float(pad_value)], stream)
