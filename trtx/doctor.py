"""``python -m trtx doctor``: what this machine can do with trtx, each answer with its reason."""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys

from trtx_base import backend, cudainfo


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def _targets(be: backend.Backend) -> str:
    """The GPU archs engines can be built for from this machine (build --gpu-arch)."""
    if not be.build_targets:
        return f"the GPU it builds on only ({be.gpu_arch_refusal()})"
    engines = "one engine serves the whole set" if be.multi_target_engines else "one engine per arch"
    return (
        f"{' '.join(be.build_targets)} (build --gpu-arch A,B,...|current; {engines}; "
        f"default: {' '.join(be.default_build_targets)})"
    )


def report() -> tuple[str, bool]:
    """(text, ok): ok is False only when no TensorRT backend is importable."""
    try:
        be = backend.load()
    except backend.BackendUnavailable as exc:
        return f"trtx doctor: {exc}", False
    lines = [f"backend      {be.name} {be.version}", f"python       {platform.python_version()} ({sys.executable})"]
    torch_v = _dist_version("torch")
    lines.append(f"torch        {torch_v or 'not installed (pip install -e .[torch]): gen_wts/check unavailable'}")
    lines.append(f"cuda-python  {_dist_version('cuda-python', 'cuda-bindings') or 'not installed'}")
    nvrtc_v, nvrtc_why = cudainfo.nvrtc_version()
    lines.append(f"NVRTC        {nvrtc_v or 'unavailable'}")
    lines.append(f"CUDA driver  {cudainfo.driver_version() or 'none'}")
    devices, dev_why = cudainfo.devices()
    if devices:
        for d in devices:
            lines.append(f"GPU {d.index}        {d.name} (compute capability {d.capability[0]}.{d.capability[1]})")
    else:
        lines.append(f"GPUs         none ({dev_why})")

    lines.append(f"GPU targets  {_targets(be)}")

    can_exec, exec_why = be.can_execute()
    try:
        builder = be.trt.Builder(be.trt.Logger(be.trt.Logger.ERROR))
        can_build, build_why = (
            builder is not None,
            "the builder constructs without a GPU" if not devices else "builder ok",
        )
    except Exception as exc:  # noqa: BLE001 - report, don't crash
        can_build, build_why = False, f"{type(exc).__name__}: {exc}"
    plugin_why = (
        "INetworkDefinition.add_plugin_v3 present"
        if be.has_plugin_layers
        else f"{be.name} has no add_plugin_v3 (plugin kernels still compile and run through their torch references)"
    )
    rows = [
        ("build engines", can_build, build_why),
        ("execute engines", can_exec, exec_why),
        ("plugin layers", be.has_plugin_layers, plugin_why),
        (
            "NMS layer",
            be.has_nms_runner,
            "INMSLayer builds"
            if be.has_nms_runner
            else f"{be.name}'s builder has no NMS runner: NMS runs after the engine",
        ),
        ("compile kernels", nvrtc_v is not None, nvrtc_why),
        ("reference executor", torch_v is not None, "torch installed" if torch_v else "needs the [torch] extra"),
    ]
    lines.append("")
    lines.append(f"{'capability':<20}{'works':<7}reason")
    for what, ok, why in rows:
        lines.append(f"{what:<20}{'yes' if ok else 'no':<7}{why}")
    return "\n".join(lines), True


def main() -> int:
    text, ok = report()
    print(text, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
