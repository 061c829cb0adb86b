#!/usr/bin/env python3
"""Side-by-side comparison of ringcache and memcached with ringcache-bench.

Starts Debian's memcached and ringcache with the same memory and thread count, pins the
servers and the load generator to different CPUs, runs a fixed set of workloads against
each server in alternation (fresh server per run, order swapped every repeat), and prints
one table: throughput, p50/p99/p99.9 latency, hit ratio and server CPU time per
operation (from /proc/PID/stat over the measured phase only), with the ratio
ringcache/memcached of the medians. Writes the table as JSON and Markdown.

    bench/compare.py                      # defaults: 3 repeats x 10 s per workload
    bench/compare.py --duration 5 --repeats 5 --only get-heavy,pipelined-16
    bench/compare.py --scrape-every 1 --baseline /tmp/old/ringcache   # also: ringcache with
        # --admin scraped every second ("ringcache+admin"), and another ringcache build

Needs: cargo, memcached (installed with apt if missing), Linux /proc.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request

from harness import free_port, wait_port, cpu_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (load tool arguments, server memory in MB or None for the default)
WORKLOADS = {
    "get-heavy": (["--ratio", "10:1", "--value-size", "32", "--keys", "100000", "-c", "50", "--pipeline", "1"], None),
    "set-heavy": (["--ratio", "1:10", "--value-size", "32", "--keys", "100000", "-c", "50", "--pipeline", "1"], None),
    "pipelined-16": (["--ratio", "10:1", "--value-size", "32", "--keys", "100000", "-c", "50", "--pipeline", "16"], None),
    "multiget-16": (["--ratio", "10:1", "--multiget", "16", "--value-size", "32", "--keys", "100000", "-c", "50"], None),
    # The meta protocol (mg/ms), the same loads as get-heavy and pipelined-16.
    "meta-get-heavy": (["--protocol", "meta", "--ratio", "10:1", "--value-size", "32", "--keys", "100000", "-c", "50",
                        "--pipeline", "1"], None),
    "meta-pipelined-16": (["--protocol", "meta", "--ratio", "10:1", "--value-size", "32", "--keys", "100000", "-c", "50",
                           "--pipeline", "16"], None),
    "values-4k": (["--ratio", "10:1", "--value-size", "4096", "--keys", "20000", "-c", "50", "--pipeline", "1"], None),
    # 1M keys x ~130 B of item do not fit in 64 MB: eviction decides the hit ratio.
    "zipf-pressure": (
        ["--ratio", "10:1", "--key-dist", "zipf:0.99", "--value-size", "100", "--keys", "1000000", "-c", "50"],
        64,
    ),
}


def start_server(kind, args, port, memory, admin_port=None):
    if kind == "memcached":
        cmd = ["memcached", "-U", "0", "-u", "root"]
    elif kind == "baseline":
        cmd = [args.baseline]
    else:
        cmd = [args.ringcache]
    if admin_port is not None:
        cmd += ["--admin", f"127.0.0.1:{admin_port}"]
    cmd += ["-l", "127.0.0.1", "-p", str(port), "-t", str(args.threads), "-m", str(memory)]
    proc = subprocess.Popen(
        ["taskset", "-c", args.server_cpus] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(port, proc, kind)
    return proc


def run_tool(args, port, extra, json_path):
    cmd = ["taskset", "-c", args.load_cpus, args.bench, "--servers", f"127.0.0.1:{port}",
           "--cpus", args.load_cpus, "--json", json_path] + extra
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.exit(f"load tool failed ({done.returncode}):\n{' '.join(cmd)}\n{done.stdout}")
    with open(json_path) as f:
        return json.load(f)


def scrape(admin_port, every, stop, counts):
    """Scrapes /metrics every `every` seconds until `stop` is set (as Prometheus would)."""
    while not stop.wait(every):
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as r:
            r.read()
        counts.append(1)


def one_run(args, kind, workload, tmp):
    extra, memory = WORKLOADS[workload]
    port = free_port()
    admin_port = free_port() if kind == "ringcache+admin" else None
    proc = start_server(kind, args, port, memory or args.memory, admin_port)
    stop, scrapes = threading.Event(), []
    try:
        # Prefill in its own invocation so the measured phase's server CPU is separate.
        run_tool(args, port, extra + ["--prefill", "--requests", "1"], os.path.join(tmp, "prefill.json"))
        scraper = None
        if admin_port is not None:
            wait_port(admin_port, proc, "admin listener")
            scraper = threading.Thread(target=scrape, args=(admin_port, args.scrape_every, stop, scrapes))
            scraper.start()
        before = cpu_seconds(proc.pid)
        report = run_tool(args, port, extra + ["--duration", str(args.duration), "--seed", "7"],
                          os.path.join(tmp, "run.json"))
        after = cpu_seconds(proc.pid)
        stop.set()
        if scraper is not None:
            scraper.join()
            if not scrapes:
                sys.exit("the admin listener was never scraped")
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=30)
    m = report["measured"]
    c = m["counters"]
    return {
        "ops_per_sec": m["ops_per_sec"],
        "p50_us": m["latency"]["p50_us"],
        "p99_us": m["latency"]["p99_us"],
        "p999_us": m["latency"]["p999_us"],
        "hit_ratio": m["hit_ratio"],
        "cpu_us_per_op": (after - before) * 1e6 / max(m["ops"], 1),
        "errors": c.get("errors", 0) + c.get("timeouts", 0),
    }


def median(runs, key):
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="server threads (-t) for both servers")
    p.add_argument("--memory", type=int, default=1024, help="server memory in MB (-m) unless a workload sets it")
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--load-cpus", default="1")
    p.add_argument("--only", default="", help="comma-separated workload names")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "compare"))
    p.add_argument("--ringcache", default=os.path.join(ROOT, "target", "release", "ringcache"))
    p.add_argument("--bench", default=os.path.join(ROOT, "target", "release", "ringcache-bench"))
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--scrape-every", type=float, default=0,
                   help="also run ringcache with --admin, its /metrics scraped every this many seconds")
    p.add_argument("--baseline", default="", help="also run this other ringcache binary (a build to compare with)")
    args = p.parse_args()

    if shutil.which("memcached") is None:
        subprocess.run(["bash", os.path.join(ROOT, "ops", "install-deps.sh"), "--test"], check=True)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "ringcache-server", "-p", "ringcache-bench"],
                       cwd=ROOT, check=True)
    names = [w for w in WORKLOADS if not args.only or w in args.only.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in names:
            kinds = ["memcached", "ringcache"]
            kinds += ["ringcache+admin"] if args.scrape_every > 0 else []
            kinds += ["baseline"] if args.baseline else []
            runs = {k: [] for k in kinds}
            for rep in range(args.repeats):
                # Each repeat starts with the next kind, so no server always runs first.
                order = kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]
                for kind in order:
                    r = one_run(args, kind, w, tmp)
                    runs[kind].append(r)
                    print(f"{w:14} {kind:15} run {rep + 1}: {r['ops_per_sec']:>12,.0f} ops/s  "
                          f"p99 {r['p99_us']:8.1f} us  cpu {r['cpu_us_per_op']:.2f} us/op", file=sys.stderr)
            results[w] = runs

    keys = [("ops_per_sec", "ops/s", 0), ("p50_us", "p50 us", 1), ("p99_us", "p99 us", 1),
            ("p999_us", "p99.9 us", 1), ("hit_ratio", "hit ratio", 4), ("cpu_us_per_op", "CPU us/op", 2)]
    rows = []
    for w, runs in results.items():
        med = {k: {key: median(runs[k], key) for key, _, _ in keys} for k in runs}
        row = {"workload": w, "runs": runs, "servers": list(runs)}
        for k in runs:
            row[k] = med[k]
            if k == "memcached":
                continue
            ratio = {}
            for key, _, _ in keys:
                a, b = med[k][key], med["memcached"][key]
                ratio[key] = (a / b) if (a is not None and b) else None
            row["ratio" if k == "ringcache" else f"ratio {k}"] = ratio
        rows.append(row)

    header = "| workload | server | " + " | ".join(label for _, label, _ in keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 2)]
    for row in rows:
        for who in row["servers"]:
            lines.append(f"| {row['workload']} | {who} | "
                         + " | ".join(fmt(row[who][k], d) for k, _, d in keys) + " |")
        for who in row["servers"][1:]:
            ratio = row["ratio" if who == "ringcache" else f"ratio {who}"]
            label = "rc/mc" if who == "ringcache" else f"{who}/mc"
            lines.append(f"| {row['workload']} | **ratio {label}** | "
                         + " | ".join(fmt(ratio[k], 2) for k, _, _ in keys) + " |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    meta = {"duration_s": args.duration, "repeats": args.repeats, "threads": args.threads,
            "memory_mb": args.memory, "server_cpus": args.server_cpus, "load_cpus": args.load_cpus,
            "command": " ".join(sys.argv)}
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump({"settings": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(f"Command: `{meta['command']}` (medians of {args.repeats} runs)\n\n{table}\n")
    print(f"\nwrote {args.out}/compare.json and compare.md", file=sys.stderr)


if __name__ == "__main__":
    main()
