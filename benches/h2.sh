#!/usr/bin/env bash
# HTTP/2 cleartext (h2c, prior knowledge) through jitgate and nginx, run by hand (not in CI).
#
# h2load -> jitgate -> bench_origin and h2load -> nginx -> bench_origin (HTTP/1.1 keep-alive
# upstream for both), interleaved over ROUNDS, reporting median req/s, mean latency and the
# proxy's CPU per request (user+system time of its processes over the requests completed).
# The h2load origin row is the ceiling: bench_origin speaks HTTP/1.1 only, so it is measured
# with h2load's --h1.
#
# Environment: REQUESTS [200000] per run, CLIENTS [64], STREAMS [10] per connection,
# ROUNDS [3], TLS=1 for h2 over TLS (ALPN, a self-signed P-256 certificate made with openssl,
# the same for both proxies) instead of h2c, H1=1 for HTTP/1.1 instead of HTTP/2 (h2load --h1,
# one request at a time per connection; with TLS=1: HTTP/1.1 over TLS, ALPN http/1.1),
# JITGATE_BIN runs another gateway binary (say, a build of an earlier commit) instead of the
# freshly built one, KEEP=1 keeps the work dir.
set -euo pipefail

REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-64}
STREAMS=${STREAMS:-10}
ROUNDS=${ROUNDS:-3}
TLS=${TLS:-0}
H1=${H1:-0}
die() { echo "h2.sh: $*" >&2; exit 1; }
[[ $REQUESTS =~ ^[0-9]+$ && $CLIENTS =~ ^[0-9]+$ && $STREAMS =~ ^[0-9]+$ && $ROUNDS =~ ^[0-9]+$ ]] ||
    die "REQUESTS, CLIENTS, STREAMS and ROUNDS must be whole numbers"
command -v h2load >/dev/null || die "h2load is missing (apt-get install nghttp2-client)"
[[ $TLS == 0 || $TLS == 1 ]] || die "TLS must be 0 or 1"
[[ $H1 == 0 || $H1 == 1 ]] || die "H1 must be 0 or 1"
PROTO_FLAG=""
if [[ $H1 == 1 ]]; then
    PROTO_FLAG=--h1
    STREAMS=1
fi
[[ $TLS == 0 ]] || command -v openssl >/dev/null || die "openssl is missing"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx is missing (apt-get install nginx)"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jitgate-h2.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [[ ${KEEP:-0} == 1 ]] && echo "h2.sh: kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$ROOT" && cargo build --release --quiet --bin jitgate --example bench_origin)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true


"$TARGET_DIR/release/examples/bench_origin" 127.0.0.1:0 >"$WORK/origin.out" 2>&1 &
PIDS+=($!)
ORIGIN=$(wait_line "$WORK/origin.out" '^bench_origin: listening on ' | sed 's/.*on //') || die "origin did not start"

SCHEME=http
TLS_TOML=""
if [[ $TLS == 1 ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >/dev/null 2>&1 || die "openssl could not make a certificate"
    SCHEME=https
    TLS_TOML="tls = { cert = \"$WORK/cert.pem\", key = \"$WORK/key.pem\" }"
fi
two_route_table "$ORIGIN" "$TLS_TOML" >"$WORK/proxy.toml"
"${JITGATE_BIN:-$TARGET_DIR/release/jitgate}" serve --config "$WORK/proxy.toml" >"$WORK/jitgate.out" 2>"$WORK/jitgate.err" &
PIDS+=($!)
JITGATE_PID=$!
JITGATE=$(wait_line "$WORK/jitgate.out" '^jitgate: data plane on ' | sed 's/.*on //') || die "jitgate did not start"

PORT=$(free_port) || die "no free port for nginx"
mkdir -p "$WORK/nginx"
if [[ $TLS == 1 ]]; then
    LISTEN="listen 127.0.0.1:$PORT ssl http2; ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;"
else
    LISTEN="listen 127.0.0.1:$PORT http2;"
fi
sed -e "s|@PREFIX@|$WORK/nginx|g" -e "s|@PORT@|$PORT|g" -e "s|@ORIGIN@|${ORIGIN#http://}|g" \
    -e "s|@ACCESS_LOG@|off|g" -e "s|listen 127.0.0.1:$PORT;|$LISTEN|" \
    "$ROOT/benches/nginx.conf.tmpl" >"$WORK/nginx/nginx.conf"
"$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
NGINX_PID=$!
sleep 1
NGINX_PROCS="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"

ticks() {
    local t=0 p
    for p in $1; do t=$((t + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }'))); done
    echo "$t"
}
HZ=$(getconf CLK_TCK)
declare -A URL PROCS FLAGS
URL[origin]=$ORIGIN/bench/items/42; PROCS[origin]=""; FLAGS[origin]=--h1
URL[jitgate]=$JITGATE/bench/items/42; PROCS[jitgate]=$JITGATE_PID; FLAGS[jitgate]=$PROTO_FLAG
URL[nginx]=$SCHEME://127.0.0.1:$PORT/bench/items/42; PROCS[nginx]=$NGINX_PROCS; FLAGS[nginx]=$PROTO_FLAG
TARGETS=(origin jitgate nginx)

for r in $(seq 1 "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        before=$(ticks "${PROCS[$t]}")
        # shellcheck disable=SC2086
        h2load ${FLAGS[$t]} -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" "${URL[$t]}" >"$WORK/$t-$r.txt" 2>&1 ||
            echo "h2.sh: h2load against $t failed" >&2
        used=$(($(ticks "${PROCS[$t]}") - before))
        rps=$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' "$WORK/$t-$r.txt")
        mean=$(awk '/^time for request:/ { print $6 }' "$WORK/$t-$r.txt")
        ok=$(awk '/^status codes:/ { print $3 }' "$WORK/$t-$r.txt")
        cpu=$(awk -v u="$used" -v hz="$HZ" -v n="${ok:-0}" 'BEGIN { if (n > 0) printf "%.2f", u / hz / n * 1e6; else print "nan" }')
        echo "$rps" >>"$WORK/rps-$t"; echo "$cpu" >>"$WORK/cpu-$t"
        printf 'h2.sh: round %d %-8s %10s req/s  mean %8s  cpu %7s us/req  2xx %s\n' "$r" "$t" "$rps" "$mean" "$cpu" "$ok" >&2
    done
done
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo
echo "$([[ $H1 == 1 ]] && echo "HTTP/1.1" || echo h2)$([[ $TLS == 1 ]] && echo " over TLS" || echo " cleartext") benchmark: h2load -n $REQUESTS -c $CLIENTS -m $STREAMS, median of $ROUNDS round(s) (origin: HTTP/1.1 cleartext)"
for t in "${TARGETS[@]}"; do
    printf '%-8s %12s req/s %10s us/req cpu\n' "$t" "$(median <"$WORK/rps-$t")" "$([[ $t == origin ]] && echo - || median <"$WORK/cpu-$t")"
done
j=$(median <"$WORK/rps-jitgate"); n=$(median <"$WORK/rps-nginx")
jc=$(median <"$WORK/cpu-jitgate"); nc=$(median <"$WORK/cpu-nginx")
awk -v j="$j" -v n="$n" -v jc="$jc" -v nc="$nc" 'BEGIN { printf "jitgate/nginx rps: %.3f   cpu per request: %.3f\n", j / n, jc / nc }'
