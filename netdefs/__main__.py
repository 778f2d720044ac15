"""Every netdef behind one command: ``python -m netdefs list`` and ``python -m netdefs <model> <command> ...``.

Netdef modules are found by scanning ``netdefs/*.py`` for a module-level ``ARCHS`` table (or, for a
single-model netdef without one, ``def define``; its ``NAME`` is the model), so a new family file shows up here
without being registered anywhere. ``python -m netdefs resnet50 build -w r50.wts`` runs
``netdefs/resnet.py``'s CLI with ``--arch resnet50`` filled in; a family name (``resnet``) runs its default arch.
A netdef whose models are picked by other options declares ``MODELS = {name: (option, value, ...)}``
(yolov5: ``yolov5s-seg`` -> ``--variant s --task seg``) and ``DEFAULT_MODEL``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NoReturn

PACKAGE_DIR = Path(__file__).resolve().parent
_NETDEF_RE = re.compile(r"^(ARCHS\b|def define\()", re.MULTILINE)


@dataclass(frozen=True)
class Entry:
    """One model name and the netdef file that serves it."""

    name: str
    module: str
    path: Path
    default: bool
    #: the netdef CLI options that select it (``("--arch", name)`` for an ARCHS entry; empty: the only model)
    options: tuple[str, ...] = ()


def fail(message: str) -> NoReturn:
    """A usage error: one line on stderr, exit status 2 (as argparse and the netdef CLI)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def netdef_modules() -> list[str]:
    """Names of the modules in netdefs/ that define ``ARCHS`` or ``define`` at module level, sorted."""
    return sorted(
        p.stem for p in PACKAGE_DIR.glob("*.py") if not p.stem.startswith("_") and _NETDEF_RE.search(p.read_text())
    )


def load(module: str) -> ModuleType:
    return importlib.import_module(f"netdefs.{module}")


def discover() -> tuple[list[Entry], dict[str, str]]:
    """(every model name with its file, in file order; modules that failed to import -> the error)."""
    entries: list[Entry] = []
    errors: dict[str, str] = {}
    for name in netdef_modules():
        try:
            module = load(name)
        except Exception as exc:  # noqa: BLE001 - one broken netdef must not hide the others
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        path = Path(module.__file__)
        models = getattr(module, "MODELS", None)
        if models:
            default = getattr(module, "DEFAULT_MODEL", None)
            entries += [Entry(m, name, path, m == default, tuple(o)) for m, o in models.items()]
            continue
        archs = list(getattr(module, "ARCHS", None) or {})
        if not archs:  # a single-model netdef: its NAME, run without --arch
            entries.append(Entry(getattr(module, "NAME", name), name, path, True))
            continue
        default = getattr(module, "DEFAULT_ARCH", archs[0])
        entries += [Entry(arch, name, path, arch == default, ("--arch", arch)) for arch in archs]
    return entries, errors


def resolve(name: str, entries: list[Entry]) -> tuple[str, tuple[str, ...]]:
    """Model or family ``name`` -> (module, options to fill in); no options for a family name."""
    matches = [e for e in entries if e.name == name]
    if len(matches) > 1:
        files = ", ".join(f"netdefs/{e.module}.py" for e in matches)
        fail(f"model {name!r} is defined by several netdefs ({files}); run one of them directly")
    if matches:
        return matches[0].module, matches[0].options
    if any(e.module == name for e in entries):
        return name, ()
    fail(f"no netdef serves {name!r}; `python -m netdefs list` shows the models")


def cmd_list(entries: list[Entry], errors: dict[str, str]) -> int:
    width = max([len(e.name) for e in entries] + [5])
    print(f"{'model':<{width}}  netdef")
    for e in entries:
        rel = e.path.relative_to(PACKAGE_DIR.parent) if e.path.is_relative_to(PACKAGE_DIR.parent) else e.path
        print(f"{e.name:<{width}}  {rel}" + ("  (default)" if e.default else ""))
    for module, error in errors.items():
        print(f"warning: netdefs/{module}.py could not be imported: {error}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m netdefs",
        description="Run any netdef by model name. `list` prints every model and the file that serves it; "
        "`<model> <command> ...` runs that file's CLI (build, check, inspect, infer, bench) with the options that "
        "select <model> filled in (--arch <model>; yolov5s-seg: --variant s --task seg).",
    )
    parser.add_argument("model", help="`list`, a model name (resnet50, mobilenet_v2, ...) or a netdef file name")
    parser.add_argument("command", nargs="?", help="build | check | inspect | infer | bench (see <model> --help)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the netdef CLI's options for that command")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    entries, errors = discover()
    if argv[0] == "list":
        return cmd_list(entries, errors)
    model, rest = argv[0], argv[1:]
    module_name, selects = resolve(model, entries)
    from trtx.cli import main as netdef_main

    if not rest or rest[0].startswith("-"):  # `python -m netdefs resnet50 --help`: the netdef's own help
        return netdef_main(load(module_name), rest or ["--help"])
    command, options = rest[0], rest[1:]
    for flag, value in zip(selects[::2], selects[1::2]):
        if any(o == flag or o.startswith(f"{flag}=") for o in options):
            other = f"run `python -m netdefs {module_name} ...` to choose another"
            fail(f"{model!r} already selects {flag} {value}; {other}")
    return netdef_main(load(module_name), [command, *selects, *options])


if __name__ == "__main__":
    sys.exit(main())
