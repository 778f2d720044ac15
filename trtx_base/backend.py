"""The one place that imports TensorRT.

Everything else does ``from trtx_base.backend import trt`` (or ``trtx_base.backend.get()``) and asks this module for
capability facts, so code paths differ by capability, never by scattered version checks.

Search order: ``tensorrt`` (full TensorRT 10/11), ``tensorrt_rtx`` and ``tensorrt_rtx_bindings``
(TensorRT-RTX). The environment variable ``TRTX_BACKEND`` forces one of those names.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType

from trtx_base.errors import UserError

ORDER = ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings")

#: pip extra that provides each backend module
EXTRA = {
    "tensorrt": "pip install -e '.[trt]'  (NVIDIA TensorRT >= 10)",
    "tensorrt_rtx": "pip install -e '.[rtx]'  (TensorRT-RTX)",
    "tensorrt_rtx_bindings": "pip install -e '.[rtx]'  (TensorRT-RTX)",
}

#: compute capabilities TensorRT-RTX 1.7 deserializes on (measured: it refuses sm_90)
RTX_COMPUTE_CAPABILITIES = {(8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}


class BackendUnavailable(UserError, ImportError):
    """No usable TensorRT module; the message says what to install."""


@dataclass(frozen=True)
class Backend:
    """A loaded TensorRT module and what it can do on this machine."""

    module: ModuleType
    module_name: str

    @property
    def name(self) -> str:
        """``tensorrt`` or ``tensorrt_rtx`` (whichever of TensorRT-RTX's two module names was imported)."""
        return "tensorrt" if self.module_name == "tensorrt" else "tensorrt_rtx"

    @property
    def trt(self) -> ModuleType:
        return self.module

    @property
    def version(self) -> str:
        return str(getattr(self.module, "__version__", "unknown"))

    @property
    def major(self) -> int:
        try:
            return int(self.version.split(".")[0])
        except ValueError:
            return 0

    @property
    def is_rtx(self) -> bool:
        return self.module_name != "tensorrt"

    @cached_property
    def strongly_typed_only(self) -> bool:
        """True where the builder has no precision flags (TensorRT >= 11, TensorRT-RTX)."""
        flags = getattr(self.module, "BuilderFlag", None)
        return self.is_rtx or self.major >= 11 or flags is None or not hasattr(flags, "FP16")

    @cached_property
    def has_plugin_layers(self) -> bool:
        """Whether INetworkDefinition can add IPluginV3 layers (TensorRT-RTX cannot)."""
        network_cls = getattr(self.module, "INetworkDefinition", None)
        return network_cls is not None and hasattr(network_cls, "add_plugin_v3")

    @cached_property
    def has_aot_plugins(self) -> bool:
        """Whether plugin kernels can be built into the engine ahead of time (``tensorrt.plugin.aot_impl``,
        TensorRT >= 10.9): such engines run under trtexec and Triton with no Python and no plugin library."""
        return self.has_plugin_layers and hasattr(self.module, "QuickPluginCreationRequest")

    @cached_property
    def has_nms_runner(self) -> bool:
        """Whether the builder implements INMSLayer (TensorRT-RTX 1.7 exposes add_nms but cannot build it)."""
        network_cls = getattr(self.module, "INetworkDefinition", None)
        return not self.is_rtx and network_cls is not None and hasattr(network_cls, "add_nms")

    def supported_compute_capabilities(self) -> set[tuple[int, int]] | None:
        """Compute capabilities the runtime executes on; None means 'whatever the driver offers'."""
        return RTX_COMPUTE_CAPABILITIES if self.is_rtx else None

    def can_execute(self) -> tuple[bool, str]:
        """(ok, reason): a CUDA device is present and this backend runs engines on it."""
        from trtx_base import cudainfo

        devices, why = cudainfo.devices()
        if not devices:
            return False, why
        supported = self.supported_compute_capabilities()
        for dev in devices:
            if supported is None or dev.capability in supported:
                return True, f"{dev.name} (sm_{dev.capability[0]}{dev.capability[1]}) is supported by {self.name}"
        caps = ", ".join(f"{d.name} sm_{d.capability[0]}{d.capability[1]}" for d in devices)
        allowed = ", ".join(f"{a}.{b}" for a, b in sorted(supported or ()))
        return False, f"{self.name} {self.version} does not run on {caps} (supports compute capability {allowed})"


_loaded: Backend | None = None


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # a broken wheel raises OSError/RuntimeError, not only ImportError
        raise BackendUnavailable(f"{name}: {type(exc).__name__}: {exc}") from None


def load(force: str | None = None) -> Backend:
    """Import the TensorRT backend (once). ``force`` or ``$TRTX_BACKEND`` selects one module by name."""
    global _loaded
    force = force or os.environ.get("TRTX_BACKEND") or None
    if _loaded is not None and (force is None or force == _loaded.module_name):
        return _loaded
    if force is not None:
        if force not in ORDER:
            raise BackendUnavailable(f"TRTX_BACKEND={force!r} is not one of {', '.join(ORDER)}")
        try:
            backend = Backend(_import(force), force)
        except BackendUnavailable as exc:
            raise BackendUnavailable(
                f"TRTX_BACKEND={force} but it cannot be imported ({exc}); install it with: {EXTRA[force]}"
            ) from None
    else:
        errors = []
        for name in ORDER:
            try:
                backend = Backend(_import(name), name)
                break
            except BackendUnavailable as exc:
                errors.append(str(exc))
        else:
            raise BackendUnavailable(
                f"no TensorRT backend is importable; install one with {EXTRA['tensorrt']} or {EXTRA['tensorrt_rtx']}"
            )
    _loaded = backend
    return backend


def get() -> Backend:
    return load()


def __getattr__(attr: str):
    # `from trtx_base.backend import trt, name, version` resolves lazily so importing trtx stays cheap.
    if attr == "trt":
        return load().module
    if attr in (
        "name",
        "version",
        "strongly_typed_only",
        "has_plugin_layers",
        "has_aot_plugins",
        "has_nms_runner",
        "can_execute",
    ):
        return getattr(load(), attr)
    raise AttributeError(attr)
