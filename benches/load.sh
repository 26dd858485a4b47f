#!/usr/bin/env bash
# Load benchmark for jitgate, run by hand (not in CI).
#
# Measures the same tiny origin four ways, on this machine, in the same run:
#   origin   wrk -> bench_origin                      (the ceiling)
#   jitgate  wrk -> jitgate -> bench_origin           (allow route after ~50 others)
#   hyper    wrk -> bare_proxy -> bench_origin        (a bare hyper proxy: the floor hyper sets)
#   nginx    wrk -> nginx (keepalive pool) -> bench_origin
# Targets are interleaved over several rounds (origin, jitgate, nginx, origin, ...) so drift on
# the machine hits all of them alike, and the report gives medians and ratios, never pass/fail.
# Besides rps and p99 it reports CPU per request: the user+system time (/proc/PID/stat) the
# target's own processes spent during a run, divided by the requests wrk completed (for the
# origin target, the origin's; for nginx, its master and workers; for jitgate, the gateway's).
#
# Usage: benches/load.sh
# Environment (defaults in brackets):
#   DURATION [10]      seconds per wrk run (1..300)
#   CONNECTIONS [64]   wrk connections
#   THREADS [2]        wrk threads
#   ROUNDS [3]         interleaved rounds (1..20)
#   WARMUP [2]         seconds of unmeasured load per target before the rounds (0 to skip)
#   ORIGIN_WORKERS [nproc]  bench_origin tokio workers
#   BENCH_PATH [/bench/items/42]  request path (only the catch-all route matches it)
#   ACCESS_LOG [off]   jitgate's [log] access (off, text, json); with text or json nginx
#                      writes its access log too (buffered, like jitgate's), so both pay for one
#   KEEP=1             keep the work dir (configs, logs, raw wrk output)
#   JITGATE_BIN        gateway binary to run instead of the freshly built one
#   BASELINE_BIN       a second gateway binary (say, a build of an earlier commit) run beside
#                      it as target "baseline" with the same table, interleaved, for
#                      before/after figures from one run
#
# Everything listens on 127.0.0.1 and every wrk run targets 127.0.0.1 only.
set -euo pipefail

