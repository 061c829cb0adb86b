#!/usr/bin/env python3
"""Drives a server on 127.0.0.1:<port> with the `meta-memcache` library (RevenueCat's
meta-protocol client: every command it sends is `mg ms md ma mn`) and checks what a user
of it relies on. Exits 0 only if every check holds; prints each failed check.

Checked: set/get of str, bytes, int and dict values (the client's serializer flags);
misses; set_cas and compare-and-set (a conflict, then a win); add-mode refill; delete and
invalidate; touch; multi_get over many keys (several shards, quiet pipelines ended by
`mn`); delta counters (missing, initialised, decremented); the lease flow (the first
reader of a missing key wins and recomputes, a second one is told to wait); the
stale-while-revalidate flow (an invalidation marks the value stale, one reader wins the
recompute while the others keep the stale value, and the winner's write makes it fresh);
recache below a TTL; a non-ASCII key (sent in base64); a ~300 KB value.

Usage: meta_memcache_client.py PORT
"""

import sys

from meta_memcache import (
    CacheClient,
    Key,
    LeasePolicy,
    RecachePolicy,
    ServerAddress,
    StalePolicy,
    connection_pool_factory_builder,
)
from meta_memcache.protocol import SetMode

failures = []


def check(what, got, want):
    if got != want:
        failures.append(f"{what}: got {got!r}, want {want!r}")


def client(port):
    return CacheClient.cache_client_from_servers(
        servers=[ServerAddress(host="127.0.0.1", port=port)],
        connection_pool_factory_fn=connection_pool_factory_builder(),
    )


def main():
    port = int(sys.argv[1])
    a, b, c = client(port), client(port), client(port)

    # Values of every kind the serializer knows, and misses.
    for key, value in [("s", "text"), ("b", b"\x00\xffbytes"), ("i", 12345), ("d", {"x": [1, 2]})]:
        check(f"set {key}", a.set(key, value, ttl=100), True)
        check(f"get {key}", b.get(key), value)
    check("miss", a.get("nothing-here"), None)

    # Compare and set.
    token = a.set_cas("cas", "v1", ttl=100)
    check("set_cas gives a token", isinstance(token, int), True)
    value, token2 = a.get_cas("cas")
    check("get_cas value", value, "v1")
    check("get_cas token is the set's", token2, token)
    check("set with a stale token", a.set("cas", "v2", ttl=100, cas_token=token + 1), False)
    check("set with the token", a.set("cas", "v3", ttl=100, cas_token=token), True)
    check("after cas", b.get("cas"), "v3")

    # refill adds only when absent.
    check("refill absent", a.refill("refill", "first", ttl=100), True)
    check("refill present", a.refill("refill", "second", ttl=100), False)
    check("refilled", b.get("refill"), "first")
    check("add mode", a.set("refill", "x", ttl=100, set_mode=SetMode.ADD), False)

    # delete / invalidate / touch.
    check("delete present", a.delete("s"), True)
    check("delete absent", a.delete("s"), False)
    check("invalidate absent", a.invalidate("s"), True)
    check("touch present", a.touch("i", ttl=50), True)
    check("touch absent", a.touch("nothing-here", ttl=50), False)

    # Many keys at once (spread over the server's shards).
    keys = [f"mk{n}" for n in range(60)]
    for n, key in enumerate(keys):
        a.set(key, n, ttl=100)
    got = b.multi_get([Key(k) for k in keys] + [Key("mk-missing")])
    check("multi_get hits", [got[Key(k)] for k in keys], list(range(60)))
    check("multi_get miss", got[Key("mk-missing")], None)

    # Counters.
    check("delta on a missing counter", a.delta("ctr", 5), False)
    check("delta_initialize_and_get", a.delta_initialize_and_get("ctr", 5, initial_value=10, initial_ttl=100), 10)
    check("delta_and_get", a.delta_and_get("ctr", 7), 17)
    check("delta_and_get down", a.delta_and_get("ctr", -20), 0)

    # Lease: the first reader of a missing key wins (gets a miss and recomputes); a
    # second reader is told to wait, and gives up after its retries.
    lease = LeasePolicy(ttl=30, miss_retries=2, miss_retry_wait=0.01, wait_backoff_factor=1.0)
    waits = []
    check("lease winner misses", a.get_or_lease("leased", lease), None)
    check("lease loser waits, then misses", b.get_or_lease("leased", lease, lease_wait_fn=waits.append), None)
    check("the loser was told to wait", len(waits) >= 1, True)
    check("winner writes", a.set("leased", "computed", ttl=100), True)
    check("everyone reads the winner's value", c.get_or_lease("leased", lease), "computed")

    # Stale while revalidate: an invalidation marks the value stale; the first reader wins
    # the recompute (a miss for it), the others keep reading the stale value; the winner's
    # write makes it fresh again.
    stale = StalePolicy(mark_stale_on_deletion_ttl=30)
    check("set swr", a.set("swr", "old", ttl=100), True)
    check("invalidate marks stale", a.delete("swr", stale_policy=stale), True)
    check("first reader wins the recompute", b.get("swr"), None)
    check("others keep the stale value", c.get("swr"), "old")
    check("and again", a.get("swr"), "old")
    check("winner writes", b.set("swr", "new", ttl=100), True)
    check("fresh after the write", c.get("swr"), "new")

    # A late write with an older CAS is kept, marked stale, instead of failing.
    check("set late", a.set("late", "v1", ttl=100), True)
    _, old_token = a.get_cas("late")
    check("invalidate late", a.delete("late", stale_policy=stale), True)
    cas_stale = StalePolicy(mark_stale_on_cas_mismatch=True)
    check("late write accepted as stale", a.set("late", "v2", ttl=100, cas_token=old_token, stale_policy=cas_stale), True)

    # Recache: below the TTL, one reader wins a recompute, the others keep the value.
    check("set recache", a.set("rc", "val", ttl=10), True)
    recache = RecachePolicy(ttl=30)
    check("recache winner misses", a.get("rc", recache_policy=recache), None)
    check("recache others hit", b.get("rc", recache_policy=recache), "val")

    # A key the client sends in base64, and a large value.
    check("unicode key set", a.set("clé-ünï", "accents", ttl=100), True)
    check("unicode key get", b.get("clé-ünï"), "accents")
    big = bytes(range(256)) * 1200
    check("large set", a.set("big", big, ttl=100), True)
    check("large get", b.get("big"), big)

    if failures:
        for f in failures:
            print("FAIL", f)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
