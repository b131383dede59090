#!/usr/bin/env bash
# A real one-node SLURM on this machine for the cluster tests (tests/test_slurm.py):
#
#   sudo bash scripts/slurm_local.sh install   # Debian's slurm-wlm, munge, slurmdbd, mariadb-server
#   bash scripts/slurm_local.sh start          # munged, slurmctld, slurmd; waits for the node to be idle
#   bash scripts/slurm_local.sh stop
#
# Everything SLURM writes (slurm.conf, state, spool, logs, pid files) lives in $RLS_SLURM_DIR
# (default /tmp/rls-slurm). The configuration needs no cgroups or systemd: process tracking
# by the Linux process tree, no task plugin. Accounting (what sacct, and so submitit,
# reads to see that a job ended) runs through slurmdbd on a local MariaDB when both are
# installed; without them the node runs with no accounting.
set -euo pipefail
DIR=${RLS_SLURM_DIR:-/tmp/rls-slurm}
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))

accounting() { command -v slurmdbd >/dev/null && command -v mysqld_safe >/dev/null; }

start_accounting() {
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if ! mysqladmin ping >/dev/null 2>&1; then
        (mysqld_safe >"$DIR/log/mysqld.log" 2>&1 &)
        for _ in $(seq 30); do mysqladmin ping >/dev/null 2>&1 && break; sleep 1; done
    fi
    # a fresh database: job ids restart at 1 with a fresh state dir, and old records would
    # answer for the new jobs
    mysql -e "DROP DATABASE IF EXISTS slurm_acct_db; CREATE DATABASE slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'rlsslurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    cat > "$DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=$HOST
SlurmUser=$(id -un)
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=rlsslurm
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$DIR/slurmdbd.conf"
    slurmdbd
    for _ in $(seq 30); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
    sacctmgr -i add cluster rlslocal >/dev/null 2>&1 || true
}

write_conf() {
    mkdir -p "$DIR"/{state,spool,log}
    if accounting; then
        ACCOUNTING="JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST"
    else
        ACCOUNTING="JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none"
    fi
    cat > "$DIR/slurm.conf" <<CONF
ClusterName=rlslocal
SlurmctldHost=$HOST
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmdSpoolDir=$DIR/spool
StateSaveLocation=$DIR/state
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
$ACCOUNTING
JobCompType=jobcomp/none
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmdTimeout=60
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
}

case "${1:-}" in
    install)
        apt-get install -y slurm-wlm munge slurmdbd mariadb-server ;;
    start)
        command -v slurmctld >/dev/null || { echo "slurm_local: no slurmctld; run: sudo bash $0 install" >&2; exit 3; }
        write_conf
        export SLURM_CONF="$DIR/slurm.conf"
        mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
        pgrep -x munged >/dev/null || su -s /bin/sh munge -c "/usr/sbin/munged" || /usr/sbin/munged --force
        if accounting; then start_accounting; fi
        slurmctld -f "$SLURM_CONF"
        slurmd -f "$SLURM_CONF"
        for _ in $(seq 60); do
            if sinfo -h -o %t 2>/dev/null | grep -qx idle; then echo "slurm_local: $HOST idle ($SLURM_CONF)"; exit 0; fi
            sleep 1
        done
        echo "slurm_local: the node did not become idle; logs in $DIR/log" >&2; exit 1 ;;
    stop)
        export SLURM_CONF="$DIR/slurm.conf"
        for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/slurmdbd.pid"; do
            [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
        done
        sleep 1 ;;
    *)
        sed -n '2,12p' "$0"; exit 2 ;;
esac
