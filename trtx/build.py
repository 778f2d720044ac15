"""Build a :class:`trtx.net.Net` into a serialized engine plus its ``.json`` metadata.

The metadata is what the runtime, ``infer`` and ``python -m trtx export`` need without re-reading the netdef:
input/output names, shapes and dtypes (and which outputs carry the batch axis), the batch profile, the precision,
the backend that built it and the GPU archs the engine is for, the plugins to register before deserializing, the
weights' hash, the engine's own hash and size, and the netdef's own facts (classes, anchors, strides, ...).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtx import __version__
from trtx.net import Net, NetdefError, np_dtype
from trtx_base import backend, cudainfo
from trtx_base.errors import UserError
from trtx_base.files import atomic_write


class BuildError(UserError, RuntimeError):
    """The TensorRT builder refused the network; the message carries what it said."""


@dataclass(frozen=True)
class BatchSpec:
    """Batch sizes of the optimization profile (min == opt == max for a fixed batch)."""

    min: int = 1
    opt: int = 1
    max: int = 1

    @classmethod
    def parse(cls, text: str | int) -> BatchSpec:
        """``"8"`` (fixed) or ``"1:4:16"`` (min:opt:max)."""
        parts = str(text).split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) == 1:
            values *= 3
        if len(values) != 3 or not (1 <= values[0] <= values[1] <= values[2]):
            raise NetdefError(f"--batch {text!r}: expected N or MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX")
        return cls(*values)

    @property
    def fixed(self) -> bool:
        return self.min == self.max

    def __str__(self) -> str:
        return str(self.min) if self.fixed else f"{self.min}:{self.opt}:{self.max}"


class GpuArchError(UserError, ValueError):
    """``--gpu-arch`` names a target the backend cannot build for, or the backend cannot target GPUs at all."""


def parse_gpu_archs(text: str, targets: tuple[str, ...], refusal: str | None = None) -> tuple[str, ...]:
    """``"sm_86,sm_89"`` (also ``86``, ``8.6``, ``sm86``) -> ``("sm_86", "sm_89")``, checked against ``targets``
    (the archs the backend builds for; empty: it cannot target GPUs, and ``refusal`` says why). ``current`` is
    resolved by :func:`resolve_gpu_archs`, which knows the machine."""
    if not targets:
        raise GpuArchError(f"--gpu-arch {text}: {refusal or 'this backend cannot build for named GPU archs'}")
    supported = ", ".join(targets)
    archs: list[str] = []
    for item in (t.strip().lower() for t in str(text).split(",")):
        digits = item.removeprefix("sm_").removeprefix("sm").replace(".", "")
        arch = f"sm_{digits}"
        if not digits.isdigit() or arch not in targets:
            raise GpuArchError(f"--gpu-arch: {item or '(empty)'!r} is not a GPU arch this backend builds for; "
                               f"supported: {supported}")  # fmt: skip
        if arch not in archs:
            archs.append(arch)
    return tuple(sorted(archs, key=backend.arch_capability))


def resolve_gpu_archs(text: str | None, be: backend.Backend | None = None) -> tuple[str, ...]:
    """The ``--gpu-arch`` value as a tuple of archs for :class:`BuildOptions` (``()`` for None: the backend's
    default targets). ``current`` means the GPUs of this machine, which must be targets the backend has."""
    if text is None:
        return ()
    be = be or backend.get()
    if str(text).strip().lower() != "current":
        return parse_gpu_archs(text, be.build_targets, be.gpu_arch_refusal())
    if not be.build_targets:
        raise GpuArchError(f"--gpu-arch current: {be.gpu_arch_refusal()}")
    devices, why = cudainfo.devices()
    if not devices:
        raise GpuArchError(f"--gpu-arch current: this machine has no GPU ({why}); name the archs instead, from: "
                           f"{', '.join(be.build_targets)}")  # fmt: skip
    here = sorted({d.arch for d in devices}, key=backend.arch_capability)
    missing = [a for a in here if a not in be.build_targets]
    if missing:
        names = ", ".join(f"{d.name} ({d.arch})" for d in devices if d.arch in missing)
        raise GpuArchError(f"--gpu-arch current: {be.name} {be.version} cannot build for this machine's {names}; "
                           f"supported: {', '.join(be.build_targets)}")  # fmt: skip
    return tuple(here)


@dataclass
class BuildOptions:
    batch: BatchSpec = BatchSpec()
    workspace_mib: int | None = None
    optimization_level: int | None = None
    progress: bool = True
    verbose: bool = False
    #: GPU archs to build for (``("sm_86", "sm_89")``, see :func:`resolve_gpu_archs`); () = the backend's default.
    #: TensorRT-RTX makes one engine for the whole set (``Backend.multi_target_engines``).
    gpu_archs: tuple[str, ...] = ()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _shape_for(shape: tuple[int, ...], batch: int, name: str, ranges: dict[int, tuple[int, int, int]],
               which: int) -> tuple[int, ...]:  # fmt: skip
    """The profile's ``which`` (0 min, 1 opt, 2 max) shape of input ``name``: declared ranges, else the batch."""
    dims = list(shape)
    for axis, d in enumerate(dims):
        if d == -1:
            if axis in ranges:
                dims[axis] = ranges[axis][which]
            elif axis == 0:
                dims[axis] = batch
            else:
                raise NetdefError(f"input {name!r}: dynamic axis {axis} of {shape} has no range (net.input(ranges=))")
    return tuple(dims)


