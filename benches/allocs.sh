#!/usr/bin/env bash
# Heap allocations per proxied request, run by hand (not in CI): jitgate under heaptrack
# in front of bench_origin, one allow route after a deny route, wrk for DURATION seconds on
# CONNECTIONS keep-alive connections; prints allocations per request and the sites that make
# them (one line per call stack tail, per request).
#
# Environment: DURATION [4], CONNECTIONS [4], KEEP=1 keeps the work dir.
set -euo pipefail
DURATION=${DURATION:-4}
CONNECTIONS=${CONNECTIONS:-4}
die() { echo "allocs.sh: $*" >&2; exit 1; }
[[ $DURATION =~ ^[0-9]+$ && $CONNECTIONS =~ ^[0-9]+$ ]] || die "DURATION and CONNECTIONS must be whole numbers"
for tool in heaptrack heaptrack_print wrk curl python3; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install heaptrack wrk curl python3)"
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jitgate-allocs.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ ${KEEP:-0} == 1 ]] && echo "allocs.sh: kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
(cd "$ROOT" && cargo build --release --quiet --bin jitgate --example bench_origin)

"$TARGET_DIR/release/examples/bench_origin" 127.0.0.1:0 --workers 1 >"$WORK/origin.out" 2>&1 &
PIDS+=($!)
ORIGIN=$(wait_line "$WORK/origin.out" '^bench_origin: listening on ' | sed 's/.*on //') || die "origin did not start"
two_route_table "$ORIGIN" >"$WORK/proxy.toml"
RUST_LOG=warn heaptrack -o "$WORK/ht" "$TARGET_DIR/release/jitgate" serve --config "$WORK/proxy.toml" \
    >"$WORK/jitgate.out" 2>&1 &
PIDS+=($!)
URL=$(wait_line "$WORK/jitgate.out" '^jitgate: data plane on ' | sed 's/.*on //')/bench/items/42 ||
    die "jitgate did not start under heaptrack"
curl -s -o /dev/null "$URL"
WARM=$(curl -s -o /dev/null -w '%{http_code}' "$URL")
[[ $WARM == 200 ]] || die "GET $URL answered $WARM"
REQUESTS=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "$URL" | awk '/requests in/ { print $1 }')
GW=$(pgrep -f "release/jitgate serve --config $WORK/proxy.toml" | tail -1) || die "gateway pid not found"
kill -INT "$GW"
for _ in $(seq 1 60); do kill -0 "$GW" 2>/dev/null || break; sleep 0.5; kill -INT "$GW" 2>/dev/null || true; done
sleep 1
heaptrack_print -f "$WORK/ht.zst" --print-flamegraph "$WORK/flame.txt" --flamegraph-cost-type allocations >/dev/null 2>&1 ||
    die "heaptrack_print failed"
TOTAL=$(heaptrack_print -f "$WORK/ht.zst" 2>/dev/null | awk '/^calls to allocation functions:/ { print $5 }')
REQUESTS=$((REQUESTS + 2))
echo "jitgate: $TOTAL heap allocations for $REQUESTS proxied requests (start-up included):" \
    "$(awk -v t="$TOTAL" -v n="$REQUESTS" 'BEGIN { printf "%.2f", t / n }') per request"
python3 - "$WORK/flame.txt" "$REQUESTS" <<'PY'
import collections, sys
skip = ('alloc.rs', 'boxed.rs', 'raw_vec', '_RNv', '__rdl', 'vec/mod.rs', 'spec_from', 'string.rs',
        'slice.rs', 'str.rs', 'unix.rs', 'borrow.rs', '<unresolved>', 'mod.rs')
sites = collections.Counter()
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(' ')
    frames = [f for f in reversed(stack.split(';')) if not any(s in f for s in skip)]
    sites[' <- '.join(frames[:3])] += int(n)
per = int(sys.argv[2])
for site, n in sites.most_common(12):
    if n / per >= 0.05:
        print(f"  {n / per:5.2f}  {site[:150]}")
PY
