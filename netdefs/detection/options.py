"""Command-line and metadata helpers of detector netdefs: one way to read an option, check a threshold or a
count, and find the netdef's section in an engine's metadata (every message one line, naming the flag)."""

from __future__ import annotations

from typing import Any

from trtx.net import NetdefError


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
    if int(value) != value or value < 1:
        raise NetdefError(f"{flag_name} {value}: must be an integer of at least 1")
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