def profile_shapes(net: Net, options: BuildOptions) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of every dynamic input of ``net``."""
    nw, b = net.network, options.batch
    found = {}
    for t in (nw.get_input(i) for i in range(nw.num_inputs)):
        shape = tuple(t.shape)
        if -1 in shape:
            ranges = net.input_ranges.get(t.name, {})
            found[t.name] = tuple(_shape_for(shape, n, t.name, ranges, k) for k, n in enumerate((b.min, b.opt, b.max)))
    return found


def _progress_monitor(trt):
    """A tqdm-backed IProgressMonitor (None where the backend has none)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None
    from tqdm import tqdm

    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = 0 if parent_phase is None else 1
            if depth == 0:
                self.bars[phase_name] = tqdm(total=num_steps, desc=phase_name, leave=False, file=sys.stderr)

        def step_complete(self, phase_name, step):
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.update(1)
            return True

        def phase_finish(self, phase_name):
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return Monitor()


def io_description(net: Net) -> dict[str, list[dict[str, Any]]]:
    """Names, shapes and dtypes of the network's inputs and outputs; each output also says whether its axis 0 is
    the batch (``batched``): false for data-dependent outputs such as the rows kept by TensorRT's NMS layer, which
    a server must not split by image. None where no input has a dynamic batch axis to tell."""
    nw = net.network
    inputs = [nw.get_input(i) for i in range(nw.num_inputs)]
    outputs = [nw.get_output(i) for i in range(nw.num_outputs)]
    describe = lambda t: {"name": t.name, "shape": list(t.shape), "dtype": np_dtype(t.dtype).name}  # noqa: E731
    batched = _batched_outputs(inputs, outputs)
    described = [dict(describe(t), batched=batched.get(t.name)) for t in outputs]
    return {"inputs": [describe(t) for t in inputs], "outputs": described}


def _batched_outputs(inputs: list, outputs: list) -> dict[str, bool]:
    """Which outputs follow the batch: give every dynamic input two concrete batch sizes in turn and see whose
    axis 0 follows (TensorRT re-infers the output shapes); the inputs' shapes are restored afterwards."""
    dynamic = [(t, tuple(t.shape)) for t in inputs if tuple(t.shape)[:1] == (-1,)]
    if not dynamic:
        return {}
    follows = {t.name: True for t in outputs}
    try:
        for probe in (2, 3):
            for t, shape in dynamic:
                t.shape = (probe, *shape[1:])
            for t in outputs:
                follows[t.name] &= tuple(t.shape)[:1] == (probe,)
    finally:
        for t, shape in dynamic:
            t.shape = shape
    return follows


