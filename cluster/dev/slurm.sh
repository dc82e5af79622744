#!/usr/bin/env bash
# A real single-node SLURM (slurmctld + slurmd + munge) on this machine, for the tests and for
# trying `survey-engine run JOB.yaml --cluster slurm`. Idempotent: a running, idle cluster is left
# alone; from nothing it takes about 10 s. Needs root and apt (Debian 12).
# Usage: cluster/dev/slurm.sh [start|stop|status]
set -euo pipefail
action="${1:-start}"
state=/var/spool/survey-engine-slurm
conf=/etc/slurm/slurm.conf
log() { echo "[slurm] $*" >&2; }

idle() { sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }

stop() {
    for f in "$state/slurmd.pid" "$state/slurmctld.pid"; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    sleep 1
}

case "$action" in
    status) idle && echo up || { echo down; exit 1; }; exit 0 ;;
    stop) stop; exit 0 ;;
esac

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
# not plain nproc: it honours OMP_NUM_THREADS, which a Dask LocalCluster sets to 1 in the process that
# started it (the test run), and SLURM would then run one worker job at a time
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
# up, and configured for this machine's cores: leave it alone (else rewrite the config and restart)
if idle && grep -q "CPUs=$cpus " "$conf" 2>/dev/null; then log "SLURM is up (partition debug, $cpus CPUs)"; exit 0; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    log "installing munge and slurm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null; }
fi

mkdir -p /run/munge "$state/ctld" "$state/d" /var/log/slurm
chown munge:munge /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -f /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    runuser -u munge -- /usr/sbin/munged
    sleep 0.5
fi

mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.85}' /proc/meminfo)
mkdir -p "$(dirname "$conf")"
cat > "$conf.new" <<CONF
ClusterName=localcluster
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
mv "$conf.new" "$conf"

stop
log "starting slurmctld and slurmd"
slurmctld
slurmd -N localhost
for _ in $(seq 1 60); do idle && break; sleep 0.5; done
idle || { log "the node did not become idle; see /var/log/slurm/"; sinfo >&2 || true; exit 1; }
log "SLURM is up: partition debug, 1 node, $cpus CPUs, $mem_mb MB"
