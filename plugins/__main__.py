"""``python -m plugins list`` and ``python -m plugins compile --arch sm_75,sm_86`` (no GPU needed)."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from plugins import compiler, core
from plugins.kernel import ALL_KERNELS, Kernel
from trtx_base.cli import ArgumentParser, positive_int, run

DEFAULT_ARCHS = "sm_75,sm_80,sm_86,sm_89,sm_90,sm_120"


def _load(modules: list[str]) -> None:
    core.discover()
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise core.PluginError(f"--module {name}: cannot import it ({exc})") from None


def cmd_list(args: argparse.Namespace) -> int:
    _load(args.module)
    for key in sorted(core.PLUGINS):
        cls = core.PLUGINS[key]
        print(cls.describe())
        for kernel in cls.kernels:
            dtypes = f" [{', '.join(kernel.dtypes)}]" if kernel.dtypes else ""
            print(f"  kernel {kernel.name} in {kernel.filename}{dtypes}")
        print()
    return 0


def _units(kernels: list[Kernel]) -> dict[tuple, list[Kernel]]:
    """Kernels grouped by what NVRTC compiles: one module per (file or source, options, defines)."""
    units: dict[tuple, list[Kernel]] = {}
    for kernel in kernels:
        for variant in kernel.variants():
            key = (variant.filename, variant.source, variant.options, tuple(sorted(variant.defines.items())))
            units.setdefault(key, []).append(variant)
    return units


def cmd_compile(args: argparse.Namespace) -> int:
    _load(args.module)
    archs = [compiler.normalize_arch(a) for a in args.arch.split(",") if a.strip()]
    if not archs:
        raise core.PluginError(f"--arch {args.arch!r}: name at least one target (sm_XY or compute_XY)")
    units = _units(ALL_KERNELS)
    jobs = [(arch, key, kernels) for key, kernels in units.items() for arch in archs]

    def build(job):
        arch, _, kernels = job
        t0 = time.perf_counter()
        try:
            result = kernels[0].compile(arch, use_cache=not args.no_cache)
            return job, result, None, time.perf_counter() - t0
        except compiler.CompileError as exc:
            return job, None, exc, time.perf_counter() - t0

    failures = 0
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for (arch, key, kernels), result, error, seconds in pool.map(build, jobs):
            names = ", ".join(k.name for k in kernels)
            defines = " ".join(f"-D{k}={v}" for k, v in key[3])
            what = f"{key[0]} ({names}{'; ' + defines if defines else ''})"
            if error is not None:
                failures += 1
                print(f"FAIL {arch:8} {what}\n{error}\n", file=sys.stderr)
            else:
                origin = "cache" if result.cached else f"{seconds:.1f}s"
                print(f"ok   {arch:8} {what}: {len(result.image)} bytes {result.kind} ({origin})")
                if result.log and args.verbose:
                    print(result.log)
    total = len(jobs)
    print(
        f"{total - failures}/{total} compiled (NVRTC {'.'.join(map(str, compiler.nvrtc_version()))}, "
        f"cache {compiler.cache_dir()})"
    )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m plugins", description=__doc__)
    parser.add_argument(
        "--module",
        action="append",
        default=[],
        help="also import this module (its Kernel objects are compiled too); repeatable",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="print every plugin with its fields, input/output dtypes and kernels")
    p_list.set_defaults(func=cmd_list)
    p_compile = sub.add_parser(
        "compile", help="compile every kernel with NVRTC for the given architectures; exit 1 if any fails"
    )
    p_compile.add_argument(
        "--arch",
        default=DEFAULT_ARCHS,
        help=f"comma-separated targets, sm_XY (cubin) or compute_XY (PTX); default {DEFAULT_ARCHS}",
    )
    p_compile.add_argument("--no-cache", action="store_true", help="compile even when the kernel cache has the result")
    p_compile.add_argument("--jobs", type=positive_int, default=4, help="parallel NVRTC compilations (default 4)")
    p_compile.add_argument("--verbose", action="store_true", help="print NVRTC's warnings")
    p_compile.set_defaults(func=cmd_compile)
    args = parser.parse_args(argv)
    return run(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