def build_serialized(net: Net, options: BuildOptions | None = None) -> bytes:
    """Run the real TensorRT builder on ``net``; raise :class:`BuildError` with the builder's messages."""
    options = options or BuildOptions()
    trt = net.trt
    nw = net.network
    if nw.num_outputs == 0:
        raise NetdefError(f"network {nw.name!r} marks no outputs")
    config = net.builder.create_builder_config()
    _set_gpu_archs(trt, config, options.gpu_archs)
    if options.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.optimization_level is not None:
        config.builder_optimization_level = options.optimization_level
    dynamic = profile_shapes(net, options)
    if dynamic:
        profile = net.builder.create_optimization_profile()
        for name, (lo, opt, hi) in dynamic.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    monitor = _progress_monitor(trt) if options.progress and sys.stderr.isatty() else None
    if monitor is not None:
        config.progress_monitor = monitor
    net.logger.clear()
    net.logger.verbose = options.verbose
    t0 = time.perf_counter()
    serialized = net.builder.build_serialized_network(nw, config)
    net.build_seconds = time.perf_counter() - t0
    if serialized is None or serialized.nbytes == 0:
        said = net.logger.errors() or ["(the builder printed no error)"]
        raise BuildError(
            f"TensorRT builder ({backend.get().name} {backend.get().version}) refused network "
            f"{nw.name!r}: " + " | ".join(said)
        )
    return bytes(serialized)


def _set_gpu_archs(trt, config, archs: tuple[str, ...]) -> None:
    """Target ``archs`` (TensorRT-RTX: IBuilderConfig's compute capabilities; one engine serves them all)."""
    if not archs:
        return
    be = backend.get()
    parse_gpu_archs(",".join(archs), be.build_targets, be.gpu_arch_refusal())  # a BuildOptions made by hand
    config.num_compute_capabilities = len(archs)
    for i, arch in enumerate(archs):
        major, minor = backend.arch_capability(arch)
        if not config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{major}{minor}"), i):
            raise GpuArchError(f"--gpu-arch: {be.name} {be.version} refused target {arch}")


def gpu_targets(options: BuildOptions, be: backend.Backend | None = None) -> dict[str, Any]:
    """The metadata's ``gpu``: the archs the engine runs on and who chose them."""
    be = be or backend.get()
    if options.gpu_archs:
        archs, chosen = list(options.gpu_archs), "--gpu-arch"
    elif be.default_build_targets:
        archs, chosen = list(be.default_build_targets), f"{be.name} default"
    else:  # full TensorRT: the engine is for the GPU it was built on (the current device, CUDA's device 0)
        devices, _ = cudainfo.devices()
        archs, chosen = [d.arch for d in devices[:1]], "the build machine's GPU"
    return {"archs": archs, "chosen_by": chosen, "one_engine_for_all": be.multi_target_engines}


