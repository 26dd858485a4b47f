# Shared by the hand-run bench scripts (benches/h2.sh, benches/allocs.sh); sourced, not run.

# wait_line FILE REGEX: prints the first line of FILE matching REGEX, waiting up to 30 s.
wait_line() {
    for _ in $(seq 1 300); do
        grep -m1 -E "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# two_route_table ORIGIN_URL [SERVER_LINE]: a jitgate table with a deny route and the
# catch-all allow route to ORIGIN_URL, loopback listeners, no access log; SERVER_LINE is
# added to [server] (e.g. its `tls`).
two_route_table() {
    cat <<TOML
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
watch = false
${2:-}

[log]
access = "off"

[[upstreams]]
name = "bench"
url = "$1"

[[routes]]
name = "deny-internal"
path = "/internal/**"
action = "deny"

[[routes]]
name = "everything-else"
path = "/**"
upstream = "bench"
action = "allow"
TOML
}

# free_port: a port on 127.0.0.1 that nothing answers on (for nginx, which cannot bind 0),
# below Linux's default ephemeral range (32768-60999): after a run, thousands of connections
# linger there in TIME_WAIT and a listener cannot bind their ports.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}
