#!/usr/bin/env bash
# Install (if needed) and start Debian's nginx serving a folder of catalogs over HTTP on loopback,
# for the remote-catalog tests: http://127.0.0.1:8089/ serves $root (default
# /var/lib/survey-engine-test/www), with range requests (nginx's default for static files), HEAD,
# and an access log of every request with its status, Range header and bytes sent
# ($state/access.log: method, URI, status, bytes, Range header, client address), from which the
# tests count what a read fetched and from where. Its own nginx instance (own config, pid file and
# logs under $state): the system's nginx, if any, is not touched. SURVEY_ENGINE_HTTP_HOST (default
# 127.0.0.1) listens on another local address instead, e.g. the bridge 10.77.0.1 that workers in
# network namespaces reach (tests/jobs/test_netns.py starts such a second instance with its own
# SURVEY_ENGINE_HTTP_STATE and _ROOT).
# Idempotent: a running server with this configuration is left alone; `stop` ends it.
# Usage: tests/services/nginx/setup.sh [start|stop|status]
set -euo pipefail
host="${SURVEY_ENGINE_HTTP_HOST:-127.0.0.1}"
port="${SURVEY_ENGINE_HTTP_PORT:-8089}"
state="${SURVEY_ENGINE_HTTP_STATE:-/var/lib/survey-engine-test/nginx}"
root="${SURVEY_ENGINE_HTTP_ROOT:-/var/lib/survey-engine-test/www}"
url="http://$host:$port"
conf="$state/nginx.conf"
action="${1:-start}"

log() { echo "[nginx] $*" >&2; }
up() { curl -sf --max-time 3 -o /dev/null "$url/.survey-engine-nginx" 2>/dev/null; }
running() { [ -f "$state/nginx.pid" ] && kill -0 "$(cat "$state/nginx.pid")" 2>/dev/null; }

case "$action" in
    status) if up; then echo up; else echo down; exit 1; fi; exit 0 ;;
    stop)
        if running; then nginx -c "$conf" -p "$state" -s quit 2>/dev/null || kill "$(cat "$state/nginx.pid")"; fi
        for _ in $(seq 1 50); do running || break; sleep 0.1; done
        exit 0 ;;
    start) ;;
    *) log "usage: $0 [start|stop|status]"; exit 2 ;;
esac

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    [ "$(id -u)" = 0 ] || { log "nginx is not installed and installing it needs root"; exit 1; }
    log "installing nginx (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends nginx >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends nginx >/dev/null; }
fi
export PATH="$PATH:/usr/sbin"
mkdir -p "$state/logs" "$state/tmp" "$root"
touch "$root/.survey-engine-nginx"

wanted="# written by tests/services/nginx/setup.sh
worker_processes 2;
pid $state/nginx.pid;
error_log $state/logs/error.log warn;
user root;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format ranges '\$request_method \$uri \$status \$body_bytes_sent \"\$http_range\" \$remote_addr';
    access_log $state/access.log ranges;
    client_body_temp_path $state/tmp/body;
    proxy_temp_path $state/tmp/proxy;
    fastcgi_temp_path $state/tmp/fastcgi;
    uwsgi_temp_path $state/tmp/uwsgi;
    scgi_temp_path $state/tmp/scgi;
    sendfile on;
    server {
        listen $host:$port;
        root $root;
        autoindex off;
        location / { try_files \$uri =404; }
    }
}"
if [ "$(cat "$conf" 2>/dev/null)" != "$wanted" ]; then
    printf '%s\n' "$wanted" > "$conf"
    if running; then nginx -c "$conf" -p "$state" -s reload; sleep 0.5; fi
fi
if ! running; then
    log "starting nginx on $url (serving $root)"
    nginx -c "$conf" -p "$state"
fi
for _ in $(seq 1 50); do up && break; sleep 0.1; done
up || { log "nginx did not answer at $url (see $state/logs/error.log)"; exit 1; }
log "nginx up at $url serving $root"
