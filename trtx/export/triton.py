"""A Triton model repository entry for trtx engines: ``REPO/NAME/config.pbtxt`` + ``REPO/NAME/1/model.plan``.

The config is Triton's ``ModelConfig`` in protobuf text format, every field read from the engine metadata:

* ``platform: "tensorrt_plan"``; the plan is the engine file byte for byte.
* Batching. An engine whose inputs have a dynamic batch axis with a profile from 1 to MAX (``--batch 1:OPT:MAX``)
  and whose outputs all follow that axis gets ``max_batch_size: MAX``, dims without the batch axis, and
  ``dynamic_batching`` (preferred sizes OPT and MAX). Otherwise ``max_batch_size: 0`` and full dims: a fixed
  profile (``--batch N``) fixes the batch axis at N; a profile starting above 1, or outputs that do not follow
  the batch (the rows kept by TensorRT's NMS layer), keep it variable (-1) and the client sends whole batches.
* ``instance_group [{ count: K, kind: KIND_GPU }]``.
* Several engines (one per GPU arch, as full TensorRT builds them): one plan each, chosen by Triton through
  ``cc_model_filenames`` ("8.6" -> model_sm86.plan). A TensorRT-RTX engine serves all its archs from one plan.
* ``parameters``: the plugins the engine needs, and the TensorRT that built it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trtx.export import ExportError, written_by
from trtx.export.bundle import Bundle
from trtx_base import dtypes
from trtx_base.backend import arch_capability
from trtx_base.files import atomic_write, file_errors

MARKER = "# written by python -m trtx export triton"
PLAN = "model.plan"
VERSION = "1"
DEFAULT_QUEUE_DELAY_US = 100
SERVER = "Triton's tensorrt_plan backend"


@dataclass(frozen=True)
class Batching:
    """How Triton batches requests for an engine: ``max_batch_size`` and, where 0, why not."""

    max_batch_size: int
    preferred: tuple[int, ...] = ()
    reason: str | None = None


def batching(bundle: Bundle) -> Batching:
    meta = bundle.meta
    b = meta["batch"]
    lo, opt, hi = int(b["min"]), int(b["opt"]), int(b["max"])
    dynamic = all(t["shape"][:1] == [-1] for t in meta["inputs"])
    if not dynamic:
        return Batching(0, reason="the inputs have no dynamic batch axis")
    if lo == hi:
        return Batching(0, reason=f"the engine's batch is fixed at {hi} (build --batch 1:OPT:MAX to batch)")
    unknown = [t["name"] for t in meta["outputs"] if "batched" not in t]
    if unknown:
        return Batching(0, reason=f"the metadata does not say whether outputs {', '.join(unknown)} follow the batch "
                                  "axis (written before trtx recorded it): rebuild to batch")  # fmt: skip
    unbatched = [t["name"] for t in meta["outputs"] if not t["batched"]]
    if unbatched:
        return Batching(0, reason=f"outputs {', '.join(unbatched)} do not follow the batch axis (data-dependent rows)")
    if lo != 1:
        return Batching(0, reason=f"the batch profile starts at {lo}: Triton sends batches from 1, so clients "
                                  f"send whole batches of {lo}..{hi}")  # fmt: skip
    return Batching(hi, tuple(sorted({s for s in (opt, hi) if s > 1})))


def dims(tensor: dict, batch: Batching, fixed_batch: int | None) -> list[int]:
    """The tensor's dims as the config states them: without the batch axis where Triton batches, else full
    (the batch axis fixed where the profile is, -1 where it varies or the rows are data-dependent)."""
    shape = [int(d) for d in tensor["shape"]]
    if batch.max_batch_size:
        return shape[1:]
    follows_batch = tensor.get("batched", True) is not False
    if shape[:1] == [-1] and fixed_batch is not None and follows_batch:
        shape[0] = fixed_batch
    return shape


def plan_files(bundles: Sequence[Bundle]) -> tuple[list[str], dict[str, str]]:
    """(plan file names in ``bundles`` order, {compute capability "8.6": file}); one engine: model.plan, no map."""
    if len(bundles) == 1:
        return [PLAN], {}
    names, by_cc, owner = [], {}, {}
    for b in bundles:
        if not b.archs:
            raise ExportError(
                f"{b.meta_path}: names no GPU arch (built before trtx recorded them), so Triton could not tell "
                "which GPU its plan is for; rebuild it, or export it alone"
            )
        name = f"model_{'_'.join(a.replace('_', '') for a in b.archs)}.plan"
        for arch in b.archs:
            if arch in owner:
                raise ExportError(f"{arch} is served by both {owner[arch]} and {b.path}: pass one engine per GPU arch")
            owner[arch] = b.path
            major, minor = arch_capability(arch)
            by_cc[f"{major}.{minor}"] = name
        names.append(name)
    return names, by_cc


def check_same_model(bundles: Sequence[Bundle]) -> None:
    first = bundles[0]
    for b in bundles[1:]:
        for what, a, c in zip(("inputs", "outputs", "batch profile"), first.signature, b.signature):
            if a != c:
                raise ExportError(f"{b.path} is not the same model as {first.path}: its {what} differ ({c} vs {a})")


def config_text(
    bundles: Sequence[Bundle],
    name: str,
    *,
    instances: int = 1,
    max_queue_delay_us: int | None = None,
) -> str:
    """The ``config.pbtxt`` of ``bundles`` (one engine, or one per GPU arch) as model ``name``."""
    if not bundles:
        raise ExportError("export triton: no engine given")
    if instances < 1:
        raise ExportError(f"--instances {instances}: must be at least 1")
    check_same_model(bundles)
    first = bundles[0]
    batch = batching(first)
    if max_queue_delay_us is not None and not batch.max_batch_size:
        raise ExportError(f"--max-queue-delay-us: Triton cannot batch {first.path}: {batch.reason}")
    if max_queue_delay_us is not None and max_queue_delay_us < 0:
        raise ExportError(f"--max-queue-delay-us {max_queue_delay_us}: must be >= 0")
    b = first.meta["batch"]
    fixed = int(b["max"]) if int(b["min"]) == int(b["max"]) else None
    files, by_cc = plan_files(bundles)

    lines = [
        f"{MARKER} from {', '.join(x.path.name for x in bundles)}",
        *(
            f"# {x.path.name}: {x.built_with}, GPU archs {', '.join(x.archs) or 'not recorded'}, "
            f"sha256 {x.meta['engine_sha256']}"
            for x in bundles
        ),  # fmt: skip
        *(f"# warning: {w}" for x in bundles for w in x.warnings(SERVER)),
        f"name: {_q(name)}",
        'platform: "tensorrt_plan"',
        f"max_batch_size: {batch.max_batch_size}",
    ]
    if batch.reason:
        lines.append(f"# max_batch_size 0: {batch.reason}")
    for kind, tensors in (("input", first.meta["inputs"]), ("output", first.meta["outputs"])):
        lines.append(f"{kind} [")
        blocks = [_tensor(t, dims(t, batch, fixed)) for t in tensors]
        lines.append(",\n".join(blocks))
        lines.append("]")
    if batch.max_batch_size:
        delay = DEFAULT_QUEUE_DELAY_US if max_queue_delay_us is None else max_queue_delay_us
        lines.append("dynamic_batching {")
        if batch.preferred:
            lines.append(f"  preferred_batch_size: [ {', '.join(map(str, batch.preferred))} ]")
        lines.append(f"  max_queue_delay_microseconds: {delay}")
        lines.append("}")
    lines += ["instance_group [", "  {", f"    count: {instances}", "    kind: KIND_GPU", "  }", "]"]
    if by_cc:
        for cc, file in sorted(by_cc.items(), key=lambda kv: tuple(map(int, kv[0].split(".")))):
            lines.append(f"cc_model_filenames {{ key: {_q(cc)} value: {_q(file)} }}")
    else:
        lines.append(f"default_model_filename: {_q(files[0])}")
    params = {"trtx_plugins": first.plugins_note(), "trtx_built_with": first.built_with}
    for key, value in params.items():
        lines.append(f"parameters {{ key: {_q(key)} value {{ string_value: {_q(value)} }} }}")
    return "\n".join(lines) + "\n"


def _tensor(t: dict, shape: list[int]) -> str:
    if not shape:  # a scalar per request: Triton wants dims [1] reshaped to []
        spec = "    dims: [ 1 ]\n    reshape { shape: [ ] }"
    else:
        spec = f"    dims: [ {', '.join(map(str, shape))} ]"
    return f"  {{\n    name: {_q(t['name'])}\n    data_type: {dtypes.triton_type(t['dtype'])}\n{spec}\n  }}"


def _q(text: str) -> str:
    """A protobuf text-format string literal."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def write_repository(
    bundles: Sequence[Bundle],
    repo: str | os.PathLike,
    name: str,
    *,
    instances: int = 1,
    max_queue_delay_us: int | None = None,
) -> Path:
    """Write ``repo/name/config.pbtxt`` and ``repo/name/1/*.plan``; returns the model folder. The folder is
    written beside its final place and renamed into it, so Triton never sees half of it; a folder of that name is
    replaced only where this command wrote it (its config starts with our marker)."""
    if not name or "/" in name or name in (".", "..") or name.startswith("."):
        raise ExportError(f"--name {name!r}: a Triton model name is a folder name (no '/', not starting with '.')")
    text = config_text(bundles, name, instances=instances, max_queue_delay_us=max_queue_delay_us)
    files, _ = plan_files(bundles)
    repo = Path(repo)
    target = repo / name
    for b in bundles:
        if _inside(b.path, target):
            raise ExportError(f"{b.path} lies inside {target}, the model folder this export would replace")
    if target.exists() and not written_by(target / "config.pbtxt", MARKER):
        raise ExportError(
            f"{target} exists and was not written by trtx export triton: remove it, or pick another --name"
        )
    if repo.exists() and not repo.is_dir():
        raise ExportError(f"--repo {repo} is a file; give the model repository's folder")
    staging = repo / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with file_errors(repo, "write into"):
        repo.mkdir(parents=True, exist_ok=True)
        staging.mkdir()  # with the umask's mode (mkdtemp's 0700 would shut out a Triton running as another user)
    try:
        for b, file in zip(bundles, files):
            atomic_write(staging / VERSION / file, b.data)
        atomic_write(staging / "config.pbtxt", text)
        with file_errors(target, "write"):
            _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _swap_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing ``target`` is moved aside first and put back on failure."""
    if not target.exists():
        os.replace(staging, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, aside / target.name)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(aside / target.name, target)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True