DURATION=${DURATION:-10}
DURATION=${DURATION%s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
WARMUP=${WARMUP%s}
ORIGIN_WORKERS=${ORIGIN_WORKERS:-$(nproc)}
BENCH_PATH=${BENCH_PATH:-/bench/items/42}
ACCESS_LOG=${ACCESS_LOG:-off}

die() { echo "load.sh: $*" >&2; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_uint "$DURATION" && ((DURATION >= 1 && DURATION <= 300)) || die "DURATION must be 1..300 seconds"
is_uint "$ROUNDS" && ((ROUNDS >= 1 && ROUNDS <= 20)) || die "ROUNDS must be 1..20"
is_uint "$WARMUP" && ((WARMUP <= 60)) || die "WARMUP must be 0..60 seconds"
is_uint "$CONNECTIONS" && ((CONNECTIONS >= 1 && CONNECTIONS <= 10000)) || die "CONNECTIONS must be 1..10000"
is_uint "$THREADS" && ((THREADS >= 1 && THREADS <= CONNECTIONS)) || die "THREADS must be 1..CONNECTIONS"
is_uint "$ORIGIN_WORKERS" && ((ORIGIN_WORKERS >= 1)) || die "ORIGIN_WORKERS must be >= 1"
[[ $BENCH_PATH == /* ]] || die "BENCH_PATH must start with /"
[[ $ACCESS_LOG =~ ^(off|text|json)$ ]] || die "ACCESS_LOG must be off, text or json"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jitgate-load.XXXXXX")
chmod 755 "$WORK"
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "load.sh: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -----------------------------------------------------------------------------------

have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]]; }

install_pkg() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "$1 is missing and we are not root: install it"
        sudo=(sudo)
    fi
    echo "load.sh: installing $1" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -q "$1" >/dev/null ||
        { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q "$1" >/dev/null; } ||
        die "could not install $1"
}

have nginx || install_pkg nginx
have wrk || install_pkg wrk
have curl || install_pkg curl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

echo "load.sh: building (release)" >&2
(cd "$ROOT" && cargo build --release --quiet --bin jitgate --example bench_origin --example bare_proxy)
JITGATE_BIN=${JITGATE_BIN:-$TARGET_DIR/release/jitgate}
ORIGIN_BIN=$TARGET_DIR/release/examples/bench_origin
BARE_BIN=$TARGET_DIR/release/examples/bare_proxy

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- helpers ---------------------------------------------------------------------------------

# A free port on 127.0.0.1 (nothing answers a connect). Only nginx needs one: bench_origin and
# jitgate bind port 0 and announce what they got.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((30000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# wait_for_line FILE REGEX PID SECONDS: prints the first matching line, fails if PID dies first.
wait_for_line() {
    local file=$1 re=$2 pid=$3 deadline=$((SECONDS + $4)) line
    while ((SECONDS < deadline)); do
        line=$(grep -m1 -E "$re" "$file" 2>/dev/null || true)
        if [[ -n $line ]]; then
            echo "$line"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# wait_http_200 URL SECONDS
wait_http_200() {
    local url=$1 deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        if [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" || true) == 200 ]]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# --- origin ----------------------------------------------------------------------------------

"$ORIGIN_BIN" 127.0.0.1:0 --workers "$ORIGIN_WORKERS" >"$WORK/origin.out" 2>"$WORK/origin.err" &
PIDS+=($!)
declare -A PROCS
PROCS[origin]=$!
line=$(wait_for_line "$WORK/origin.out" '^bench_origin: listening on ' $! 20) ||
    die "bench_origin did not start: $(cat "$WORK/origin.err")"
ORIGIN_URL=${line#bench_origin: listening on }
ORIGIN_HOSTPORT=${ORIGIN_URL#http://}
[[ $ORIGIN_HOSTPORT == 127.0.0.1:* ]] || die "origin not on 127.0.0.1: $ORIGIN_URL"

declare -A URL
TARGETS=(origin)
URL[origin]=$ORIGIN_URL$BENCH_PATH

# --- jitgate ---------------------------------------------------------------------------------

# A realistic table: deny and approve routes for sensitive areas, specific allow routes with
# methods, hosts and named segments, then the catch-all. BENCH_PATH only matches the catch-all,
# so every request walks the whole table (the worst case for first-match-wins).
gen_config() {
    local i
    cat <<EOF
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
watch = false

[store]
kind = "memory"

[[upstreams]]
name = "bench"
url = "$ORIGIN_URL"

EOF
    for i in $(seq 1 8); do
        cat <<EOF
[[routes]]
name = "deny-internal-$i"
path = "/internal/svc-$i/**"
action = "deny"

EOF
    done
    for i in $(seq 1 14); do
        cat <<EOF
[[routes]]
name = "approve-prod-$i"
methods = ["POST", "PUT", "DELETE"]
path = "/v1/deployments/prod-$i/**"
upstream = "bench"
action = "approve"
[routes.approval]
approvers = ["group:oncall", "user:alice"]
quorum = 1

EOF
    done
    for i in $(seq 1 6); do
        cat <<EOF
[[routes]]
name = "approve-admin-$i"
path = "/admin/tenant-$i/{resource}/**"
upstream = "bench"
action = "approve"
[routes.approval]
approvers = ["group:security"]
quorum = 1

EOF
    done
    for i in $(seq 1 12); do
        cat <<EOF
[[routes]]
name = "api-v$i-read"
methods = ["GET", "HEAD"]
path = "/api/v$i/users/{id}/*"
upstream = "bench"
action = "allow"

EOF
    done
    for i in $(seq 1 10); do
        cat <<EOF
[[routes]]
name = "static-$i"
host = "static-$i.example.com"
path = "/assets/**"
upstream = "bench"
action = "allow"

EOF
    done
    cat <<EOF
[[routes]]
name = "everything-else"
path = "/**"
upstream = "bench"
action = "allow"
EOF
}

gen_config >"$WORK/proxy.toml"
ROUTES=$(grep -c '^\[\[routes\]\]' "$WORK/proxy.toml")
# The baseline (an earlier build) may predate [log]: it gets the table without it.
cp "$WORK/proxy.toml" "$WORK/baseline.toml"
printf '\n[log]\naccess = "%s"\n' "$ACCESS_LOG" >>"$WORK/proxy.toml"

gateway_skip() {
    echo "load.sh: SKIP $1: $2" >&2
    echo "load.sh:   (config: $WORK/proxy.toml; stderr tail below)" >&2
    tail -n 15 "$WORK/$1.err" 2>/dev/null | sed 's/^/load.sh:   | /' >&2 || true
}

# start_gateway NAME BIN CONFIG: runs BIN with CONFIG and adds it as target NAME once it
# answers.
start_gateway() {
    local name=$1 bin=$2 config=$3 pid line url
    if [[ ! -x $bin ]]; then
        gateway_skip "$name" "binary $bin not built"
        return
    fi
    "$bin" serve --config "$config" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    pid=$!
    PIDS+=("$pid")
    if line=$(wait_for_line "$WORK/$name.out" '^jitgate: data plane on ' "$pid" 20); then
        url=${line#jitgate: data plane on }
        if [[ $url != http://127.0.0.1:* ]]; then
            gateway_skip "$name" "data plane not on http://127.0.0.1 ($url)"
        elif ! wait_http_200 "$url$BENCH_PATH" 10; then
            gateway_skip "$name" "GET $url$BENCH_PATH did not answer 200"
        else
            TARGETS+=("$name")
            URL[$name]=$url$BENCH_PATH
            PROCS[$name]=$pid
        fi
    elif kill -0 "$pid" 2>/dev/null; then
        gateway_skip "$name" "no 'jitgate: data plane on' line on stdout within 20 s"
    else
        gateway_skip "$name" "'jitgate serve' exited before announcing its address"
    fi
}

start_gateway jitgate "$JITGATE_BIN" "$WORK/proxy.toml"
if [[ -n ${BASELINE_BIN:-} ]]; then
    start_gateway baseline "$BASELINE_BIN" "$WORK/baseline.toml"
fi

# --- bare hyper proxy ------------------------------------------------------------------------

"$BARE_BIN" 127.0.0.1:0 "$ORIGIN_URL" >"$WORK/hyper.out" 2>"$WORK/hyper.err" &
PIDS+=($!)
if line=$(wait_for_line "$WORK/hyper.out" '^bare_proxy: listening on ' $! 20) &&
    wait_http_200 "${line#bare_proxy: listening on }$BENCH_PATH" 10; then
    TARGETS+=(hyper)
    URL[hyper]=${line#bare_proxy: listening on }$BENCH_PATH
    PROCS[hyper]=$!
else
    echo "load.sh: SKIP hyper: bare_proxy did not answer: $(tail -5 "$WORK/hyper.err")" >&2
fi

# --- nginx -----------------------------------------------------------------------------------

NGINX_PORT=$(free_port) || die "no free port for nginx"
NGINX_PREFIX=$WORK/nginx
mkdir -p "$NGINX_PREFIX"
if [[ $ACCESS_LOG == off ]]; then
    NGINX_ACCESS_LOG=off
else
    NGINX_ACCESS_LOG="$NGINX_PREFIX/access.log combined buffer=64k flush=200ms"
fi
sed -e "s|@PREFIX@|$NGINX_PREFIX|g" -e "s|@PORT@|$NGINX_PORT|g" -e "s|@ORIGIN@|$ORIGIN_HOSTPORT|g" \
    -e "s|@ACCESS_LOG@|$NGINX_ACCESS_LOG|g" \
    "$ROOT/benches/nginx.conf.tmpl" >"$NGINX_PREFIX/nginx.conf"
"$NGINX" -p "$NGINX_PREFIX" -e "$NGINX_PREFIX/error.log" -c "$NGINX_PREFIX/nginx.conf" \
    -g 'daemon off;' >"$WORK/nginx.out" 2>&1 &
PIDS+=($!)
NGINX_MASTER=$!
if wait_http_200 "http://127.0.0.1:$NGINX_PORT$BENCH_PATH" 10; then
    TARGETS+=(nginx)
    URL[nginx]=http://127.0.0.1:$NGINX_PORT$BENCH_PATH
    PROCS[nginx]="$NGINX_MASTER $(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"
else
    echo "load.sh: SKIP nginx: not answering 200: $(cat "$WORK/nginx.out" "$NGINX_PREFIX/error.log" 2>/dev/null | tail -5)" >&2
fi
wait_http_200 "${URL[origin]}" 10 || die "origin not answering 200"

# --- runs ------------------------------------------------------------------------------------

# to_ms VALUE_WITH_UNIT -> milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

median() {
    sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks "PID..." -> user+system clock ticks those processes have used so far. The command
# name in /proc/PID/stat may hold spaces: fields are counted after its closing parenthesis.
cpu_ticks() {
    local pid total=0 rest
    for pid in $1; do
        rest=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + $(awk '{ print $12 + $13 }' <<<"$rest")))
    done
    echo "$total"
}

run_wrk() { # run_wrk TARGET SECONDS OUTFILE
    timeout $(($2 + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2"s --latency "${URL[$1]}" >"$3" 2>&1 ||
        echo "load.sh: wrk against $1 failed (see $3)" >&2
}

echo "load.sh: $(nproc) CPUs; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; $ROUNDS round(s); origin workers $ORIGIN_WORKERS; jitgate table $ROUTES routes; access log $ACCESS_LOG" >&2
echo "load.sh: targets: ${TARGETS[*]}" >&2

if ((WARMUP > 0)); then
    for t in "${TARGETS[@]}"; do
        run_wrk "$t" "$WARMUP" "$WORK/warmup-$t.txt"
    done
fi

for r in $(seq 1 "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        out=$WORK/wrk-$t-$r.txt
        ticks_before=$(cpu_ticks "${PROCS[$t]}")
        run_wrk "$t" "$DURATION" "$out"
        ticks=$(($(cpu_ticks "${PROCS[$t]}") - ticks_before))
        requests=$(awk '/requests in/ { print $1 }' "$out")
        cpu_us=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="${requests:-0}" \
            'BEGIN { if (n > 0) printf "%.2f", t / hz / n * 1e6; else print "nan" }')
        echo "$cpu_us" >>"$WORK/cpu-$t"
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
        p99=$(awk '$1 == "99%" { print $2 }' "$out")
        non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$out")
        sockerr=$(awk '/Socket errors/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")
        rps=${rps:-0}
        p99ms=$(to_ms "${p99:-0}")
        echo "$rps" >>"$WORK/rps-$t"
        echo "$p99ms" >>"$WORK/p99-$t"
        echo $((${non2xx:-0} + ${sockerr:-0})) >>"$WORK/err-$t"
        printf 'load.sh: round %d %-8s %12s req/s  p99 %9s ms  cpu %7s us/req  errors %s\n' \
            "$r" "$t" "$rps" "$p99ms" "$cpu_us" "$((${non2xx:-0} + ${sockerr:-0}))" >&2
    done
done

# --- report ----------------------------------------------------------------------------------

declare -A RPS P99 ERR CPU
for t in "${TARGETS[@]}"; do
    RPS[$t]=$(median <"$WORK/rps-$t")
    CPU[$t]=$(median <"$WORK/cpu-$t")
    P99[$t]=$(median <"$WORK/p99-$t")
    ERR[$t]=$(awk '{ s += $1 } END { print s + 0 }' "$WORK/err-$t")
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f", a - b }'; }

echo
echo "jitgate load benchmark: $(nproc) CPUs, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, median of $ROUNDS round(s), GET $BENCH_PATH, access log $ACCESS_LOG"
printf '%-8s %14s %12s %14s %12s %8s\n' target "req/s" "p99 ms" "added p99 ms" "cpu us/req" errors
for t in origin jitgate baseline hyper nginx; do
    [[ $t == baseline && -z ${BASELINE_BIN:-} ]] && continue
    if [[ -n ${RPS[$t]:-} ]]; then
        added=$([[ $t == origin ]] && echo "-" || minus "${P99[$t]}" "${P99[origin]}")
        printf '%-8s %14s %12s %14s %12s %8s\n' "$t" "${RPS[$t]}" "${P99[$t]}" "$added" "${CPU[$t]}" "${ERR[$t]}"
    else
        printf '%-8s %14s %12s %14s %12s %8s\n' "$t" skipped - - - -
    fi
done
echo
if [[ -n ${RPS[nginx]:-} ]]; then
    echo "nginx/origin   rps: $(ratio "${RPS[nginx]}" "${RPS[origin]}")"
fi
if [[ -n ${RPS[jitgate]:-} ]]; then
    echo "jitgate/origin rps: $(ratio "${RPS[jitgate]}" "${RPS[origin]}")"
    [[ -n ${RPS[nginx]:-} ]] && echo "jitgate/nginx  rps: $(ratio "${RPS[jitgate]}" "${RPS[nginx]}")"
    echo "jitgate added p99: $(minus "${P99[jitgate]}" "${P99[origin]}") ms"
    [[ -n ${CPU[nginx]:-} ]] && echo "jitgate/nginx  cpu per request: $(ratio "${CPU[jitgate]}" "${CPU[nginx]}")"
fi
if [[ -n ${RPS[nginx]:-} ]]; then
    echo "nginx   added p99: $(minus "${P99[nginx]}" "${P99[origin]}") ms"
fi
if [[ -n ${RPS[hyper]:-} ]]; then
    echo "hyper   added p99: $(minus "${P99[hyper]}" "${P99[origin]}") ms"
    [[ -n ${RPS[nginx]:-} ]] && echo "hyper/nginx    rps: $(ratio "${RPS[hyper]}" "${RPS[nginx]}")   cpu per request: $(ratio "${CPU[hyper]}" "${CPU[nginx]}")"
    [[ -n ${RPS[jitgate]:-} ]] && echo "jitgate/hyper  rps: $(ratio "${RPS[jitgate]}" "${RPS[hyper]}")   cpu per request: $(ratio "${CPU[jitgate]}" "${CPU[hyper]}")"
fi
if [[ -n ${RPS[baseline]:-} && -n ${RPS[jitgate]:-} ]]; then
    echo "jitgate/baseline rps: $(ratio "${RPS[jitgate]}" "${RPS[baseline]}")"
    [[ -n ${RPS[nginx]:-} ]] && echo "baseline/nginx rps: $(ratio "${RPS[baseline]}" "${RPS[nginx]}")"
    echo "baseline added p99: $(minus "${P99[baseline]}" "${P99[origin]}") ms"
    echo "jitgate/baseline cpu per request: $(ratio "${CPU[jitgate]}" "${CPU[baseline]}")"
fi
for t in "${TARGETS[@]}"; do
    if [[ ${ERR[$t]} != 0 ]]; then
        echo "WARNING: $t had ${ERR[$t]} non-2xx responses or socket errors; its numbers are suspect"
    fi
done
echo "(all processes share this machine's CPUs with wrk: compare ratios within one run, not absolute numbers across machines)"
