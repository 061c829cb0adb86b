#!/usr/bin/env bash
# Proves the core's boundary: ringcache-core reads no clock, opens no socket and depends on
# nothing of the server's runtime, and inside it the store uses nothing of the protocol;
# and the replication crate's state machines (all but its drivers) do no I/O either.
# Fails with the offending lines or dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
# Code lines only: comments may name what the core stays away from.
if grep -rnE 'Instant::now|SystemTime::now|std::net|glommio|hwlocality|clap::|io_uring|signal_hook' engine/core/src \
    | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'; then
  echo "check-core: ringcache-core must not read a clock or touch the server's runtime (lines above)" >&2
  status=1
fi
# The store knows no protocol: the protocol uses the store's rules, never the reverse.
if grep -rn 'crate::protocol' engine/core/src/store | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'; then
  echo "check-core: the store must not use the protocol module (lines above)" >&2
  status=1
fi
# The replication crate's state machines are sans-IO as well: only its drivers/ touch
# files, sockets or a clock, and it depends on the core, never on the server.
if grep -rnE 'Instant::now|SystemTime::now|std::net|std::fs|glommio' replication/src \
    | grep -v '^replication/src/drivers/' | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'; then
  echo "check-core: outside replication/src/drivers, the replication crate must do no I/O and read no clock (lines above)" >&2
  status=1
fi
if cargo tree -p ringcache-replication -e normal --prefix none --format '{p}' 2>/dev/null | grep -q '^ringcache-server '; then
  echo "check-core: ringcache-replication must not depend on the server" >&2
  status=1
fi
deps="$(cargo tree -p ringcache-core -e normal --prefix none --format '{p}' 2>/dev/null | awk '{print $1}' | sort -u)"
if echo "$deps" | grep -qE '^(glommio|hwlocality|hwlocality-sys|clap|io-uring|signal-hook|socket2|tokio)$'; then
  echo "check-core: ringcache-core depends on: $(echo "$deps" | grep -E '^(glommio|hwlocality|hwlocality-sys|clap|io-uring|signal-hook|socket2|tokio)$' | tr '\n' ' ')" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "check-core: ringcache-core reads no clock and depends on $(echo "$deps" | wc -l) crates, none of the server's runtime"
exit "$status"
