#!/usr/bin/env python3
"""Drives a memcached-compatible server on 127.0.0.1:<port> with the real `pymemcache`
client (`pymemcache.client.base.Client`) and checks every result.

Usage: python3 pymemcache_client.py <port>

Exits 0 when every check passed, 1 when any check failed (each failure is printed),
2 on bad usage. A missing `pymemcache` is a failure, never a skip: CI installs it with
`pip install pymemcache`.
"""

import sys
import traceback

try:
    from pymemcache.client.base import Client
    from pymemcache import serde as pm_serde
except ImportError as exc:  # fail loudly: a skipped client test proves nothing
    print(f"FAIL: cannot import pymemcache ({exc}); install it with `pip install pymemcache`")
    sys.exit(1)


class CheckFailed(Exception):
    pass


def check(cond, what):
    """Like `assert`, but not disabled by `python3 -O`."""
    if not cond:
        raise CheckFailed(what)


def eq(got, want, what):
    if got != want:
        shown_got = repr(got) if len(repr(got)) < 300 else repr(got)[:300] + "..."
        shown_want = repr(want) if len(repr(want)) < 300 else repr(want)[:300] + "..."
        raise CheckFailed(f"{what}: got {shown_got}, want {shown_want}")


class FlagsSerde:
    """Stores `(flags, payload_bytes)` tuples with exactly those flags, and hands back
    `(flags_read_from_server, payload)`, so a test sees the flags on the wire."""

    def serialize(self, key, value):
        flags, payload = value
        return payload, flags

    def deserialize(self, key, value, flags):
        return (flags, value)


def client(port, **kw):
    # default_noreply=False: storage commands wait for and report the server's answer
    # unless a call asks for noreply explicitly.
    return Client(
        ("127.0.0.1", port),
        connect_timeout=10,
        timeout=10,
        no_delay=True,
        default_noreply=False,
        **kw,
    )


def test_set_get_delete(c):
    eq(c.get("pm:missing"), None, "get of a never-set key")
    eq(c.get("pm:missing", default=b"dflt"), b"dflt", "get default of a missing key")
    eq(c.set("pm:a", b"alpha"), True, "set pm:a")
    eq(c.get("pm:a"), b"alpha", "get pm:a after set")
    eq(c.set("pm:a", b"beta"), True, "overwrite pm:a")
    eq(c.get("pm:a"), b"beta", "get pm:a after overwrite")
    eq(c.set("pm:empty", b""), True, "set empty value")
    eq(c.get("pm:empty"), b"", "empty value round-trip (must be b'', not a miss)")
    eq(c.delete("pm:a"), True, "delete existing key")
    eq(c.get("pm:a"), None, "get after delete")
    eq(c.delete("pm:a"), False, "delete of an already deleted key reports NOT_FOUND")


def test_gets_cas(c):
    eq(c.gets("pm:cas-missing"), (None, None), "gets of a missing key")
    eq(c.cas("pm:cas-missing", b"x", b"12345"), None, "cas on a missing key (NOT_FOUND)")
    eq(c.set("pm:cas", b"v1"), True, "set pm:cas")
    value, token = c.gets("pm:cas")
    eq(value, b"v1", "gets value")
    check(token is not None and token.isdigit(), f"gets token is a decimal: {token!r}")
    # Re-reading without a write must give the same token.
    eq(c.gets("pm:cas"), (b"v1", token), "gets twice without a write in between")
    eq(c.cas("pm:cas", b"v2", token), True, "cas with the current token succeeds")
    eq(c.get("pm:cas"), b"v2", "value after successful cas")
    eq(c.cas("pm:cas", b"v3", token), False, "cas with a stale token reports EXISTS")
    eq(c.get("pm:cas"), b"v2", "value unchanged after cas conflict")

    # Conflict caused by another client's write between gets and cas.
    other = client(c.server[1])
    try:
        value, token = c.gets("pm:cas")
        eq(other.set("pm:cas", b"from-other"), True, "concurrent writer's set")
        eq(c.cas("pm:cas", b"mine", token), False, "cas after another client's set")
        eq(c.get("pm:cas"), b"from-other", "the other client's value survives")
        value, token2 = c.gets("pm:cas")
        check(token2 != token, f"token changes after a write ({token!r} -> {token2!r})")
        eq(c.cas("pm:cas", b"mine", token2), True, "retry with the fresh token succeeds")
        eq(other.get("pm:cas"), b"mine", "the other client sees the cas result")
    finally:
        other.close()

    # gets_many returns a token per key.
    c.set("pm:gm1", b"one")
    c.set("pm:gm2", b"two")
    many = c.gets_many(["pm:gm1", "pm:gm2", "pm:gm-missing"])
    eq(sorted(many.keys()), ["pm:gm1", "pm:gm2"], "gets_many keys")
    eq(many["pm:gm1"][0], b"one", "gets_many value 1")
    eq(many["pm:gm2"][0], b"two", "gets_many value 2")
    check(many["pm:gm1"][1] != many["pm:gm2"][1], "distinct items have distinct cas tokens")


