#!/usr/bin/env python3
"""Set throughput and latency of a replica group against the same node alone, side by
side in one run, with the batching the group achieved.

Every configuration runs on the same CPUs: the server processes (one node, or all three
nodes of the group) pinned to --server-cpus, the load tool to --load-cpus. The load
(sets only, `ringcache-bench --ratio 0:1`) goes to the group's leader of shard 0, found
with `stats replication`. Medians of --repeats runs, configurations interleaved.

    bench/replication.py --duration 8 --repeats 3

Configurations: alone (no --peers), strong+fsync, strong+none, async+fsync (3 nodes,
-t 1 each).

    bench/replication.py --failover 10

Failover instead: a 3-node group (fsync); a client writes through a follower; the
leader is killed (SIGKILL); the time to the first write acknowledged after the kill,
over N trials, median and max.

    bench/replication.py --catch-up 1000000

Snapshot catch-up instead: a 3-node group holding N items (32-byte values); a fourth
node started with --join is added (`ringcache-ctl add`); the time from the add until
the new node holds every item.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from harness import free_port, stats, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_group(binary, cpus, nodes, durability, workdir, writes="strong"):
    secret = os.path.join(workdir, "secret")
    with open(secret, "w") as f:
        f.write("benchmark-cluster-secret-0123456789")
    client = [free_port() for _ in range(nodes)]
    peer = [free_port() for _ in range(nodes)]
    peers = ",".join(f"{i + 1}=127.0.0.1:{peer[i]}" for i in range(nodes))
    procs = []
    for i in range(nodes):
        args = ["taskset", "-c", cpus, binary, "-l", "127.0.0.1", "-p", str(client[i]), "-t", "1", "-m", "1024"]
        if nodes > 1 or durability:
            args += ["--node-id", str(i + 1), "--peers", peers, "--data-dir", os.path.join(workdir, f"node{i + 1}"),
                     "--cluster-secret-file", secret, "--durability", durability, "--replication", writes]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for i in range(nodes):
        wait_port(client[i], procs[i], f"node {i + 1}")
    leader = client[0]
    deadline = time.time() + 30
    while nodes > 1:
        found = [p for p in client if stats(p, "replication").get("shard:0:role") == "leader"]
        if found:
            leader = found[0]
            break
        if time.time() > deadline:
            sys.exit("no leader")
        time.sleep(0.1)
    return procs, leader


def run(args, name, nodes, durability, writes):
    workdir = tempfile.mkdtemp(prefix="ringcache-repl-bench-")
    procs, port = start_group(args.ringcache, args.server_cpus, nodes, durability, workdir, writes)
    try:
        report = os.path.join(workdir, "report.json")
        cmd = ["taskset", "-c", args.load_cpus, args.bench, "--servers", f"127.0.0.1:{port}", "--cpus",
               args.load_cpus.split(",")[0], "-c", str(args.connections), "--pipeline", str(args.pipeline),
               "--ratio", "0:1", "--keys", "100000", "--value-size", "32", "--duration", str(args.duration),
               "--quiet", "--json", report]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(report) as f:
            r = json.load(f)
        repl = stats(port, "replication") if nodes > 1 else {}
        return {"name": name, "report": r, "replication": repl}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


def failover(args):
    times = []
    for trial in range(args.failover):
        workdir = tempfile.mkdtemp(prefix="ringcache-failover-")
        procs, leader = start_group(args.ringcache, args.server_cpus, 3, "fsync", workdir)
        try:
            ports = [int(p.args[p.args.index("-p") + 1]) for p in procs]
            follower = next(p for p in ports if p != leader)
            c = socket.create_connection(("127.0.0.1", follower), timeout=30)
            def set_once(i):
                c.sendall(f"set k{i} 0 0 1\r\nv\r\n".encode())
                line = b""
                while not line.endswith(b"\r\n"):
                    line += c.recv(1)
                return line
            for i in range(100):
                assert set_once(i) == b"STORED\r\n"
            victim = procs[ports.index(leader)]
            killed = time.monotonic()
            victim.kill()
            i = 100
            while set_once(i) != b"STORED\r\n":
                i += 1
            took = time.monotonic() - killed
            times.append(took)
            print(f"trial {trial + 1}: first acknowledged write {took * 1000:.0f} ms after kill -9 of the leader", flush=True)
            c.close()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                p.wait(timeout=30)
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"failover over {len(times)} trials: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")


def catch_up(args):
    workdir = tempfile.mkdtemp(prefix="ringcache-catchup-")
    secret = os.path.join(workdir, "secret")
    with open(secret, "w") as f:
        f.write("benchmark-cluster-secret-0123456789")
    client = [free_port() for _ in range(4)]
    peer = [free_port() for _ in range(4)]
    addr = lambda i: f"127.0.0.1:{peer[i]}"
    founders = ",".join(f"{i + 1}={addr(i)}" for i in range(3))
    everyone = ",".join(f"{i + 1}={addr(i)}" for i in range(4))
    procs = []
    try:
        for i in range(4):
            a = ["taskset", "-c", args.server_cpus, args.ringcache, "-l", "127.0.0.1", "-p", str(client[i]), "-t", "1",
                 "-m", "2048", "--node-id", str(i + 1), "--peers", everyone if i == 3 else founders,
                 "--data-dir", os.path.join(workdir, f"node{i + 1}"), "--cluster-secret-file", secret]
            if i == 3:
                a.append("--join")
            procs.append(subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(client[i], procs[i], f"node {i + 1}")
        deadline = time.time() + 30
        while not any(stats(p, "replication").get("shard:0:role") == "leader" for p in client[:3]):
            if time.time() > deadline:
                sys.exit("no leader")
            time.sleep(0.1)
        leader = next(p for p in client[:3] if stats(p, "replication").get("shard:0:role") == "leader")
        t = time.monotonic()
        subprocess.run(["taskset", "-c", args.load_cpus, args.bench, "--servers", f"127.0.0.1:{leader}", "--cpus",
                        args.load_cpus.split(",")[0], "-c", "50", "--pipeline", "16", "--ratio", "0:1", "--keys",
                        str(args.catch_up), "--key-dist", "sequential", "--value-size", "32", "--requests",
                        str(args.catch_up), "--quiet"], check=True, stdout=subprocess.DEVNULL)
        items = int(stats(leader).get("curr_items", "0"))
        print(f"loaded {items:,} items into the group in {time.monotonic() - t:.1f} s")
        ctl = os.path.join(os.path.dirname(args.ringcache), "ringcache-ctl")
        nodes = ",".join(f"127.0.0.1:{p}" for p in client)
        t = time.monotonic()
        subprocess.run([ctl, "--nodes", nodes, "--cluster-secret-file", secret, "--timeout", "600", "add", "4",
                        addr(3)], check=True, stdout=subprocess.DEVNULL)
        while int(stats(client[3]).get("curr_items", "0")) < items:
            time.sleep(0.05)
        took = time.monotonic() - t
        repl = stats(client[3], "replication")
        print(f"node 4 holds {items:,} items {took:.2f} s after `ringcache-ctl add` "
              f"(snapshots installed: {repl.get('shard:0:snapshots_installed')})")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


def pick(r, *path):
    for p in path:
        r = r[p]
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ringcache", default=os.path.join(ROOT, "target/release/ringcache"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "target/release/ringcache-bench"))
    ap.add_argument("--server-cpus", default="0")
    ap.add_argument("--load-cpus", default="1")
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--pipeline", type=int, default=1)
    ap.add_argument("--failover", type=int, default=0, help="measure failover over this many trials instead")
    ap.add_argument("--catch-up", type=int, default=0, help="measure a new node's snapshot catch-up with this many items")
    args = ap.parse_args()
    if args.catch_up:
        catch_up(args)
        return
    if args.failover:
        failover(args)
        return
    configs = [("alone", 1, "", ""), ("strong, fsync", 3, "fsync", "strong"), ("strong, none", 3, "none", "strong"),
               ("async, fsync", 3, "fsync", "async")]
    results = {c[0]: [] for c in configs}
    for _ in range(args.repeats):
        for name, nodes, durability, writes in configs:
            res = run(args, name, nodes, durability, writes)
            results[name].append(res)
            r = res["report"]
            m = r["measured"]
            print(f"{name:15} {m['ops_per_sec']:>12,.0f} sets/s  p99 {m['latency']['p99_us']:8.1f} us"
                  f"  errors {m['counters']['errors']} timeouts {m['counters']['timeouts']}", flush=True)
    alone = statistics.median(x["report"]["measured"]["ops_per_sec"] for x in results["alone"])
    print("\n| configuration | sets/s | ratio to alone | p50 us | p99 us | p99.9 us | writes per entry | entries per fsync | bytes per append |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, _, _, _ in configs:
        rs = results[name]
        med = lambda f: statistics.median(f(x) for x in rs)
        thr = med(lambda x: x["report"]["measured"]["ops_per_sec"])
        lat = lambda q: med(lambda x: x["report"]["measured"]["latency"][f"{q}_us"])
        rep = lambda k: med(lambda x: float(x["replication"].get(f"shard:0:{k}", "nan")))
        batching = [f"{rep(k):.2f}" if rs[0]["replication"] else "-" for k in ("writes_per_entry", "entries_per_fsync", "bytes_per_append")]
        print(f"| {name} | {thr:,.0f} | {thr / alone:.2f} | {lat('p50'):.1f} | {lat('p99'):.1f} | {lat('p999'):.1f} | " + " | ".join(batching) + " |")


if __name__ == "__main__":
    main()
