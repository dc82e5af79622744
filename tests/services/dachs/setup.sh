#!/usr/bin/env bash
# Install (if needed), configure and start a real GAVO DaCHS TAP server on 127.0.0.1:8080, loaded
# with the all-sky Gaia DR3 G<10 table from ../shared/data as table `segaia.main`.
# Idempotent: a running, loaded server is left alone (about 1 s); a stopped one is restarted
# (about 8 s); from nothing it takes one to two minutes. Needs root and apt (Debian 12).
# Usage: tests/services/dachs/setup.sh [start|stop|status]     PYTHON=... picks a python with pyarrow.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
data="${SURVEY_ENGINE_SHARED_DATA:-$repo/../shared/data}/clusters_xmatch/gaia_dr3_allsky_G10.parquet"
python="${PYTHON:-python3}"
url="http://127.0.0.1:8080"
resource=/var/gavo/inputs/segaia
action="${1:-start}"

log() { echo "[dachs] $*" >&2; }

available() { curl -sf --max-time 5 "$url/tap/availability" 2>/dev/null | grep -q '>true<'; }
# a query answered: just after a start DaCHS says it is available while its UWS jobs table is still
# locked ("Could not access the jobs table ... stale lock"), and refuses queries for a moment
answers() {
    curl -sf --max-time 10 "$url/tap/sync" -d LANG=ADQL -d REQUEST=doQuery \
        --data-urlencode "QUERY=SELECT TOP 1 source_id FROM segaia.main" 2>/dev/null |
        grep -q 'QUERY_STATUS" value="OK"'
}

if [ "$action" = status ]; then available && echo up || { echo down; exit 1; }; exit 0; fi
if [ "$action" = stop ]; then
    dachs serve stop >/dev/null 2>&1 || true
    exit 0
fi

[ "$(id -u)" = 0 ] || { log "must run as root (installs Debian packages, starts PostgreSQL)"; exit 1; }
[ -f "$data" ] || { log "real data missing: $data"; exit 1; }

# PostgreSQL first: gavodachs2-server's post-install needs a running database (services.md).
if ! pg_lsclusters -h | awk '$4 == "online"' | grep -q .; then
    log "starting PostgreSQL"
    pg_ctlcluster 15 main start
fi

if ! dpkg -s gavodachs2-server >/dev/null 2>&1 || ! dpkg -s postgresql-15-q3c >/dev/null 2>&1; then
    log "installing DaCHS (one to two minutes)"
    export DEBIAN_FRONTEND=noninteractive
    dpkg --configure -a >/dev/null 2>&1 || true
    apt-get install -y -q --no-install-recommends postgresql-15-pgsphere postgresql-15-q3c >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends postgresql-15-pgsphere postgresql-15-q3c >/dev/null; }
    apt-get install -y -q --no-install-recommends gavodachs2-server >/dev/null
fi

rc_wanted="[web]
bindAddress: 127.0.0.1
serverPort: 8080
serverURL: $url
[async]
defaultMAXREC: 20000
[ivoa]
authority: survey-engine.test"
if [ "$(cat /etc/gavo.rc 2>/dev/null)" != "$rc_wanted" ]; then
    printf '%s\n' "$rc_wanted" > /etc/gavo.rc
    dachs serve stop >/dev/null 2>&1 || true
fi

# The resource: RD + CSV; re-imported only when the RD or the data changed.
mkdir -p "$resource/data"
stamp="$(cat "$here/q.rd" "$here/write_csv.py" | sha256sum | cut -c1-16)-$(stat -c %s "$data")"
if [ "$(cat "$resource/.imported" 2>/dev/null)" != "$stamp" ]; then
    log "loading $(basename "$data") into DaCHS"
    cp "$here/q.rd" "$resource/q.rd"
    "$python" "$here/write_csv.py" "$data" "$resource/data/gaia.csv.tmp"
    mv "$resource/data/gaia.csv.tmp" "$resource/data/gaia.csv"
    chown -R gavo:gavo "$resource" 2>/dev/null || true
    chmod -R a+rX "$resource"
    (cd "$resource" && runuser -u dachsroot -- dachs -U stingy imp q >/dev/null && runuser -u dachsroot -- dachs -U stingy pub q >/dev/null)
    echo "$stamp" > "$resource/.imported"
    dachs serve stop >/dev/null 2>&1 || true
fi

if ! available; then
    log "starting the DaCHS web server"
    dachs serve start >/dev/null 2>&1 || true
    for _ in $(seq 1 120); do available && break; sleep 0.5; done
    available || { log "DaCHS did not become available at $url (see /var/gavo/logs)"; exit 1; }
fi
for _ in $(seq 1 60); do answers && break; sleep 0.5; done
answers || { log "DaCHS is up at $url but does not answer a query on segaia.main (see /var/gavo/logs)"; exit 1; }
log "TAP service up at $url/tap (table segaia.main)"
