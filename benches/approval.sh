#!/usr/bin/env bash
# Approval benchmark for jitgate, run by hand (not in CI): checks what benches/approval.rs
# needs, raises the open-file limit, and runs `cargo bench --bench approval`.
#
# Measures (see benches/approval.rs):
#   1. decision-to-release latency across two replicas sharing a redis-server on loopback
#      (p50/p90/p99/max over ROUNDS held requests);
#   2. HELD concurrently held requests with 1 KiB bodies on one replica, per store in STORES:
#      gateway RSS per held request, and the time from one batch approval to the last release.
# It prints figures and asserts no times.
#
# Usage: benches/approval.sh
# Environment (defaults in brackets):
#   ROUNDS [300]             rounds of part 1 (0 skips it and its redis-server)
#   HELD [10000]             held requests of part 2 (0 skips it)
#   STORES [memory,redis]    stores part 2 runs with, comma-separated
#   JITGATE_BIN              gateway binary to run instead of the freshly built one
#   TOPOLOGY [standalone]    part 1's Redis: standalone, sentinel (a primary, two replicas
#                            and three sentinels; every write then waits for a replica), or
#                            cluster (three primaries with a replica each, on loopback)
# Needs on PATH: openssl (signing key), redis-server (part 1, and part 2 with redis).
# Needs `ulimit -n` >= 2*HELD+100 (the bench's client sockets plus the gateway's).
set -euo pipefail

ROUNDS=${ROUNDS:-300}
HELD=${HELD:-10000}
STORES=${STORES:-memory,redis}

die() { echo "approval.sh: $*" >&2; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_uint "$ROUNDS" || die "ROUNDS must be a whole number"
is_uint "$HELD" || die "HELD must be a whole number"
[[ $STORES =~ ^(memory|redis)(,(memory|redis))*$ ]] || die "STORES must list memory and/or redis, comma-separated"
TOPOLOGY=${TOPOLOGY:-standalone}
[[ $TOPOLOGY =~ ^(standalone|sentinel|cluster)$ ]] || die "TOPOLOGY must be standalone, sentinel or cluster"
export TOPOLOGY

command -v openssl >/dev/null 2>&1 || die "openssl is not on PATH (it makes the Ed25519 signing key)"
if ((ROUNDS > 0)) || { ((HELD > 0)) && [[ $STORES == *redis* ]]; }; then
    command -v redis-server >/dev/null 2>&1 || die "redis-server is not on PATH (apt-get install redis-server)"
fi

need=$((2 * HELD + 100))
have=$(ulimit -n)
if [[ $have != unlimited ]] && ((have < need)); then
    ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    have=$(ulimit -n)
    [[ $have == unlimited ]] || ((have >= need)) ||
        die "ulimit -n is $have, HELD=$HELD needs at least $need (raise the hard limit, or lower HELD)"
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export ROUNDS HELD STORES
exec cargo bench --bench approval
