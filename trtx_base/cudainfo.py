"""What CUDA this machine has, asked through cuda-python's driver API (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    capability: tuple[int, int]

    @property
    def arch(self) -> str:
        return f"sm_{self.capability[0]}{self.capability[1]}"


def _driver():
    try:
        from cuda.bindings import driver
    except ImportError:  # cuda-python < 12.6 layout
        from cuda import cuda as driver  # type: ignore[no-redef]
    return driver


@lru_cache(maxsize=1)
def devices() -> tuple[tuple[Device, ...], str]:
    """(devices, reason): the CUDA devices visible to the driver, or () and why there are none."""
    try:
        drv = _driver()
    except ImportError as exc:
        return (), f"cuda-python is not installed ({exc})"
    try:
        (err,) = drv.cuInit(0)
    except Exception as exc:  # no libcuda.so: cuda-python raises at call time
        return (), f"no CUDA driver ({type(exc).__name__}: {exc})"
    if err != drv.CUresult.CUDA_SUCCESS:
        return (), f"no CUDA driver or device (cuInit: {err.name})"
    err, count = drv.cuDeviceGetCount()
    if err != drv.CUresult.CUDA_SUCCESS or count == 0:
        return (), "the CUDA driver reports no devices"
    found = []
    attr = drv.CUdevice_attribute
    for i in range(count):
        _, dev = drv.cuDeviceGet(i)
        _, raw = drv.cuDeviceGetName(64, dev)
        _, major = drv.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
        _, minor = drv.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
        name = raw.split(b"\0", 1)[0].decode(errors="replace")
        found.append(Device(i, name, (major, minor)))
    return tuple(found), f"{count} CUDA device(s)"


def driver_version() -> str | None:
    try:
        drv = _driver()
        err, v = drv.cuDriverGetVersion()
    except Exception:
        return None
    if err != drv.CUresult.CUDA_SUCCESS:
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"


def nvrtc_version() -> tuple[str | None, str]:
    """(version, reason) of the NVRTC library cuda-python finds."""
    try:
        try:
            from cuda.bindings import nvrtc
        except ImportError:
            from cuda import nvrtc  # type: ignore[no-redef]
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as exc:
        return None, f"NVRTC unavailable ({type(exc).__name__}: {exc})"
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        return None, f"nvrtcVersion failed: {err.name}"
    return f"{major}.{minor}", "NVRTC loads; kernels compile on the CPU"
