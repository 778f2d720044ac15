"""Generic helpers of the PyTorch side: loading flat arrays back into a model, checkpoints, reproducible
random models, the model packages kept offline and quiet, sample photos.

The model sources by spec (``torchvision:``, ``yolov5:``, ``retinaface:``...) are in :mod:`netdefs.sources`,
which builds on these. torch and the model packages are imported inside the functions: importing this module
is cheap.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import pickle
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trtx_base.errors import UserError

if TYPE_CHECKING:
    import torch


class SourceError(UserError, ValueError):
    """A model spec, checkpoint or state that cannot be used; the message is meant for the user."""


def torch_device(device: Any, flag: str = "--device") -> torch.device:
    """``device`` (``cpu``, ``cuda``, ``cuda:1``) as a torch.device this machine has, or a :class:`SourceError`
    saying why not (no GPU, no such GPU, not a device trtx runs on)."""
    import torch

    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise SourceError(f"{flag} {device}: not a device; use cpu or cuda[:N]") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SourceError(f"{flag} {device}: PyTorch sees no CUDA GPU on this machine; use cpu")
        if device.index is not None and device.index >= count:
            raise SourceError(f"{flag} {device}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    elif device.type != "cpu":
        raise SourceError(f"{flag} {device}: trtx runs PyTorch on cpu or cuda[:N]")
    return device


# ---- environment ----------------------------------------------------------------------------------
def prepare_environment() -> None:
    """Keep yolov5/ultralytics offline and their settings out of $HOME."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="trtx-yolo-cfg-")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence model summaries, settings banners and deprecation warnings of the model packages."""
    loggers = [logging.getLogger(name) for name in ("yolov5", "ultralytics", "Ultralytics")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    import torch

    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it; None when it is not installed."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_images() -> Path:
    """The photos ultralytics ships (``bus.jpg``, ``zidane.jpg``): demos, calibration and tests use them."""
    folder = package_dir("ultralytics")
    if folder is None:
        raise SourceError("the ultralytics package (for its sample photos) is not installed "
                          "(pip install --no-deps ultralytics==8.4.190)")  # fmt: skip
    return folder / "assets"


def randomize_norms(model: torch.nn.Module, seed: int) -> None:
    """Give BatchNorm/GroupNorm/LayerNorm layers random affine parameters and running statistics."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)

    def normal(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=generator) * std)

    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, norms):
                continue
            if getattr(module, "weight", None) is not None:
                uniform(module.weight, 0.5, 1.5)
            if getattr(module, "bias", None) is not None:
                normal(module.bias, 0.1)
            if getattr(module, "running_mean", None) is not None:
                normal(module.running_mean, 0.1)
            if getattr(module, "running_var", None) is not None:
                uniform(module.running_var, 0.5, 1.5)


def randomize_constant_parameters(model: torch.nn.Module, *, spread: float = 1e-3) -> None:
    """Give random values to the parameters a constructor fills with one value or near-zero noise: zero biases,
    class tokens and zero-initialized heads (ViT), N(0, 1e-6) MLP biases, Swin V2's per-head logit scale.
    Left so, a netdef that forgot such a parameter, or mixed up its heads, would still match PyTorch.

    A parameter with more than one value whose values span at most ``spread`` (relative to its largest
    magnitude, or absolute below 1) gets N(0, s) added, from torch's global generator (``seeded``): s =
    fan_in^-0.5 for weights of 2 and more dims; for vectors a tenth of their value (a class prior of -4.6
    spreads by 0.46), at least 0.02."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            largest = float(p.abs().max()) if p.numel() else 0.0
            if p.numel() < 2 or float(p.max() - p.min()) > spread * max(1.0, largest):
                continue
            std = (p[0].numel() ** -0.5) if p.dim() >= 2 else max(0.02, 0.1 * largest)
            p.add_(torch.randn(p.shape) * std)


# ---- state dicts ----------------------------------------------------------------------------------
def _flat(value) -> torch.Tensor:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().reshape(-1)
    return torch.from_numpy(np.array(value, dtype=np.float32, copy=True).reshape(-1))


def load_state(model: torch.nn.Module, mapping: Mapping[str, Any], *, ignore: Iterable[str] = ()) -> None:
    """Load ``name -> flat array`` (a WeightMap, a state_dict) into ``model``'s state_dict.

    Each value is reshaped to its entry's shape and cast to its dtype (``num_batches_tracked`` back to
    int64). Missing names, unexpected names (other than those in ``ignore``) and wrong sizes raise
    :class:`SourceError` listing all of them.
    """
    import torch

    state = model.state_dict()
    ignore = set(ignore)
    missing = [k for k in state if k not in mapping]
    unexpected = [k for k in mapping if k not in state and k not in ignore]
    values = {k: _flat(mapping[k]) for k in state if k in mapping}
    wrong = [
        f"{k} ({v.numel()} values, model needs {state[k].numel()})"
        for k, v in values.items()
        if v.numel() != state[k].numel()
    ]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong size", wrong)):
        if names:
            shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        where = f" from {mapping.path}" if getattr(mapping, "path", None) else ""
        raise SourceError(f"weights{where} do not fit {type(model).__name__}: " + "; ".join(problems))
    new_state = OrderedDict((k, values[k].reshape(state[k].shape).to(state[k].dtype)) for k in state)
    new_state._metadata = getattr(state, "_metadata", None)  # module versions (MNASNet's loader reads them)
    with torch.no_grad():
        model.load_state_dict(new_state, strict=True)


# ---- checkpoints ----------------------------------------------------------------------------------
class UnsafePickleError(SourceError):
    """The checkpoint holds pickled Python objects; loading it would run arbitrary code."""


def _strip_module(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_checkpoint(path: str | os.PathLike, *, unsafe_pickle: bool = False) -> dict[str, Any] | torch.nn.Module:
    """The weights in a checkpoint: a state_dict (``module.`` prefixes stripped) or, for pickled full
    models (ultralytics/yolov5 ``.pt``), the float32 ``nn.Module`` (``ema`` preferred over ``model``).

    Loads with ``torch.load(weights_only=True)``; a checkpoint that needs arbitrary unpickling raises
    :class:`UnsafePickleError` unless ``unsafe_pickle`` is set (:func:`netdefs.sources.load_checkpoint` adds the
    module aliases the model packages' pickles need).
    """
    import torch

    path = os.fspath(path)
    if unsafe_pickle:
        prepare_environment()
        try:
            with quiet():
                ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - unpickling runs the file's own code: anything can come out
            what = _what_file(path) if isinstance(exc, pickle.UnpicklingError) else f"{type(exc).__name__}: {exc}"
            raise SourceError(f"{path}: cannot load checkpoint ({' '.join(what.split())[:300]})") from None
    else:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError or RuntimeError, version-dependent
            if "Unsupported global" not in str(exc):  # not a checkpoint at all: never point at --unsafe-pickle
                raise SourceError(f"{path}: not a PyTorch checkpoint ({_what_file(path)})") from None
            raise UnsafePickleError(
                f"{path} contains pickled Python objects (e.g. a full nn.Module), and loading it would run "
                "arbitrary code. If you trust this file, pass --unsafe-pickle."
            ) from None
    if isinstance(ckpt, dict):
        for key in ("ema", "model", "state_dict", "model_state_dict"):
            if isinstance(ckpt.get(key), (torch.nn.Module, Mapping)):
                ckpt = ckpt[key]
                break
    if isinstance(ckpt, torch.nn.Module):
        return ckpt.float().eval()
    if isinstance(ckpt, Mapping) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return _strip_module(ckpt)
    raise SourceError(
        f"{path}: expected a state_dict or a checkpoint with a 'model'/'ema' entry, got {type(ckpt).__name__}"
    )


def _what_file(path: str) -> str:
    """What a file that torch.load cannot read looks like, for the error message."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        return exc.strerror or str(exc)
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive torch cannot read: truncated or corrupted?"
    first = head.split(b"\n", 1)[0].strip()
    if first.isdigit():
        return "it looks like a .wts file, which already is what gen_wts.py writes: give it to the netdef's -w"
    if head.startswith(b"\x80"):
        return "a pickle torch cannot read: truncated or corrupted?"
    return "neither a zip archive nor a pickle"