def test_incr_decr(c):
    eq(c.incr("pm:ctr-missing", 1), None, "incr of a missing key")
    eq(c.decr("pm:ctr-missing", 1), None, "decr of a missing key")
    eq(c.set("pm:ctr", b"10"), True, "set counter")
    eq(c.incr("pm:ctr", 5), 15, "incr by 5")
    eq(c.incr("pm:ctr", 0), 15, "incr by 0")
    eq(c.decr("pm:ctr", 3), 12, "decr by 3")
    eq(c.decr("pm:ctr", 100), 0, "decr below zero clamps at 0")
    # memcached decrements in place and pads a shorter number with spaces ("12" -> "0 "),
    # so only the number itself is compared.
    eq(c.get("pm:ctr").rstrip(b" "), b"0", "counter value after clamp")
    eq(c.set("pm:ctr", b"18446744073709551615"), True, "set counter to 2^64-1")
    eq(c.incr("pm:ctr", 2), 1, "incr wraps around at 2^64")
    eq(c.set("pm:ctr", b"not a number"), True, "set non-numeric")
    raised = False
    try:
        c.incr("pm:ctr", 1)
    except Exception:  # pymemcache raises MemcacheClientError for CLIENT_ERROR
        raised = True
    check(raised, "incr of a non-numeric value must be a client error")
    # The connection must still be usable after the error.
    eq(c.get("pm:ctr"), b"not a number", "value unchanged after failed incr")


def test_add_replace_append_prepend(c):
    eq(c.add("pm:add", b"first"), True, "add of a new key stores")
    eq(c.add("pm:add", b"second"), False, "add of an existing key is NOT_STORED")
    eq(c.get("pm:add"), b"first", "value after failed add")
    eq(c.replace("pm:repl-missing", b"x"), False, "replace of a missing key is NOT_STORED")
    eq(c.get("pm:repl-missing"), None, "replace did not create the key")
    eq(c.replace("pm:add", b"replaced"), True, "replace of an existing key stores")
    eq(c.get("pm:add"), b"replaced", "value after replace")
    eq(c.append("pm:add", b"+tail"), True, "append")
    eq(c.prepend("pm:add", b"head+"), True, "prepend")
    eq(c.get("pm:add"), b"head+replaced+tail", "value after append and prepend")
    eq(c.append("pm:app-missing", b"x"), False, "append to a missing key is NOT_STORED")
    eq(c.prepend("pm:app-missing", b"x"), False, "prepend to a missing key is NOT_STORED")
    eq(c.get("pm:app-missing"), None, "append/prepend did not create the key")


def test_get_many(c):
    # Enough keys that they are spread over every shard, some deliberately missing.
    keys = [f"pm:many:{i}:{'x' * (i % 17)}" for i in range(300)]
    present = {k: f"value-{i}-{k}".encode() * (1 + i % 5) for i, k in enumerate(keys) if i % 3 != 0}
    failed = c.set_many(present)
    eq(failed, [], "set_many reports no failed keys")
    got = c.get_many(keys)
    eq(len(got), len(present), "get_many returns exactly the stored keys")
    for k, v in present.items():
        eq(got.get(k), v, f"get_many value of {k}")
    eq(c.get_many([]), {}, "get_many of no keys")
    eq(c.delete_many(list(present)[:50]), True, "delete_many")
    got = c.get_many(keys)
    eq(len(got), len(present) - 50, "get_many after delete_many")


