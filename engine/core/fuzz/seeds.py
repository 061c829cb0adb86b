#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into corpus/<target>/seed-*:

- parse, shard: request streams a memcached client sends (every command, noreply,
  pipelining, a bad data chunk, a too-large value, odd numbers);
- restore: the segment bytes and metadata a real `ringcache -t 1 -m 4 -e FILE` saved
  on SIGTERM (built from target/release/ringcache, which must exist), with and without
  the checksums left for the target to fix.

The corpus directories also keep what fuzzing found; this script only (re)writes seeds.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
RINGCACHE = os.path.join(ROOT, "target", "release", "ringcache")

STREAMS = {
    "basic": b"set a 0 0 1\r\nx\r\nget a\r\ngets a b c\r\ndelete a\r\nget a\r\n",
    "modes": b"add k 5 0 2\r\nhi\r\nappend k 0 0 1\r\n!\r\nprepend k 0 0 1\r\n<\r\nreplace k 1 0 3\r\nabc\r\n"
    b"cas k 0 0 1 1\r\nz\r\ngets k\r\n",
    "arith": b"set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nincr n 18446744073709551615\r\nincr x 1\r\n",
    "ttl": b"set t 0 1 1\r\nx\r\ntouch t 100\r\ngat 0 t\r\ngats -1 t\r\nflush_all 10\r\nflush_all\r\n",
    "noreply": b"set q 0 0 1 noreply\r\nx\r\ndelete q noreply\r\nincr q 1 noreply\r\nflush_all noreply\r\n",
    "errors": b"set a 0 0 3\r\nabcd\r\nbogus\r\nset k 99999999999 0 1\r\nx\r\nget " + b"k" * 251 + b"\r\n",
    "too_large": b"set big 0 0 2000000\r\n" + b"v" * 300 + b"\r\nget big\r\n",
    "misc": b"version\r\nverbosity 1\r\nstats\r\nquit\r\n",
    "meta": b"ms k 2 T100 F5 c k\r\nhi\r\nmg k s v f t c k O123 h l\r\nmg k N30 R10 T5 v\r\nmd k I T30\r\n"
    b"mg k v c\r\nms k 2 I C1 q\r\nxx\r\nma n N0 J5 D2 MD v t c\r\nme k\r\nmn\r\nms k 3 MA C0\r\nabc\r\n"
    b"ms v 2 MA N30 E77 c\r\nhi\r\nmd v x F3 E5\r\nmd v x I\r\nmg w N9 E8 c\r\n",
    "meta_keys": b"ms a2V5 3 b k c\r\nabc\r\nmg a2V5 b k v\r\nmd a2V b\r\nme a2V5 b\r\nmg q v q\r\nmg k v v\r\n"
    b"ms k 5 MX\r\nhello\r\nms k 9999999 q\r\nx\r\nma k Dx\r\nmg " + b"k" * 251 + b" v\r\n",
}


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"seed-{name}"), "wb") as f:
        f.write(data)


def restore_seeds():
    if not os.path.exists(RINGCACHE):
        sys.exit(f"{RINGCACHE} is missing: cargo build --release first")
    with tempfile.TemporaryDirectory() as tmp:
        mem = os.path.join(tmp, "mem")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [RINGCACHE, "-l", "127.0.0.1", "-p", str(port), "-t", "1", "-m", "4", "-e", mem],
            stderr=subprocess.DEVNULL,
        )
        for _ in range(500):
            try:
                c = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.01)
        for i in range(20):
            value = b"value-%d" % i
            c.sendall(b"set key%d %d 0 %d\r\n%s\r\n" % (i, i * 7, len(value), value))
            assert c.recv(100) == b"STORED\r\n"
        c.sendall(b"delete key3\r\n")
        c.recv(100)
        c.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        meta = open(mem + ".shard0.meta", "rb").read()
        data = open(mem + ".shard0", "rb").read()
    # MAGIC (8) + 6 settings (48) + clock base (8) + oldest_live (4), then one 27-byte
    # record per segment: state, class, never-expires, write_at, gen, created,
    # access_base, max_expiry, crc.
    records = 8 + 48 + 8 + 4
    write_at = int.from_bytes(meta[records + 3 : records + 7], "little")
    segments = data[:write_at]
    assert len(segments) < 65536
    body_with_crc = meta[56:]
    header = len(segments).to_bytes(2, "little")
    # Checksums fixed by the target: the body without its CRC.
    write("restore", "saved-fixed", b"\x01" + header + segments + body_with_crc[:-4])
    # As saved: the CRCs must verify by themselves (the settings prefix is the target's,
    # identical to what the server wrote, so the file CRC still matches).
    write("restore", "saved-intact", b"\x00" + header + segments + body_with_crc)


def main():
    for name, stream in STREAMS.items():
        write("parse", name, b"\x00" + stream)
        write("shard", name, b"\x00\x20" + stream)
    restore_seeds()


if __name__ == "__main__":
    main()
