"""Command-line and metadata helpers of detector netdefs: one way to read an option, check a threshold, a count or
an input size, read a class-names file, and find the netdef's section in an engine's metadata (every message one
line, naming the flag)."""

from __future__ import annotations

import re
from typing import Any

from trtx.net import NetdefError
from trtx_base.files import check_input


def flag(args: Any, name: str, default: Any = None) -> Any:
    """``args.name``, or ``default`` when the namespace lacks it or it is None (the option was not given)."""
    value = getattr(args, name, None)
    return default if value is None else value


def fraction(value: Any, flag_name: str) -> float:
    """A threshold in [0, 1] (``--conf``, ``--iou``)."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise NetdefError(f"{flag_name} {value}: must lie in [0, 1]")
    return value


def count(value: Any, flag_name: str) -> int:
    """A count of at least 1 (``--max-det``, ``--top-k``)."""
    if value < 1:
        raise NetdefError(f"{flag_name} {value}: must be at least 1")
    return int(value)


def meta_section(meta: dict, netdef: str) -> dict:
    """The ``netdef`` section of an engine's metadata; a one-line error naming the netdef that built it."""
    section = meta.get(netdef)
    if not isinstance(section, dict):
        raise NetdefError(f"engine metadata has no '{netdef}' section: it was built by netdef {meta.get('netdef')!r}")
    return section


def frozen_thresholds(args: Any, built: dict[str, Any], where: str) -> None:
    """Thresholds an engine's NMS runs with (``built``: {option: value}) cannot change at infer time: a one-line
    error naming those a flag asks to change."""
    changed = {k: v for k, v in built.items() if flag(args, k) is not None and flag(args, k) != v}
    if changed:
        raise NetdefError(f"this engine runs NMS inside ({where}) with "
                          + ", ".join(f"{k}={v}" for k, v in changed.items())
                          + "; rebuild it to change " + ", ".join(changed))  # fmt: skip


def imgsz(text: Any, multiple: int = 32) -> tuple[int, int]:
    """``--imgsz``: ``640`` or ``480,640`` / ``480x640`` (height, width), each a positive multiple of ``multiple``
    (the model's largest stride)."""
    parts = [p for p in re.split(r"[,x ]", str(text).strip()) if p]
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims *= 2
    if len(dims) != 2 or any(d <= 0 or d % multiple for d in dims):
        raise NetdefError(f"--imgsz {text}: the input size must be N or H,W with each a positive multiple of "
                          f"{multiple} (the model's largest stride)")  # fmt: skip
    return dims[0], dims[1]


def names_file(path: str, count: int) -> list[str]:
    """``--names``: class names from a .txt (one per line) or a .yaml/.json (``names``: a list or {id: name}),
    exactly ``count`` of them."""
    p = check_input(path, "--names")
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix.lower() in (".yaml", ".yml", ".json"):
            import yaml

            doc = yaml.safe_load(text)
            names = doc.get("names", doc) if isinstance(doc, dict) else doc
            names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
    except (OSError, ValueError, TypeError, KeyError) as exc:  # ValueError: not UTF-8
        raise NetdefError(f"--names {path}: not a list of class names ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError and its kin: the file is not YAML or JSON
        raise NetdefError(f"--names {path}: not YAML or JSON ({type(exc).__name__})") from None
    if len(names) != count:
        raise NetdefError(f"--names {path} lists {len(names)} names but the weights have {count} classes")
    return [str(n) for n in names]
