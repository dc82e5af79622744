#!/usr/bin/env bash
# Install (if needed) and start an S3-compatible server on loopback for the remote-catalog tests:
# moto's standalone server (`moto_server`, the one s3fs's own test suite runs against) on
# 127.0.0.1:9000, with IAM authentication switched on and one user allowed s3:* whose key pair is
# written to $state/credentials.json (mode 600): requests with other keys are refused (403), as a
# real store refuses them. Moto keeps everything in memory: a restart forgets buckets and keys.
# Idempotent: a running, provisioned server is left alone; `stop` ends it.
# Usage: tests/services/s3/setup.sh [start|stop|status]     PYTHON=... picks the python (with pip).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
host=127.0.0.1
port="${SURVEY_ENGINE_S3_PORT:-9000}"
url="http://$host:$port"
state="${SURVEY_ENGINE_S3_STATE:-/var/lib/survey-engine-test/s3}"
action="${1:-start}"

log() { echo "[s3] $*" >&2; }
up() { curl -s --max-time 3 -o /dev/null "$url/moto-api/" 2>/dev/null; }
provisioned() { [ -s "$state/credentials.json" ] && "$python" "$here/provision.py" check "$url" "$state/credentials.json" >/dev/null 2>&1; }

stop_server() {
    if [ -f "$state/moto.pid" ]; then
        kill "$(cat "$state/moto.pid")" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$(cat "$state/moto.pid")" 2>/dev/null || break; sleep 0.1; done
        rm -f "$state/moto.pid"
    fi
}

case "$action" in
    status) if up && provisioned; then echo up; else echo down; exit 1; fi; exit 0 ;;
    stop) stop_server; rm -f "$state/credentials.json"; exit 0 ;;
    start) ;;
    *) log "usage: $0 [start|stop|status]"; exit 2 ;;
esac

if up && provisioned; then
    log "S3 (moto) already up at $url"
    exit 0
fi
mkdir -p "$state"
chmod 700 "$state"
if ! "$python" -c "import moto.server, s3fs" 2>/dev/null; then
    log "installing moto[server] and s3fs"
    "$python" -m pip install --quiet "moto[server]==5.2.5" "s3fs==2026.9.0"
fi
if ! up; then
    stop_server
    log "starting moto_server on $url"
    nohup "$python" -m moto.server -H "$host" -p "$port" > "$state/moto.log" 2>&1 &
    echo $! > "$state/moto.pid"
    for _ in $(seq 1 100); do up && break; sleep 0.2; done
    up || { log "moto_server did not answer at $url (see $state/moto.log)"; exit 1; }
fi
# a fresh server (or one whose keys were lost): make the user and its keys, then require them
"$python" "$here/provision.py" provision "$url" "$state/credentials.json"
log "S3 (moto) up at $url; credentials in $state/credentials.json"
