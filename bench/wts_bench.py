"""Benchmark: wts.load / wts.save against tensorrtx-style per-value code, same file, same process.

    python bench/wts_bench.py                    # 20 M parameters, best of 5 for wts, 1 run for the baseline
    python bench/wts_bench.py --params 2e6 --repeat 3

The baseline writer is tensorrtx's gen_wts.py loop (``struct.pack('>f', v).hex()`` per value); the
baseline reader does what tensorrtx's C++ ``loadWeights`` does, one hex token at a time. Targets on the
2-core dev machine: read >= 100 Mparam/s, write >= 50 Mparam/s. Rates count float32 values.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import wts  # noqa: E402
from wts.text import write_wts  # noqa: E402

READ_TARGET, WRITE_TARGET = 100e6, 50e6


def synthetic_state(n_params: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A CNN-like state_dict: conv weights of varied sizes, each followed by its BatchNorm vectors."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    total, i = 0, 0
    while total < n_params:
        cin, cout = (int(c) for c in rng.choice([32, 64, 128, 256, 512], size=2))
        k = int(rng.choice([1, 3]))
        size = min(cout * cin * k * k, n_params - total)
        state[f"model.{i}.conv.weight"] = rng.standard_normal(size, dtype=np.float32) * 0.05
        total += size
        for part in ("weight", "bias", "running_mean", "running_var"):
            if total >= n_params:
                break
            n = min(cout, n_params - total)
            state[f"model.{i}.bn.{part}"] = rng.random(n, dtype=np.float32)
            total += n
        i += 1
    return state


def first_tensors(state: dict[str, np.ndarray], n_params: float) -> dict[str, np.ndarray]:
    out, total = {}, 0
    for name, value in state.items():
        if total >= n_params:
            break
        out[name] = value
        total += value.size
    return out


def write_variant(state: dict[str, np.ndarray], path: Path) -> None:
    """The layout of C++ writers using ``std::showbase << std::hex``: ``0x`` prefixes, no zero padding."""
    with open(path, "w") as f:
        f.write(f"{len(state)}\n")
        for k, v in state.items():
            f.write(f"{k} {v.size} " + " ".join(f"0x{b:x}" for b in v.view(np.uint32).tolist()) + "\n")


def baseline_write(state: dict[str, np.ndarray], path: Path) -> None:
    """tensorrtx gen_wts.py: one struct.pack per value."""
    with open(path, "w") as f:
        f.write(f"{len(state)}\n")
        for k, v in state.items():
            vr = v.reshape(-1)
            f.write(f"{k} {len(vr)}")
            for vv in vr:
                f.write(" ")
                f.write(struct.pack(">f", float(vv)).hex())
            f.write("\n")


def baseline_read(path: Path) -> dict[str, np.ndarray]:
    """tensorrtx loadWeights: read the count, then name, size and ``size`` hex tokens, one at a time."""
    out = {}
    with open(path) as f:
        count = int(f.readline())
        for _ in range(count):
            tokens = f.readline().split()
            name, size = tokens[0], int(tokens[1])
            values = np.empty(size, dtype=np.uint32)
            for x in range(size):
                values[x] = int(tokens[2 + x], 16)
            out[name] = values.view(np.float32)
    return out


#: CPU seconds of the fastest run of each timed function (wall clock is what the targets use)
CPU_SECONDS: dict[object, float] = {}


def best_of(repeat: int, fn, cleanup=None) -> float:
    """Fastest wall-clock time of ``repeat`` runs; also records the fastest CPU time in CPU_SECONDS."""
    best = best_cpu = float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
        if cleanup is not None:
            cleanup()
    CPU_SECONDS[best] = best_cpu
    return best


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "load n/a"
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {load}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=float, default=20e6, help="float32 values in the file (default 20e6)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of wts.load/wts.save; the best counts")
    parser.add_argument(
        "--variant-params", type=float, default=2e6, help="values in the 0x-prefixed file (general path)"
    )
    parser.add_argument("--dir", default=None, help="where to write the files (default: a temp dir)")
    args = parser.parse_args()

    n = int(args.params)
    state = synthetic_state(n)
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print(f"command: python bench/wts_bench.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"file: {n:,} float32 values in {len(state)} tensors")

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        ours_path, base_path = Path(tmp) / "ours.wts", Path(tmp) / "baseline.wts"
        runs = iter(range(10**6))

        def save_fresh() -> None:  # a new file each run: deleting the previous one is not the writer's cost
            path = Path(tmp) / f"save{next(runs)}.wts"
            wts.save(state, path)
            saved.append(path)

        def write_plain() -> None:  # the serializer alone, into a plain file like the baseline's
            with open(ours_path, "wb") as f:
                write_wts(state.items(), f, count=len(state))

        saved: list[Path] = []
        save_fresh()  # warm-up: first touch of fresh memory is slow on VMs

        def drop_old() -> None:
            while len(saved) > 1:
                saved.pop(0).unlink()

        save_s = best_of(args.repeat, save_fresh, cleanup=drop_old)
        write_plain()
        write_s = best_of(args.repeat, write_plain)
        wts.load(ours_path)
        read_s = best_of(args.repeat, lambda: wts.load(ours_path))
        size = ours_path.stat().st_size
        identical_api = saved[-1].read_bytes() == ours_path.read_bytes()

        base_write_s = best_of(1, lambda: baseline_write(state, base_path))
        identical = base_path.read_bytes() == ours_path.read_bytes() and identical_api
        loaded = {}
        base_read_s = best_of(1, lambda: loaded.update(baseline_read(ours_path)))
        ours = wts.load(base_path)

        # the general path: 0x-prefixed, unpadded tokens (C++ writers using std::hex), on a subset
        subset = first_tensors(state, args.variant_params)
        variant_path = Path(tmp) / "variant.wts"
        write_variant(subset, variant_path)
        n_variant = sum(v.size for v in subset.values())
        variant_s = best_of(args.repeat, lambda: wts.load(variant_path))
        base_variant_s = best_of(1, lambda: baseline_read(variant_path))
        variant = wts.load(variant_path)
        exact = all(np.array_equal(loaded[k].view(np.uint32), ours[k].view(np.uint32)) for k in state) and all(
            np.array_equal(state[k].view(np.uint32), ours[k].view(np.uint32)) for k in state
        )
        exact = exact and all(np.array_equal(subset[k].view(np.uint32), variant[k].view(np.uint32)) for k in subset)

    rate = lambda seconds: n / seconds / 1e6  # noqa: E731
    print(
        f"file size: {size / 2**20:.1f} MiB; byte-identical to the baseline writer: {identical}; "
        f"bit-exact both ways: {exact}"
    )
    print(f"{'':34} {'wts':>16} {'per-value baseline':>22} {'ratio':>7}   {'target':11} {'wts, CPU time':>16}")
    rows = (
        ("read: wts.load", read_s, base_read_s, READ_TARGET),
        ("write: serializer into a file", write_s, base_write_s, WRITE_TARGET),
        ("write: wts.save (atomic + fsync)", save_s, base_write_s, WRITE_TARGET),
    )
    for label, ours_s, base_s, target in rows:
        verdict = "met" if n / ours_s >= target else "MISSED"
        print(
            f"{label:34} {rate(ours_s):7.1f} Mparam/s {rate(base_s):13.2f} Mparam/s {base_s / ours_s:6.0f}x"
            f"   >= {target / 1e6:3.0f} {verdict:6} {rate(CPU_SECONDS[ours_s]):7.1f} Mparam/s"
        )
    vrate = lambda seconds: n_variant / seconds / 1e6  # noqa: E731
    print(
        f"{'read: 0x, unpadded (general path)':34} {vrate(variant_s):7.1f} Mparam/s {vrate(base_variant_s):13.2f} "
        f"Mparam/s {base_variant_s / variant_s:6.0f}x   {'(no target)':11} "
        f"{vrate(CPU_SECONDS[variant_s]):7.1f} Mparam/s   [{n_variant:,} values]"
    )
    print(
        f"(wts: best of {args.repeat} after a warm-up; baseline: one run, writing a plain file with no fsync; "
        f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())})"
    )
    ok = identical and exact and n / read_s >= READ_TARGET and n / write_s >= WRITE_TARGET
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
