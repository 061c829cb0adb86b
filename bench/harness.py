"""Shared helpers of the benchmark scripts: free ports, waiting for a server to listen,
a server's `stats`, and reading a process's CPU time and resident memory from /proc."""

import os
import socket
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=600):
    """Waits until `proc` accepts connections on `port`; exits if it dies or times out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                # A connect to a port nobody listens on can "succeed" as a TCP
                # self-connect when the kernel picks the same source port.
                if s.getsockname() != s.getpeername():
                    return
        except OSError:
            pass
        time.sleep(0.005)
    sys.exit(f"{what} did not listen on {port}")


def cpu_seconds(pid):
    """User + system CPU time of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def stats(port, which=""):
    """The `stats [which]` of the server on `port`, as name -> value strings."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"stats {which}".rstrip().encode() + b"\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    out = {}
    for line in data.decode().splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out