def test_touch(c):
    eq(c.touch("pm:touch-missing", 100), False, "touch of a missing key reports NOT_FOUND")
    eq(c.set("pm:touch", b"t", expire=100), True, "set with expiry")
    eq(c.touch("pm:touch", 1000), True, "touch of an existing key reports TOUCHED")
    eq(c.get("pm:touch"), b"t", "value survives touch")
    eq(c.touch("pm:touch", 0), True, "touch to never-expire")
    eq(c.get("pm:touch"), b"t", "value survives touch to 0")


def test_noreply(c):
    # With noreply the server must send nothing; any stray reply would be read as the
    # answer to the next command and break these checks.
    eq(c.set("pm:nr", b"quiet", noreply=True), True, "set noreply")
    eq(c.get("pm:nr"), b"quiet", "get after set noreply")
    c.add("pm:nr", b"ignored", noreply=True)
    eq(c.get("pm:nr"), b"quiet", "add noreply on an existing key does not store")
    c.add("pm:nr-add", b"added", noreply=True)
    eq(c.get("pm:nr-add"), b"added", "add noreply on a new key stores")
    c.replace("pm:nr", b"loud", noreply=True)
    eq(c.get("pm:nr"), b"loud", "replace noreply")
    c.append("pm:nr", b"er", noreply=True)
    c.prepend("pm:nr", b"very-", noreply=True)
    eq(c.get("pm:nr"), b"very-louder", "append/prepend noreply")
    c.set("pm:nr-ctr", b"7", noreply=True)
    eq(c.incr("pm:nr-ctr", 5, noreply=True), None, "incr noreply returns None")
    eq(c.decr("pm:nr-ctr", 2, noreply=True), None, "decr noreply returns None")
    eq(c.get("pm:nr-ctr"), b"10", "counter after incr/decr noreply")
    c.touch("pm:nr", 500, noreply=True)
    c.delete("pm:nr", noreply=True)
    eq(c.get("pm:nr"), None, "delete noreply")
    c.delete("pm:nr", noreply=True)  # NOT_FOUND must stay silent too
    value, token = c.gets("pm:nr-add")
    c.cas("pm:nr-add", b"cas-quiet", token, noreply=True)
    eq(c.get("pm:nr-add"), b"cas-quiet", "cas noreply")
    c.cas("pm:nr-add", b"stale", token, noreply=True)  # EXISTS must stay silent
    eq(c.get("pm:nr-add"), b"cas-quiet", "stale cas noreply changes nothing")
    # Many noreply sets back to back, then one read that sees them all.
    for i in range(200):
        c.set(f"pm:nr-bulk:{i}", str(i).encode(), noreply=True)
    got = c.get_many([f"pm:nr-bulk:{i}" for i in range(200)])
    eq(len(got), 200, "all 200 noreply sets are visible")
    for i in range(200):
        eq(got[f"pm:nr-bulk:{i}"], str(i).encode(), f"noreply bulk value {i}")
    check(len(c.version()) > 0, "version answers after the noreply burst")


def test_binary_values(c):
    all_bytes = bytes(range(256))
    eq(c.set("pm:bin", all_bytes), True, "set all 256 byte values")
    eq(c.get("pm:bin"), all_bytes, "all 256 byte values round-trip")
    tricky = b"\r\nEND\r\nVALUE pm:bin 0 3\r\nabc\r\n\x00\r\n" + all_bytes * 4 + b"\r\n"
    eq(c.set("pm:bin-tricky", tricky), True, "set value containing protocol text")
    eq(c.get("pm:bin-tricky"), tricky, "value containing protocol text round-trips")
    many = c.get_many(["pm:bin", "pm:bin-tricky"])
    eq(many, {"pm:bin": all_bytes, "pm:bin-tricky": tricky}, "binary values in one multi-get")
    eq(c.append("pm:bin", b"\x00\xff\r\n"), True, "append binary")
    eq(c.get("pm:bin"), all_bytes + b"\x00\xff\r\n", "binary after append")


