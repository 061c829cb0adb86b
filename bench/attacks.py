#!/usr/bin/env python3
"""Hostile clients against ringcache and memcached, side by side: for each attack, the
server's resident memory before and at its peak, and whether a well-behaved client was
served meanwhile. The figures in BENCHMARKS.md ("Memory under attack") come from here.

    bench/attacks.py                       # every attack, both servers
    bench/attacks.py --only bigget crossget --servers ringcache

Each attack is bounded in time and stops by itself. Both servers run 2 threads (-t 2,
so ringcache's cross-shard path is attacked too) and are not pinned; the attacking
clients run on CPU 1. Memory is what counts here, not speed.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from harness import free_port, rss_bytes, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RINGCACHE = os.path.join(ROOT, "target", "release", "ringcache")
MB = 1 << 20


class Server:
    def __init__(self, kind, args, env_limits=None, binary=RINGCACHE):
        self.kind = kind
        self.port = free_port()
        if kind != "memcached":
            cmd = [binary, "-l", "127.0.0.1", "-p", str(self.port)] + args
        else:
            cmd = ["memcached", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-u", "root"] + args
        if env_limits:
            cmd = ["prlimit"] + env_limits + ["--"] + cmd
        every_cpu = os.sched_getaffinity(0) | set(range(os.cpu_count() or 1))
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, every_cpu),
        )
        wait_port(self.port, self.proc, kind)
        self.peak = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self.base = self.rss()

    def rss(self):
        try:
            return rss_bytes(self.proc.pid)
        except OSError:
            return 0

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def connect(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self._stop.set()
        if self.alive():
            self.proc.kill()
        self.proc.wait()


def recv_until(s, end, limit=1 << 30):
    buf = b""
    while not buf.endswith(end) and len(buf) < limit:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    return buf


def set_value(server, key, size):
    s = server.connect()
    s.sendall(b"set %s 0 0 %d\r\n" % (key, size) + b"v" * size + b"\r\n")
    assert recv_until(s, b"\r\n") == b"STORED\r\n"
    s.close()


class Checker:
    """A well-behaved client: set and get a small key in a loop; records the slowest
    round trip and any failure."""

    def __init__(self, server):
        self.server = server
        self.worst = 0.0
        self.failures = 0
        self.ops = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            s = self.server.connect(timeout=10)
        except OSError:
            self.failures += 1
            return
        i = 0
        while not self._stop.is_set():
            i += 1
            v = b"%d" % i
            t = time.time()
            try:
                s.sendall(b"set checker 0 0 %d\r\n%s\r\nget checker\r\n" % (len(v), v))
                got = recv_until(s, b"END\r\n")
                if got != b"STORED\r\nVALUE checker 0 %d\r\n%s\r\nEND\r\n" % (len(v), v):
                    self.failures += 1
            except OSError:
                self.failures += 1
                try:
                    s = self.server.connect(timeout=10)
                except OSError:
                    pass
            self.worst = max(self.worst, time.time() - t)
            self.ops += 1
            time.sleep(0.01)

    def stop(self):
        self._stop.set()
        self.thread.join()


def bigget(server, keys=1000):
    """One request `get big big ...` of a 1 MB value; the client never reads."""
    set_value(server, b"big", 1000 * 1000)
    s = server.connect()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"get " + b" ".join([b"big"] * keys) + b"\r\n")
    time.sleep(4)
    s.close()
    return {}


def bigget4000(server):
    """The same with 4,000 keys; the server runs under a 3 GiB address-space limit."""
    return bigget(server, 4000)


def crossget(server):
    """Pipelined gets of 1 MB values, the client reading everything: 200 gets a batch,
    5 batches, over 4 keys (with ringcache -t 2, about half are owned by the shard the
    connection is not on, so their replies cross the mesh)."""
    keys = [b"crossget-%d" % i for i in range(4)]
    for key in keys:
        set_value(server, key, 1000 * 1000)
    s = server.connect()
    times = []
    for _ in range(5):
        t = time.time()
        batch = [keys[i % len(keys)] for i in range(200)]
        s.sendall(b"".join(b"get %s\r\n" % k for k in batch))
        want = sum(len(b"VALUE %s 0 1000000\r\n" % k) + 1000 * 1000 + 2 + len(b"END\r\n") for k in batch)
        got = 0
        while got < want:
            chunk = s.recv(1 << 22)
            if not chunk:
                raise RuntimeError("closed")
            got += len(chunk)
        times.append(time.time() - t)
    s.close()
    return {"batch_s": round(sorted(times)[len(times) // 2], 3)}


def bigsets(server, conns=40, size=16_000_000):
    """40 connections each send all but the last bytes of a 16 MB set and stop."""
    socks = []
    head = b"set bigset%d 0 0 %d\r\n"
    body = b"x" * (size - 1)
    def one(i):
        s = server.connect(timeout=30)
        s.settimeout(30)
        try:
            s.sendall(head % (i, size) + body)
        except OSError:
            pass
        socks.append(s)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    # Senders blocked by back-pressure stay blocked; give the server time to take what it takes.
    time.sleep(6)
    for s in socks:
        s.close()
    for t in threads:
        t.join(timeout=1)
    return {}


def manyconns(server, count=10_000):
    """10,000 connections opened and held (beyond -c they are refused)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 100), hard))
    socks = []
    refused = 0
    for _ in range(count):
        try:
            socks.append(server.connect(timeout=5))
        except OSError:
            refused += 1
    time.sleep(2)
    for s in socks:
        s.close()
    return {"connect_failed": refused}