def metadata(
    net: Net,
    options: BuildOptions,
    *,
    netdef: str,
    weights_path: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    be = backend.get()
    meta: dict[str, Any] = {
        "trtx_version": __version__,
        "netdef": netdef,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "backend": {"name": be.name, "version": be.version},
        "gpu": gpu_targets(options, be),
        "precision": net.precision,
        "batch": {"min": options.batch.min, "opt": options.batch.opt, "max": options.batch.max},
        **io_description(net),
        "plugins": list(net.plugins),
        "profiles": {name: [list(s) for s in shapes] for name, shapes in profile_shapes(net, options).items()},
        "weights": None,
        "num_layers": net.network.num_layers,
    }
    if weights_path is not None:
        meta["weights"] = {"path": os.path.abspath(weights_path), "sha256": file_sha256(weights_path)}
    meta.update(net.meta)
    if extra:
        meta.update(extra)
    return meta


def save_engine(path: str | os.PathLike, engine: bytes, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``path`` and ``path.json`` atomically; returns both paths. The metadata records the engine's size and
    sha256, and its own sha256 (``metadata_sha256``, over the rest of it), so :func:`load_metadata` can tell an
    engine and a metadata file that do not belong together, or a metadata file edited since."""
    path = Path(path)
    meta = dict(meta, engine_bytes=len(engine), engine_sha256=hashlib.sha256(engine).hexdigest())
    meta["metadata_sha256"] = _metadata_digest(meta)
    atomic_write(path, engine)
    meta_path = metadata_path(path)
    atomic_write(meta_path, json.dumps(meta, indent=2) + "\n")
    return path, meta_path


def metadata_path(engine_path: str | os.PathLike) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


class EngineMetadataError(UserError, ValueError):
    """An engine's ``.json`` is missing, unreadable, or does not describe that engine; the message names the file."""


#: what :func:`metadata` + :func:`save_engine` always write and every reader of an engine relies on
METADATA_REQUIRED = ("backend", "precision", "batch", "inputs", "outputs", "engine_bytes", "engine_sha256")


def load_metadata(engine_path: str | os.PathLike, data: bytes | None = None) -> dict[str, Any]:
    """The metadata of ``engine_path``, verified before anything uses the pair: the ``.json`` is trtx engine
    metadata, unedited since the build (``metadata_sha256``), and describes exactly this engine (``engine_bytes``,
    ``engine_sha256``; ``data``: the engine's bytes when the caller has read them). Raises
    :class:`EngineMetadataError` naming the file that is missing, garbled or does not match, and which one
    changed (by their modification times)."""
    from trtx_base.files import check_input, file_errors

    engine_path = Path(engine_path)
    if engine_path.name.endswith(".json"):
        raise EngineMetadataError(f"{engine_path}: pass the engine file, not its metadata (the .json beside it is read "
                                  "too)")  # fmt: skip
    if not engine_path.exists():
        raise EngineMetadataError(f"{engine_path}: no such engine file")
    check_input(engine_path, "engine")
    meta_path = metadata_path(engine_path)
    if not meta_path.exists():
        raise EngineMetadataError(f"{engine_path}: no metadata {meta_path.name} beside it (build writes the engine "
                                  "and its .json together; copy them together)")  # fmt: skip
    check_input(meta_path, "engine metadata")
    with file_errors(meta_path):
        raw = meta_path.read_bytes()
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EngineMetadataError(f"{meta_path}: not JSON (line {exc.lineno}: {exc.msg}); rebuild the engine or "
                                  "restore its .json") from None  # fmt: skip
    except UnicodeDecodeError:
        raise EngineMetadataError(f"{meta_path}: not a text file; rebuild the engine or restore its .json") from None
    if not isinstance(meta, dict):
        raise EngineMetadataError(f"{meta_path}: not trtx engine metadata (a JSON {type(meta).__name__}, not an "
                                  "object)")  # fmt: skip
    missing = [k for k in METADATA_REQUIRED if k not in meta]
    if missing:
        raise EngineMetadataError(f"{meta_path}: not trtx engine metadata, or written before trtx recorded the "
                                  f"engine's hash (no {', '.join(missing)}); rebuild the engine")  # fmt: skip
    recorded = meta.get("metadata_sha256")
    if recorded is not None and recorded != _metadata_digest(meta):
        raise EngineMetadataError(f"{meta_path} was edited after the build (its content no longer matches its "
                                  "metadata_sha256); rebuild the engine, or restore the file")  # fmt: skip
    with file_errors(engine_path):
        if data is None:
            size = engine_path.stat().st_size
            digest = file_sha256(engine_path) if size == meta["engine_bytes"] else None
        else:
            size, digest = len(data), hashlib.sha256(data).hexdigest()
        if size != meta["engine_bytes"] or digest != meta["engine_sha256"]:
            raise EngineMetadataError(_pair_mismatch(engine_path, meta_path, size, meta))
    return meta


def _pair_mismatch(engine_path: Path, meta_path: Path, size: int, meta: dict[str, Any]) -> str:
    """Which of the two files changed: the newer one (or a damaged engine, shorter than recorded and not newer)."""
    recorded = int(meta["engine_bytes"])
    engine_time, meta_time = engine_path.stat().st_mtime, meta_path.stat().st_mtime
    if size < recorded and engine_time <= meta_time:
        culprit = f"{engine_path} is damaged or truncated"
    elif engine_time > meta_time:
        when = f"{_when(engine_time)} > {_when(meta_time)}"
        culprit = f"{engine_path} was replaced after {meta_path.name} was written ({when})"
    else:
        culprit = f"{meta_path.name} was rewritten for another engine ({_when(meta_time)} > {_when(engine_time)})"
    return (
        f"{engine_path} ({size} bytes) is not the engine {meta_path.name} describes ({recorded} bytes, sha256 "
        f"{str(meta['engine_sha256'])[:12]}…): {culprit}; rebuild, or copy the engine and its .json together"
    )


def _when(t: float) -> str:
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _metadata_digest(meta: dict[str, Any]) -> str:
    rest = {k: v for k, v in meta.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