def test_flags(port):
    c = client(port, serde=FlagsSerde())
    try:
        for flags in [0, 1, 2, 255, 256, 65535, 65536, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]:
            key = f"pm:flags:{flags}"
            payload = f"payload-{flags}".encode()
            eq(c.set(key, (flags, payload)), True, f"set with flags {flags}")
            eq(c.get(key), (flags, payload), f"flags {flags} round-trip through get")
            value, _token = c.gets(key)
            eq(value, (flags, payload), f"flags {flags} round-trip through gets")
        # Flags survive append (append keeps the original item's flags).
        eq(c.set("pm:flags:app", (4242, b"a")), True, "set flags 4242")
        eq(c.append("pm:flags:app", (1, b"b")), True, "append with other flags")
        eq(c.get("pm:flags:app"), (4242, b"ab"), "append keeps the original flags")
        got = c.get_many([f"pm:flags:{f}" for f in (0, 65535, 0xFFFFFFFF)])
        eq(got["pm:flags:65535"], (65535, b"payload-65535"), "flags in a multi-get")
        eq(got["pm:flags:4294967295"], (0xFFFFFFFF, b"payload-4294967295"), "max flags in a multi-get")
    finally:
        c.close()

    # A realistic serde: pymemcache's pickle serde picks flags by Python type.
    c = client(port, serde=pm_serde.pickle_serde)
    try:
        samples = {
            "pm:serde:bytes": b"raw\x00bytes",
            "pm:serde:str": "text with unicode \u00e9\u4e16",
            "pm:serde:int": 1234567890123,
            "pm:serde:neg": -42,
            "pm:serde:dict": {"a": [1, 2, 3], "b": ("x", None), "c": 1.5},
        }
        for k, v in samples.items():
            eq(c.set(k, v), True, f"serde set {k}")
        for k, v in samples.items():
            got = c.get(k)
            eq(got, v, f"serde round-trip of {k}")
            eq(type(got), type(v), f"serde type of {k} (depends on flags round-trip)")
        eq(c.get_many(list(samples)), samples, "serde multi-get")
    finally:
        c.close()


def test_large_value(c):
    # ~500 KB: bigger than any socket buffer, so it crosses many reads and writes.
    big = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(500 * 1024 + 13))
    eq(c.set("pm:big", big), True, "set ~500 KB value")
    got = c.get("pm:big")
    check(got is not None, "~500 KB value must be found")
    eq(len(got), len(big), "~500 KB value length")
    check(got == big, "~500 KB value content round-trips")
    value, token = c.gets("pm:big")
    check(value == big, "~500 KB value through gets")
    eq(c.cas("pm:big", big[::-1], token), True, "cas of a ~500 KB value")
    check(c.get("pm:big") == big[::-1], "~500 KB value after cas")
    eq(c.set("pm:small-after-big", b"ok"), True, "small set after big value")
    eq(c.get_many(["pm:small-after-big", "pm:big"]), {"pm:small-after-big": b"ok", "pm:big": big[::-1]},
       "multi-get mixing a small and a ~500 KB value")


def main():
    if len(sys.argv) != 2:
        print("usage: pymemcache_client.py <port>")
        return 2
    port = int(sys.argv[1])
    c = client(port)
    tests = [
        ("set/get/delete", lambda: test_set_get_delete(c)),
        ("gets/cas", lambda: test_gets_cas(c)),
        ("incr/decr", lambda: test_incr_decr(c)),
        ("add/replace/append/prepend", lambda: test_add_replace_append_prepend(c)),
        ("get_many", lambda: test_get_many(c)),
        ("touch", lambda: test_touch(c)),
        ("noreply", lambda: test_noreply(c)),
        ("binary values", lambda: test_binary_values(c)),
        ("flags via serde", lambda: test_flags(port)),
        ("~500 KB value", lambda: test_large_value(c)),
    ]
    failures = 0
    for name, run in tests:
        try:
            run()
            print(f"ok   {name}")
        except CheckFailed as exc:
            failures += 1
            print(f"FAIL {name}: {exc}")
        except Exception:  # a protocol error, timeout or crash inside pymemcache
            failures += 1
            print(f"FAIL {name}: unexpected exception")
            traceback.print_exc(file=sys.stdout)
        if failures:
            # A failed section may leave the shared connection out of sync; start over.
            c.close()
    c.close()
    if failures:
        print(f"{failures} of {len(tests)} sections failed")
        return 1
    print(f"all {len(tests)} sections passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
