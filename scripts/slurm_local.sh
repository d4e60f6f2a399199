#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, from Debian's slurm-wlm and munge (as root, CPU
# only), for nsae's Slurm tests and for trying `hydra/launcher=slurm` without a cluster.
#
#   sudo scripts/slurm_local.sh start    # install if missing, configure, start, wait for idle
#   sudo scripts/slurm_local.sh status
#   sudo scripts/slurm_local.sh stop     # cancel jobs, stop the daemons, remove our config
#
# The node is this machine with all its CPUs and memory in one partition, `debug`.
# Configuration goes to /etc/slurm/slurm.conf (refused if a slurm.conf not written by this
# script is there); state and logs under /var/lib/nsae-slurm.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
STATE=/var/lib/nsae-slurm
MARK="# written by nsae scripts/slurm_local.sh"

die() { echo "slurm_local.sh: $*" >&2; exit 1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    echo "installing slurm-wlm and munge from Debian ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
    if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; not touching a real cluster"
    fi
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/log" /etc/slurm
    cat > "$CONF" <<EOF
$MARK
ClusterName=nsae-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmdParameters=config_overrides
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if pgrep -x munged >/dev/null; then return; fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    [[ -f /etc/munge/munge.key ]] || runuser -u munge -- /usr/sbin/mungekey --create
    runuser -u munge -- /usr/sbin/munged
}

wait_idle() {
    for _ in $(seq 60); do
        state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
        case $state in
            idle|mixed|allocated) echo "slurm: node $(hostname -s) $state"; return ;;
            drain*|down*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    die "the node did not come up; see $STATE/log/"
}

start() {
    [[ $(id -u) == 0 ]] || die "must run as root (the daemons run as root here)"
    install_packages
    write_conf
    start_munge
    pgrep -x slurmctld >/dev/null || slurmctld -i
    pgrep -x slurmd >/dev/null || slurmd
    wait_idle
}

end_daemon() {  # SIGTERM, then SIGKILL after 10 s; return only once it is gone, so that a
    # start right after a stop never mistakes a daemon that is shutting down for a live one
    pkill -x "$1" 2>/dev/null || true
    for _ in $(seq 20); do pgrep -x "$1" >/dev/null || return 0; sleep 0.5; done
    pkill -9 -x "$1" 2>/dev/null || true
    while pgrep -x "$1" >/dev/null; do sleep 0.2; done
}

stop() {
    scancel --full --quiet --user=root 2>/dev/null || true
    for daemon in slurmd slurmstepd slurmctld munged; do
        end_daemon "$daemon"
    done
    if [[ -f $CONF ]] && grep -qF "$MARK" "$CONF"; then rm -f "$CONF"; fi
    echo "slurm: stopped"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) sinfo && squeue ;;
    *) die "usage: $0 start|stop|status" ;;
esac
