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

#: what a TensorRT-RTX engine built without ``--gpu-arch`` runs on (its docs: "8.0, 8.6, 8.9, 12.0 and later"; an
#: H100/H200, sm_90, is refused with this list). Turing (sm_75) only when named at build time.
RTX_DEFAULT_COMPUTE_CAPABILITIES = {(8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}


def arch_name(capability: tuple[int, int]) -> str:
    """(8, 6) -> ``sm_86``."""
    return f"sm_{capability[0]}{capability[1]}"


def arch_capability(arch: str) -> tuple[int, int]:
    """``sm_86`` -> (8, 6); ``sm_120`` -> (12, 0)."""
    digits = arch.removeprefix("sm_")
    return int(digits[:-1]), int(digits[-1])


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

    @cached_property
    def build_targets(self) -> tuple[str, ...]:
        """GPU archs the builder can target (``sm_75``, ``sm_86`` ...), read from the backend's own
        ``ComputeCapability`` enum; () where the builder has no target API and builds for the GPU it runs on."""
        config_cls = getattr(self.module, "IBuilderConfig", None)
        enum = getattr(self.module, "ComputeCapability", None)
        if enum is None or not hasattr(config_cls, "set_compute_capability"):
            return ()
        caps = [(int(m.value) // 10, int(m.value) % 10) for n, m in enum.__members__.items() if n.startswith("SM")]
        return tuple(arch_name(c) for c in sorted(caps))

    @property
    def default_build_targets(self) -> tuple[str, ...]:
        """What an engine built without naming targets runs on; () where that is the build machine's GPU."""
        return tuple(arch_name(c) for c in sorted(RTX_DEFAULT_COMPUTE_CAPABILITIES)) if self.build_targets else ()

    @property
    def multi_target_engines(self) -> bool:
        """Whether one engine serves a whole set of targets. True for TensorRT-RTX (measured: an engine built for
        [SM80, SM86, SM89, SM120] is one plan of nearly the size of a single-target one -- its builder compiles
        no GPU code ahead of time; kernels are generated for the GPU at load time). Full TensorRT: one engine per
        GPU arch, built on that GPU."""
        return bool(self.build_targets)

    def gpu_arch_refusal(self) -> str | None:
        """Why ``build --gpu-arch`` cannot be honoured by this backend (None where it can)."""
        if self.build_targets:
            return None
        return (
            f"{self.name} {self.version} builds engines for the GPU it runs on and has no target-architecture API; "
            "build on a machine with each target GPU (python -m trtx export triton ENGINE... serves one engine per "
            "arch), or install TensorRT-RTX (pip install -e '.[rtx]'), whose builder targets GPUs from any machine"
        )

    def supported_compute_capabilities(self) -> set[tuple[int, int]] | None:
        """Compute capabilities the runtime executes on; None means 'whatever the driver offers'."""
        return {arch_capability(a) for a in self.build_targets} if self.is_rtx else None

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
