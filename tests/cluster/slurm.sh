#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the `slurm`-marked tests.
#
#   tests/cluster/slurm.sh up      install slurm-wlm, slurmdbd, munge and MariaDB if missing, write
#                                  slurm.conf for this host, start the daemons, wait for the node
#                                  to be idle; prints `export SLURM_CONF=...`
#   tests/cluster/slurm.sh down    stop the daemons this script started
#
# Everything lives under $SLURM_TEST_DIR (default /tmp/slurm-cluster): the configuration, the
# daemons' state, logs, pid files and the accounting database. Nothing is written to /etc/slurm;
# commands find the cluster through SLURM_CONF. Job accounting is on, as on university clusters:
# slurmdbd on a MariaDB server of its own (127.0.0.1:3307), so that `sacct` answers (submitit
# reads it to learn that a job ended without a result: cancelled, killed, out of time).
# SLURM_TEST_ACCOUNTING=none starts the cluster without it instead, as some clusters are.
# Exit status 3 means "cannot run here" (not root, no apt-get), with the reason on stderr.
set -euo pipefail

DIR=${SLURM_TEST_DIR:-/tmp/slurm-cluster}
ACCOUNTING=${SLURM_TEST_ACCOUNTING:-slurmdbd}
CONF=$DIR/slurm.conf
PACKAGES="slurm-wlm slurmdbd munge mariadb-server"

cannot() { echo "slurm cluster: $*" >&2; exit 3; }

install() {
    command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v munged >/dev/null &&
        command -v mariadbd >/dev/null && return
    [ "$(id -u)" = 0 ] || cannot "$PACKAGES are not all installed and this is not root"
    command -v apt-get >/dev/null || cannot "$PACKAGES are not all installed and there is no apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    apt-get install -y -q $PACKAGES >"$DIR/log/apt.log" 2>&1 ||
        { apt-get update -q >>"$DIR/log/apt.log" 2>&1 && apt-get install -y -q $PACKAGES >>"$DIR/log/apt.log" 2>&1; } ||
        cannot "apt-get could not install $PACKAGES (see $DIR/log/apt.log)"
}

write_conf() {
    local node host
    host=$(hostname -s)
    # The node's real CPUs and memory, as slurmd itself measures them.
    node=$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/")
    mkdir -p "$DIR/ctld" "$DIR/d"
    cat >"$CONF" <<EOF
ClusterName=test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/$ACCOUNTING
AccountingStorageHost=localhost
AccountingStoragePort=6819
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
KillWait=5
MpiDefault=none
MailProg=/bin/true
AuthInfo=cred_expire=10
MinJobAge=300
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmdbd reads slurmdbd.conf next to SLURM_CONF; it must be private to SlurmUser.
    cat >"$DIR/slurmdbd.conf" <<EOF
DbdHost=localhost
DbdPort=6819
SlurmUser=root
AuthType=auth/munge
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
EOF
    chmod 600 "$DIR/slurmdbd.conf"
}

wait_for() { # wait_for SECONDS COMMAND...: until COMMAND succeeds
    local tries=$(($1 * 10))
    shift
    for _ in $(seq "$tries"); do "$@" 2>/dev/null && return; sleep 0.1; done
    return 1
}

listening() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
node_idle() { [ "$(sinfo -h -o %t)" = idle ]; }

database() {
    # A MariaDB server for slurmdbd alone: its own data folder, socket and port.
    if [ ! -d "$DIR/mysql/mysql" ]; then
        mkdir -p "$DIR/mysql" && chown mysql:mysql "$DIR/mysql"
        mariadb-install-db --user=mysql --datadir="$DIR/mysql" >"$DIR/log/mariadb-install.log" 2>&1 ||
            cannot "mariadb-install-db failed (see $DIR/log/mariadb-install.log)"
    fi
    mkdir -p "$DIR/mariadbd" && chown mysql:mysql "$DIR/mariadbd" # socket, pid and log: its own to write
    mariadbd --user=mysql --datadir="$DIR/mysql" --socket="$DIR/mariadbd/sock" --pid-file="$DIR/mariadbd/pid" \
        --bind-address=127.0.0.1 --port=3307 --log-error="$DIR/mariadbd/log" >/dev/null 2>&1 &
    wait_for 30 test -S "$DIR/mariadbd/sock" || cannot "MariaDB did not start (see $DIR/mariadbd/log)"
    mariadb -S "$DIR/mariadbd/sock" -u root -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
        cannot "could not give slurmdbd its database user (see $DIR/mariadbd/log)"
}

up() {
    mkdir -p "$DIR/log"
    install
    down quiet
    write_conf
    export SLURM_CONF=$CONF
    # munged refuses a key or folders with loose permissions; the package's key is used as is.
    mkdir -p /run/munge && chown munge:munge /run/munge
    if ! pgrep -x munged >/dev/null; then
        runuser -u munge -- munged || cannot "munged did not start"
        touch "$DIR/munged.ours" # stopped by down; a munged that was running stays
    fi
    if [ "$ACCOUNTING" = slurmdbd ]; then
        database
        slurmdbd || cannot "slurmdbd did not start (see $DIR/log/slurmdbd.log)"
        wait_for 30 listening 6819 || cannot "slurmdbd does not answer on port 6819 (see $DIR/log/slurmdbd.log)"
    fi
    slurmctld || cannot "slurmctld did not start (see $DIR/log/slurmctld.log)"
    slurmd || cannot "slurmd did not start (see $DIR/log/slurmd.log)"
    wait_for 30 node_idle || cannot "the node did not become idle in 30 s: $(sinfo 2>&1 | tail -1) (see $DIR/log)"
    if [ "$ACCOUNTING" = slurmdbd ]; then
        wait_for 30 sacct -n -j 1 >/dev/null || cannot "sacct does not answer: $(sacct -n 2>&1 | tail -1) (see $DIR/log)"
    fi
    echo "export SLURM_CONF=$CONF"
}

down() {
    local pid pidfile
    # Jobs first (each gets SIGTERM and KillWait to save), then the daemons, newest first.
    if [ -f "$DIR/slurmctld.pid" ] && [ -f "$CONF" ]; then
        SLURM_CONF=$CONF scancel --full --state=RUNNING --user=root 2>/dev/null || true
        SLURM_CONF=$CONF scancel --user=root 2>/dev/null || true
        sleep 1
    fi
    for daemon in slurmd slurmctld slurmdbd mariadbd; do
        pidfile=$DIR/$daemon.pid
        [ "$daemon" = mariadbd ] && pidfile=$DIR/mariadbd/pid
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$pidfile"
    done
    # Jobs' processes outlive slurmd with proctrack/linuxproc: stop what the cluster started.
    pkill -f slurmstepd 2>/dev/null || true
    if [ -f "$DIR/munged.ours" ] && [ "${1:-}" != quiet ]; then
        pkill -x munged 2>/dev/null || true
        rm -f "$DIR/munged.ours"
    fi
    [ "${1:-}" = quiet ] || echo "slurm cluster stopped"
}

case "${1:-}" in
up) up ;;
down) down ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