def hugemultiget(server, keys=100_000):
    """A get of 100,000 keys (ten of them set), read to the end."""
    for i in range(10):
        set_value(server, b"k%d" % i, 100)
    s = server.connect(timeout=60)
    s.sendall(b"get " + b" ".join(b"k%d" % i for i in range(keys)) + b"\r\n")
    got = recv_until(s, b"END\r\n")
    s.close()
    return {"values": got.count(b"VALUE ")}


def sigterm_unread(server):
    """SIGTERM while a client has 100 MB of replies unread: seconds until exit."""
    set_value(server, b"big", 1000 * 1000)
    s = server.connect()
    s.sendall(b"get big\r\n" * 100)
    time.sleep(1)
    t = time.time()
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=30)
        took = time.time() - t
    except subprocess.TimeoutExpired:
        took = float("inf")
    s.close()
    return {"exit_s": round(took, 2), "exit_status": server.proc.returncode}


def slowloris(server, conns=60):
    """60 connections trickle a command a byte a second against -c 50, idle_timeout=3:
    seconds until a new client is served."""
    # Let the start-up probe's connection close first, so the attack fills -c.
    time.sleep(0.5)
    socks = []
    for _ in range(conns):
        try:
            s = server.connect(timeout=2)
            socks.append(s)
        except OSError:
            pass
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for s in list(socks):
                try:
                    s.send(b"g")
                except OSError:
                    socks.remove(s)
            time.sleep(1)
    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    start = time.time()
    served = None
    while time.time() - start < 30:
        try:
            c = server.connect(timeout=1)
            c.sendall(b"version\r\n")
            if recv_until(c, b"\r\n").startswith(b"VERSION"):
                served = time.time() - start
                c.close()
                break
            c.close()
        except OSError:
            pass
        time.sleep(0.25)
    stop.set()
    t.join()
    return {"served_after_s": None if served is None else round(served, 1)}


def sighup(server):
    """SIGHUP (a careless `kill -HUP`, a closed terminal): still serving afterwards?"""
    server.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    alive = server.alive()
    return {"alive_after_sighup": alive}


# Address-space limit of the server for an attack (prlimit arguments).
LIMITS = {"bigget4000": ["--as=3221225472"]}

ATTACKS = {
    "bigget": (bigget, ["-m", "64", "-t", "2"], ["-m", "64", "-t", "2"]),
    "bigget4000": (bigget4000, ["-m", "64", "-t", "2"], ["-m", "64", "-t", "2"]),
    "crossget": (crossget, ["-m", "64", "-t", "2"], ["-m", "64", "-t", "2"]),
    "bigsets": (bigsets, ["-m", "64", "-t", "2", "-I", "16m"], ["-m", "64", "-t", "2", "-I", "16m"]),
    "manyconns": (manyconns, ["-m", "64", "-t", "2"], ["-m", "64", "-t", "2"]),
    "hugemultiget": (hugemultiget, ["-m", "64", "-t", "2"], ["-m", "64", "-t", "2"]),
    "sigterm_unread": (sigterm_unread, ["-m", "64", "-t", "2"], ["-m", "64", "-t", "2"]),
    "sighup": (sighup, ["-m", "64", "-t", "2"], ["-m", "64", "-t", "2"]),
    "slowloris": (
        slowloris,
        ["-m", "64", "-t", "2", "-c", "50", "-o", "idle_timeout=3"],
        ["-m", "64", "-t", "2", "-c", "50", "-o", "idle_timeout=3"],
    ),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=list(ATTACKS))
    ap.add_argument("--servers", nargs="*", default=["ringcache", "memcached"])
    ap.add_argument(
        "--before",
        metavar="BINARY",
        help="also attack this ringcache binary (an earlier build), labelled 'before'",
    )
    args = ap.parse_args()
    if args.before:
        args.servers.insert(1, "before")
    os.sched_setaffinity(0, {1})
    print(f"{'attack':16} {'server':10} {'base MB':>8} {'peak MB':>8} {'checker':>12}  extra")
    for name in args.only:
        fn, rc_args, mc_args = ATTACKS[name]
        for kind in args.servers:
            server = Server(
                kind,
                mc_args if kind == "memcached" else rc_args,
                env_limits=LIMITS.get(name),
                binary=args.before if kind == "before" else RINGCACHE,
            )
            checker = Checker(server) if name not in ("sigterm_unread", "slowloris", "sighup") else None
            try:
                extra = fn(server)
            except Exception as e:  # the attack itself failing is a result too
                extra = {"error": repr(e)}
            finally:
                if checker:
                    checker.stop()
            alive = server.alive() or name in ("sigterm_unread", "sighup")
            check = "-" if checker is None else f"{checker.failures} fail {checker.worst * 1000:.0f}ms"
            print(
                f"{name:16} {kind:10} {server.base / MB:8.1f} {server.peak / MB:8.1f} {check:>12}  "
                f"{'' if alive else 'DIED '}{extra}",
                flush=True,
            )
            server.stop()


if __name__ == "__main__":
    main()
