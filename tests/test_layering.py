"""The packages stack in one line, each importing only those before it (docs/developing.md):

    trtx_base < wts < plugins < trtx < netdefs < gen_wts < demo

Every import in the tree counts: module level, inside functions, and ``importlib.import_module("...")`` with a
literal name. Tests and benchmarks sit on top and may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("trtx_base", "wts", "plugins", "trtx", "netdefs", "gen_wts", "demo")
RANK = {name: rank for rank, name in enumerate(LAYERS)}


def _package_of(path: Path) -> str | None:
    top = path.relative_to(ROOT).parts[0]
    name = top[:-3] if top.endswith(".py") else top
    return name if name in RANK else None


def _sources() -> list[Path]:
    files = [p for layer in LAYERS for p in ROOT.glob(f"{layer}/**/*.py")]
    return sorted(files + [p for p in (ROOT / "gen_wts.py", ROOT / "demo.py") if p.is_file()])


def imported_modules(tree: ast.AST, module_name: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``tree``; relative imports resolved against ``module_name``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_name.split(".")[: -node.level]
                found.append((node.lineno, ".".join([*base, node.module] if node.module else base)))
            elif node.module:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module":
            name = _literal_prefix(node.args[0]) if node.args else None
            if name:
                found.append((node.lineno, name))
    return found


def _literal_prefix(arg: ast.expr) -> str | None:
    """The module name an ``import_module`` argument starts with: a literal, or an f-string's literal head
    (``f"netdefs.{name}"`` -> ``netdefs.``)."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return str(arg.values[0].value)
    return None


def violations() -> list[str]:
    bad = []
    for path in _sources():
        package = _package_of(path)
        rel = path.relative_to(ROOT)
        module_name = ".".join(rel.with_suffix("").parts)
        for line, module in imported_modules(ast.parse(path.read_text(), str(path)), module_name):
            top = module.split(".")[0]
            if top in RANK and top != package and RANK[top] >= RANK[package]:
                bad.append(f"{rel}:{line}: {package} imports {module} ({top} is not below {package})")
    return bad


def test_every_import_goes_down_the_layers() -> None:
    assert violations() == []


def test_the_checker_sees_function_level_and_importlib_imports() -> None:
    source = (
        "def f():\n    import netdefs.yolov5\n    importlib.import_module('gen_wts')\nfrom . import x\n"
        "importlib.import_module(f'demo.{name}')\n"
    )
    found = sorted(imported_modules(ast.parse(source), "trtx.sub.mod"))
    assert found == [(2, "netdefs.yolov5"), (3, "gen_wts"), (4, "trtx.sub"), (5, "demo.")]


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_exists(layer: str) -> None:
    assert (ROOT / layer).is_dir() or (ROOT / f"{layer}.py").is_file()
