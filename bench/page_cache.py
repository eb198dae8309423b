#!/usr/bin/env python3
"""What writing into the page cache costs on this machine, with and without strom's
drop-behind (log.page.cache.window.bytes): appends --mib MiB of 1 MiB record batches to a
fresh segment in a temp dir under --dir, for each window given, --repeat times alternating,
after --settle-s seconds of idling (so memory freed by the previous run may go back to the
host, as it would between bursts). Prints wall time, this process's kernel CPU and the
machine's busy CPU (which includes the kernel's writeback threads) per run, then medians.

Example:  python bench/page_cache.py --windows -1,67108864 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from strom.log.page_cache import PageCacheWindow  # noqa: E402
from strom.log.records import NewRecord, build_batch  # noqa: E402
from strom.log.segment import LogSegment  # noqa: E402
from strom.protocol.batch import read_header  # noqa: E402


def machine_busy_ticks() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait


def run(directory: str, window: int, mib: int) -> dict:
    d = tempfile.mkdtemp(prefix="strom-bench-cache-", dir=directory)
    cache = PageCacheWindow(window)
    seg = LogSegment(d, 0, 4096, 10 << 20, created_ms=0, create=True, page_cache=cache)
    batch = bytearray(build_batch([NewRecord(os.urandom((1 << 20) - 100), timestamp=0)]))
    header = read_header(batch)
    try:
        r0, m0, t0 = resource.getrusage(resource.RUSAGE_SELF), machine_busy_ticks(), \
            time.perf_counter()
        for _ in range(mib):
            seg.append(batch, header)
        cache.close()
        wall = time.perf_counter() - t0
        r1, m1 = resource.getrusage(resource.RUSAGE_SELF), machine_busy_ticks()
        tick = os.sysconf("SC_CLK_TCK")
        return {"window": window, "wall_s": wall, "mb_per_s": mib * 1.048576 / wall,
                "sys_s": r1.ru_stime - r0.ru_stime, "machine_busy_s": (m1 - m0) / tick}
    finally:
        seg.delete()
        shutil.rmtree(d, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--windows", default="-1,67108864",
                    help="comma list of log.page.cache.window.bytes values")
    ap.add_argument("--mib", type=int, default=2000, help="MiB written per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--settle-s", type=float, default=10.0)
    ap.add_argument("--dir", default=".", help="where the temp dirs go (a real disk, "
                                                 "not tmpfs)")
    args = ap.parse_args(argv)
    windows = [int(w) for w in args.windows.split(",")]
    runs: dict[int, list[dict]] = {w: [] for w in windows}
    for rep in range(args.repeat):
        for w in windows:
            time.sleep(args.settle_s)
            r = run(args.dir, w, args.mib)
            runs[w].append(r)
            print(f"r{rep} window {w}: {r['mb_per_s']:.0f} MB/s, {r['wall_s']:.2f} s, "
                  f"kernel CPU {r['sys_s']:.2f} s, machine busy {r['machine_busy_s']:.2f} "
                  "CPU-s", flush=True)
    print(f"\nmedians of {args.repeat}, {args.mib} MiB per run")
    print("| log.page.cache.window.bytes | MB/s | kernel CPU (s) | machine busy (CPU-s) |")
    print("|---|---|---|---|")
    for w, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("mb_per_s", "sys_s", "machine_busy_s")}
        print(f"| {w} | {med['mb_per_s']:.0f} | {med['sys_s']:.2f} | "
              f"{med['machine_busy_s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
