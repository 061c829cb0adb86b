#!/usr/bin/env python3
"""Memory per item: ringcache vs memcached, and ringcache's warm-restart time.

For each value size, loads N items (24-byte keys) into a fresh memcached and a fresh
ringcache (same -m, large enough that nothing is evicted, same -t), and reports the
resident memory (VmRSS) the load added per item, and the overhead beyond key + value.
Then (unless --no-restart) loads N items into a file-backed ringcache on /dev/shm, stops
it gracefully, and times the restart until it accepts connections with the items back.

    bench/memory.py --items 5000000 --values 32,100
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import free_port, rss_bytes, stats, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY_SIZE = 24


def server_cmd(kind, args, port, memory_file=None):
    if kind == "memcached":
        cmd = ["memcached", "-U", "0", "-u", "root"]
    else:
        cmd = [args.ringcache] + args.ringcache_args.split()
        if memory_file:
            cmd += ["--memory-file", memory_file]
    return ["taskset", "-c", args.server_cpus] + cmd + [
        "-l", "127.0.0.1", "-p", str(port), "-t", str(args.threads), "-m", str(args.memory)]


def load(args, port, items, value_size):
    """Sets keys 0..items once, through the load tool's prefill."""
    cmd = ["taskset", "-c", args.load_cpus, args.bench, "--servers", f"127.0.0.1:{port}", "--cpus",
           args.load_cpus, "--keys", str(items), "--key-size", str(KEY_SIZE), "--value-size", str(value_size),
           "-c", "16", "--pipeline", "32", "--prefill", "--requests", "1", "--ratio", "1:0", "--ttl", str(args.ttl)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.exit(f"load failed:\n{' '.join(cmd)}\n{done.stdout}")


def measure(args, kind, value_size):
    port = free_port()
    proc = subprocess.Popen(server_cmd(kind, args, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, kind)
        before = rss_bytes(proc.pid)
        load(args, port, args.items, value_size)
        after = rss_bytes(proc.pid)
        st = stats(port)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    items = int(st.get("curr_items", 0))
    if items != args.items or int(st.get("evictions", 0)) != 0:
        sys.exit(f"{kind}: expected {args.items} items without eviction, got {items} "
                 f"(evictions {st.get('evictions')}); raise --memory")
    per_item = (after - before) / items
    return {"server": kind, "value_size": value_size, "items": items, "rss_before": before,
            "rss_after": after, "rss_per_item": per_item, "overhead_per_item": per_item - KEY_SIZE - value_size}


def restart_time(args, value_size):
    directory = tempfile.mkdtemp(prefix="ringcache-restart-", dir=args.restart_dir)
    try:
        path = os.path.join(directory, "mem")
        port = free_port()
        proc = subprocess.Popen(server_cmd("ringcache", args, port, path), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_port(port, proc, "ringcache")
        load(args, port, args.restart_items, value_size)
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)
        stop_s = time.time() - t0
        port = free_port()
        t0 = time.time()
        proc = subprocess.Popen(server_cmd("ringcache", args, port, path), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_port(port, proc, "ringcache (restart)")
        start_s = time.time() - t0
        items = int(stats(port).get("curr_items", 0))
        proc.terminate()
        proc.wait(timeout=600)
        return {"items_loaded": args.restart_items, "items_recovered": items, "value_size": value_size,
                "graceful_stop_s": stop_s, "restart_s": start_s}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=5_000_000)
    p.add_argument("--values", default="32,100")
    p.add_argument("--ttl", type=int, default=0, help="exptime of the loaded items (0: none)")
    p.add_argument("--ringcache-args", default="", help="extra ringcache flags, e.g. '--expected-items 5000000'")
    p.add_argument("--memory", type=int, default=4096, help="-m for both servers (MB)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--load-cpus", default="1")
    p.add_argument("--restart-items", type=int, default=10_000_000)
    p.add_argument("--restart-dir", default="/dev/shm")
    p.add_argument("--no-restart", action="store_true")
    p.add_argument("--no-memory", action="store_true", help="only measure the restart")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "memory.json"))
    p.add_argument("--ringcache", default=os.path.join(ROOT, "target", "release", "ringcache"))
    p.add_argument("--bench", default=os.path.join(ROOT, "target", "release", "ringcache-bench"))
    args = p.parse_args()

    results = {"command": " ".join(sys.argv), "memory": [], "restart": None}
    print("| value B | server | items | RSS/item B | overhead/item B |")
    print("|---|---|---|---|---|")
    for v in [] if args.no_memory else [int(x) for x in args.values.split(",")]:
        for kind in ("memcached", "ringcache"):
            r = measure(args, kind, v)
            results["memory"].append(r)
            print(f"| {v} | {kind} | {r['items']:,} | {r['rss_per_item']:.1f} | {r['overhead_per_item']:.1f} |",
                  flush=True)
    if not args.no_restart:
        r = restart_time(args, 32)
        results["restart"] = r
        print(f"\nrestart: {r['items_recovered']:,} of {r['items_loaded']:,} items back in {r['restart_s']:.2f} s "
              f"(graceful stop with save: {r['graceful_stop_s']:.2f} s)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
