"""Every netdef behind one command: ``python -m netdefs list`` and ``python -m netdefs <model> <command> ...``.

The netdefs are the families registered in ``netdefs.FAMILIES``; each declares its models (``NETDEF.models``,
or one per ``--arch``). ``python -m netdefs resnet50 build -w r50.wts`` runs resnet's CLI with
``--arch resnet50`` filled in; a family name (``resnet``) runs its default arch; ``yolov5s-seg`` fills in
``--variant s --task seg``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import netdefs
from trtx_base.cli import ArgumentParser


@dataclass(frozen=True)
class Entry:
    """One model name and the netdef family that serves it."""

    name: str
    family: str
    #: the file that runs the family's CLI (``netdefs/resnet.py``; a package family has a thin script of that name)
    path: Path
    default: bool
    #: the netdef CLI options that select it (``("--arch", name)``; empty: the family's only model)
    options: tuple[str, ...] = ()


def fail(message: str) -> NoReturn:
    """A usage error: one line on stderr, exit status 2 (as argparse and the netdef CLI)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def discover() -> tuple[list[Entry], dict[str, str]]:
    """(every model name with its family, in registry order; families that failed to import -> the error)."""
    entries: list[Entry] = []
    errors: dict[str, str] = {}
    for family in netdefs.FAMILIES:
        try:
            nd = netdefs.load(family)
        except Exception as exc:  # noqa: BLE001 - one broken netdef must not hide the others
            errors[family] = f"{type(exc).__name__}: {exc}"
            continue
        path = Path("netdefs") / f"{family}.py"
        entries += [Entry(m.name, family, path, m.default, m.options) for m in nd.model_names()]
    return entries, errors


def resolve(name: str, entries: list[Entry]) -> tuple[str, tuple[str, ...]]:
    """Model or family ``name`` -> (family, options to fill in); no options for a family name."""
    matches = [e for e in entries if e.name == name]
    if len(matches) > 1:
        files = ", ".join(f"netdefs/{e.family}.py" for e in matches)
        fail(f"model {name!r} is defined by several netdefs ({files}); run one of them directly")
    if matches:
        return matches[0].family, matches[0].options
    if any(e.family == name for e in entries):
        return name, ()
    fail(f"no netdef serves {name!r}; `python -m netdefs list` shows the models")


def cmd_list(entries: list[Entry], errors: dict[str, str]) -> int:
    width = max([len(e.name) for e in entries] + [5])
    print(f"{'model':<{width}}  netdef")
    for e in entries:
        print(f"{e.name:<{width}}  {e.path.as_posix()}" + ("  (default)" if e.default else ""))
    for family, error in errors.items():
        print(f"warning: netdef {family} could not be imported: {error}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(
        prog="python -m netdefs",
        description="Run any netdef by model name. `list` prints every model and the file that serves it; "
        "`<model> <command> ...` runs that file's CLI (build, check, inspect, infer, bench) with the options that "
        "select <model> filled in (--arch <model>; yolov5s-seg: --variant s --task seg).",
    )
    parser.add_argument("model", help="`list`, a model name (resnet50, mobilenet_v2, ...) or a netdef family name")
    parser.add_argument("command", nargs="?", help="build | check | inspect | infer | bench (see <model> --help)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the netdef CLI's options for that command")
    if not argv:
        parser.error("give `list` or a model name")
    if argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    entries, errors = discover()
    if argv[0] == "list":
        return cmd_list(entries, errors)
    model, rest = argv[0], argv[1:]
    family, selects = resolve(model, entries)
    from trtx.cli import main as netdef_main

    if not rest or rest[0].startswith("-"):  # `python -m netdefs resnet50 --help`: the netdef's own help
        return netdef_main(netdefs.load(family), rest or ["--help"])
    command, options = rest[0], rest[1:]
    for flag, value in zip(selects[::2], selects[1::2]):
        if any(o == flag or o.startswith(f"{flag}=") for o in options):
            other = f"run `python -m netdefs {family} ...` to choose another"
            fail(f"{model!r} already selects {flag} {value}; {other}")
    return netdef_main(netdefs.load(family), [command, *selects, *options])


if __name__ == "__main__":
    sys.exit(main())
