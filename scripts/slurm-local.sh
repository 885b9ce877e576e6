#!/usr/bin/env bash
# slurm-local.sh: a throwaway single-node SLURM cluster for sweeper's tests.
#
#   scripts/slurm-local.sh up      install what is missing, configure, start, smoke-test
#   scripts/slurm-local.sh status  each daemon's state + sinfo; exit 0 only if the cluster answers
#   scripts/slurm-local.sh down    stop the daemons that `up` started, and only those
#
# Runs as root on Debian 12 / Ubuntu without systemd (containers, CI VMs): slurmctld, slurmd,
# slurmdbd + MariaDB (accounting: submitit learns about dead jobs only through sacct) and munge,
# all from the distribution's packages and started by hand. See docs/slurm.md.
#
# Environment:
#   SLURM_LOCAL_CPUS=N       CPUs the node advertises (default max(4, nproc)). More than the real
#                            count is fine: SlurmdParameters=config_overrides accepts it, and the
#                            tests want several 1-CPU tasks at once even on a 2-core machine.
#   SLURM_LOCAL_TIMEOUT=S    seconds to wait for each daemon to answer (default 60)
#   SLURM_LOCAL_VERBOSE=1    trace every command (set -x)
set -Eeuo pipefail
# set -e alone exits silently; say where.
trap 'echo "slurm-local: error: line $LINENO: \`$BASH_COMMAND\` failed" >&2' ERR
[[ ${SLURM_LOCAL_VERBOSE:-0} == 1 ]] && set -x

readonly CLUSTER=localcluster
readonly NODE=localhost
readonly CONF_DIR=/etc/slurm
readonly LOG_DIR=/var/log/slurm
readonly STATE_DIR=/run/sweeper-slurm
readonly STATE_FILE=$STATE_DIR/started   # one daemon name per line: the ones `up` started
readonly LOCK_FILE=$STATE_DIR/lock
readonly TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
readonly PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
readonly DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; `down` reverses it
readonly DB_NAME=slurm_acct_db DB_USER=slurm DB_PASS=slurmlocal
# First line of both config files: tells our own files from someone else's.
readonly MARKER="# Written by sweeper scripts/slurm-local.sh; \`up\` regenerates it."

T0=$(date +%s.%N)
say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

# Fail with the end of the log that explains why.
die_log() {
    local msg=$1 log=$2
    {
        echo "slurm-local: error: $msg"
        if [[ -s $log ]]; then echo "--- last lines of $log:"; tail -n 25 "$log"; echo "---"; fi
    } >&2
    exit 1
}

# ---------------------------------------------------------------- daemons: where and who

pidfile_of() {
    case $1 in
        munged) echo /run/munge/munged.pid ;;
        mariadbd) echo /run/mysqld/mysqld.pid ;;
        *) echo "/run/$1.pid" ;;
    esac
}
logfile_of() { if [[ $1 == munged ]]; then echo /var/log/munge/munged.log; else echo "$LOG_DIR/$1.log"; fi; }
# Process names (/proc/PID/comm) a daemon may run under: Debian's mysqld is a link to mariadbd.
comms_of() { if [[ $1 == mariadbd ]]; then echo "mariadbd mysqld"; else echo "$1"; fi; }

# True when PID is alive, not a zombie, and runs one of the program names given.
# A pid file can outlive its daemon (kill -9) and the pid can be reused by anything.
is_prog() {
    local pid=$1 comm state c stat
    shift
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    read -r comm 2>/dev/null <"/proc/$pid/comm" || return 1
    read -r stat 2>/dev/null <"/proc/$pid/stat" || return 1
    stat=${stat##*) }            # after "pid (comm) ", the first field is the state
    state=${stat%% *}
    [[ $state != Z ]] || return 1   # a daemonizing parent lingers as <defunct> for a moment
    for c in "$@"; do [[ $comm == "$c" ]] && return 0; done
    return 1
}

# Print the pid of a running daemon; fail if none. The pid file comes first; if it is missing or
# stale, look through /proc, because a second instance would fight the first over its port.
# (No pgrep: procps is not installed on minimal images.)
pid_of() {
    local name=$1 pid="" d
    local -a comms
    read -r -a comms <<<"$(comms_of "$name")"
    read -r pid 2>/dev/null <"$(pidfile_of "$name")" || true
    if is_prog "$pid" "${comms[@]}"; then echo "$pid"; return 0; fi
    for d in /proc/[0-9]*; do
        if is_prog "${d#/proc/}" "${comms[@]}"; then echo "${d#/proc/}"; return 0; fi
    done
    return 1
}

started_by_us() { [[ -f $STATE_FILE ]] && grep -qx "$1" "$STATE_FILE"; }
record_started() { started_by_us "$1" || echo "$1" >>"$STATE_FILE"; }

# ---------------------------------------------------------------- health checks (quiet, fast)

munge_ok() { timeout 5 munge -n </dev/null 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }
mariadb_ok() { timeout 5 mariadb --protocol=socket -e 'SELECT 1' >/dev/null 2>&1; }
slurmdbd_ok() { timeout 5 sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1; }
slurmctld_ok() { timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; }
# Empty (not a failure) when slurmctld does not answer.
node_state() { timeout 15 sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -n 1 || true; }
# "Answers" means the node takes jobs: idle, mix(ed), alloc(ated), or comp(leting) a job.
node_ok() { [[ $(node_state) =~ ^(idle|mix|alloc|comp)$ ]]; }

# Wait until "$@" succeeds, at most $TIMEOUT s. Fail early once DAEMON has been gone for 3 s
# (it died on a fatal error: no point waiting a minute), and show its log either way.
wait_for() {
    local what=$1 daemon=$2 log=$3 now gone_since="" deadline
    shift 3
    deadline=$(($(date +%s) + TIMEOUT))
    while :; do
        now=$(date +%s)
        if [[ -n $daemon ]] && ! pid_of "$daemon" >/dev/null; then
            : "${gone_since:=$now}"
            ((now - gone_since < 3)) || die_log "$daemon exited while waiting for $what" "$log"
        else
            gone_since=""
            "$@" && return 0
        fi
        ((now < deadline)) || die_log "$what: no answer after ${TIMEOUT}s" "$log"
        sleep 0.2
    done
}

# ---------------------------------------------------------------- packages

# apt must not start daemons through /etc/init.d while installing: without systemd the sysv
# scripts run, and we want to start everything ourselves. policy-rc.d exit 101 forbids it. We
# only add one where none exists (Docker images ship their own) and remove only ours.
POLICY_RC=/usr/sbin/policy-rc.d
OUR_POLICY_RC=0
cleanup() { if ((OUR_POLICY_RC)); then rm -f "$POLICY_RC"; fi; }
trap cleanup EXIT

ensure_packages() {
    local p missing=() log=$LOG_DIR/apt.log i
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    say "installing ${missing[*]} (apt; log $log)"
    if [[ ! -e $POLICY_RC ]]; then
        printf '#!/bin/sh\n# temporary, from slurm-local.sh: no daemon starts during apt\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        OUR_POLICY_RC=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Another apt may hold the lists lock (other engineers on the same box): retry for a while.
    # A failing third-party source makes `update` exit non-zero although the Debian lists are
    # fine, so a failed update is only a warning; the install below decides.
    for ((i = 0; i < 60; i++)); do
        if apt-get update >>"$log" 2>&1; then break; fi
        if ! tail -n 5 "$log" | grep -q 'Could not get lock'; then
            say "warning: apt-get update failed (see $log); trying the install anyway"
            break
        fi
        sleep 2
    done
    # DPkg::Lock::Timeout waits for a concurrent apt/dpkg instead of failing at once.
    apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${PACKAGES[@]}" >>"$log" 2>&1 ||
        die_log "apt-get install failed" "$log"
    cleanup
    OUR_POLICY_RC=0
    say "packages installed ($(elapsed))"
}

# ---------------------------------------------------------------- configuration

# Node description from the hardware, as slurm.conf wants it.
NODE_CPUS="" NODE_MEM="" DEF_MEM=""
detect_node() {
    local hw real_cpus mem
    hw=$(slurmd -C 2>/dev/null | head -n 1) || true
    real_cpus=$(grep -o 'CPUs=[0-9]*' <<<"$hw" | cut -d= -f2) || true
    mem=$(grep -o 'RealMemory=[0-9]*' <<<"$hw" | cut -d= -f2) || true
    [[ -n $real_cpus && -n $mem ]] || die "cannot parse \`slurmd -C\`: '$hw'"
    # Default max(4, real): the test suite runs 3-4 short tasks at once (arrays, Hydra multirun)
    # and each takes one CPU; on 2 cores they would otherwise run two at a time.
    NODE_CPUS=${SLURM_LOCAL_CPUS:-$((real_cpus > 4 ? real_cpus : 4))}
    [[ $NODE_CPUS =~ ^[1-9][0-9]*$ ]] || die "SLURM_LOCAL_CPUS must be a positive integer, got '$NODE_CPUS'"
    # 90% of what slurmd detects: a RealMemory above the detected value drains the node
    # ("Low RealMemory"), and the detected value can wobble a little between boots.
    NODE_MEM=$((mem * 9 / 10))
    # A job without --mem gets DefMemPerCPU; without it, CR_Core_Memory hands the whole node's
    # memory to the first job and tasks run one at a time. 1 GiB each, or less on a small
    # machine so that every advertised CPU can still take a task.
    DEF_MEM=$((NODE_MEM / NODE_CPUS))
    ((DEF_MEM <= 1024)) || DEF_MEM=1024
}

render_slurm_conf() {
    # Topology is flattened to CPUs cores of 1 thread: with CR_Core a 1-CPU task takes a whole
    # core, so on an SMT machine the real topology would halve the tasks that fit, and an
    # advertised CPU count above the real one needs cores to match anyway.
    cat <<EOF
$MARKER
ClusterName=$CLUSTER
# "localhost" keeps the config independent of the machine's hostname and of /etc/hosts.
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits for its credential to expire: 5 s instead of the default 120 s.
AuthInfo=cred_expire=5
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=$(pidfile_of slurmctld)
SlurmdPidFile=$(pidfile_of slurmd)
SlurmctldLogFile=$(logfile_of slurmctld)
SlurmdLogFile=$(logfile_of slurmd)
SlurmctldDebug=info
SlurmdDebug=info
# The default proctrack/cgroup needs a freezer cgroup that containers do not have.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Trust the config over the hardware: never drain the node over CPUs/memory mismatches.
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM
MaxArraySize=1001
# Pending array tasks count against MaxJobCount (default 10000): a 10,000-point grid would not fit.
MaxJobCount=200000
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NODE_CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$NODE_CPUS ThreadsPerCore=1 RealMemory=$NODE_MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

render_slurmdbd_conf() {
    cat <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$(logfile_of slurmdbd)
PidFile=$(pidfile_of slurmdbd)
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
}

# Replace FILE with CONTENT if it differs. Returns 0 when the file changed. A file that is not
# ours is kept as FILE.orig-<time> rather than lost.
write_conf() {
    local file=$1 mode=$2 content=$3 tmp
    if [[ -f $file ]] && [[ $(cat "$file") == "$content" ]]; then return 1; fi
    if [[ -f $file ]] && [[ $(head -n 1 "$file") != "$MARKER" ]]; then
        cp -p "$file" "$file.orig-$(date +%Y%m%d%H%M%S)"
        say "kept the previous $file as $file.orig-*"
    fi
    tmp=$(mktemp "$file.XXXXXX")
    printf '%s\n' "$content" >"$tmp"
    # slurmdbd refuses to start when its config (it holds the DB password) is not mode 600.
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$file"
    return 0
}

# ---------------------------------------------------------------- starting

# Start a daemon fully detached: stdio on /dev/null or its log, and no other inherited fd.
# A daemon holding the caller's pipe keeps `up | cat` (or a CI step) from ever ending; one
# holding our lock's fd 9 would hold the lock forever. Bash itself leaves fds around (e.g.
# 250+ from `( ... | ...)`), and munged, slurmdbd and mariadbd do not close them.
spawn() {
    local log=$1
    shift
    (
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            if ((fd > 2)); then { eval "exec $fd>&-"; } 2>/dev/null || true; fi
        done
        exec "$@" </dev/null >>"$log" 2>&1
    )
}

start_munged() {
    local key=/etc/munge/munge.key
    if [[ ! -s $key ]]; then   # the munge postinst makes one; cover images that dropped it
        install -d -o munge -g munge -m 700 /etc/munge
        (umask 277 && dd if=/dev/urandom of="$key" bs=1024 count=1 status=none)
        chown munge:munge "$key"
    fi
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/log/munge
    # munged drops to the munge user and logs to /var/log/munge: it refuses a log directory
    # owned by anyone but root or munge, and Debian makes /var/log/slurm slurm's.
    # Its log must be munge's too; we append munged's stderr (early errors) to the same file.
    touch "$(logfile_of munged)"
    chown munge:munge "$(logfile_of munged)"
    chmod 640 "$(logfile_of munged)"
    spawn "$(logfile_of munged)" runuser -u munge -- munged ||
        die_log "munged failed to start" "$(logfile_of munged)"
}

start_mariadbd() {
    install -d -o mysql -g mysql -m 755 /run/mysqld
    if [[ ! -d /var/lib/mysql/mysql ]]; then   # data directory missing (postinst skipped/cleaned)
        spawn "$(logfile_of mariadbd)" mariadb-install-db --user=mysql --datadir=/var/lib/mysql ||
            die_log "mariadb-install-db failed" "$(logfile_of mariadbd)"
    fi
    # mariadbd does not daemonize itself: setsid -f forks it into its own session.
    spawn "$(logfile_of mariadbd)" setsid -f mariadbd --user=mysql --bind-address=127.0.0.1 \
        --pid-file="$(pidfile_of mariadbd)" --socket=/run/mysqld/mysqld.sock
}

# The slurm daemons daemonize themselves (fork, setsid, stdio to /dev/null) and write pid files.
start_slurm_daemon() {
    local name=$1
    install -d -m 755 "$LOG_DIR" /var/lib/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
    spawn "$(logfile_of "$name")" "$name" || die_log "$name failed to start" "$(logfile_of "$name")"
}

setup_db() {
    timeout 20 mariadb --protocol=socket -e "
        CREATE DATABASE IF NOT EXISTS $DB_NAME;
        CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';" 2>>"$(logfile_of mariadbd)" ||
        die_log "cannot create the accounting database as root (unix-socket auth)" "$(logfile_of mariadbd)"
}

# Bring one daemon up unless it already runs; wait until it answers.
ensure_daemon() {
    local name=$1 check=$2 pid t
    if pid=$(pid_of "$name"); then
        wait_for "$name" "$name" "$(logfile_of "$name")" "$check"
        return 0
    fi
    # A pid file left by kill -9 points at a dead (or reused) pid: remove it, so that nothing
    # (our checks, slurm's "kill old daemon" logic) trusts it.
    rm -f "$(pidfile_of "$name")"
    t=$(date +%s.%N)
    case $name in
        munged) start_munged ;;
        mariadbd) start_mariadbd ;;
        *) start_slurm_daemon "$name" ;;
    esac
    record_started "$name"
    wait_for "$name" "$name" "$(logfile_of "$name")" "$check"
    say "$name started (pid $(pid_of "$name"), $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'))"
}

stop_daemon() {
    local name=$1 pid i
    local -a comms
    read -r -a comms <<<"$(comms_of "$name")"
    pid=$(pid_of "$name") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    # slurmctld saves its state and mariadbd flushes InnoDB on SIGTERM: give them time.
    for ((i = 0; i < 150; i++)); do
        is_prog "$pid" "${comms[@]}" || return 0
        sleep 0.2
    done
    say "warning: $name (pid $pid) ignored SIGTERM for 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- subcommands

all_running() {
    local name
    for name in "${DAEMONS[@]}"; do pid_of "$name" >/dev/null || return 1; done
}

cmd_up() {
    local name slurm_changed=0 dbd_changed=0 changed state jobid
    ensure_packages
    detect_node

    # Fast path: everything runs and the node takes jobs. Leave it alone unless it is ours and
    # its config is out of date (e.g. another SLURM_LOCAL_CPUS).
    if all_running && slurmctld_ok && node_ok; then
        if ! started_by_us slurmctld && ! started_by_us slurmd; then
            say "a running cluster was found (not started by this script); leaving it as it is"
            timeout 15 sinfo
            return 0
        fi
        if [[ $(cat $CONF_DIR/slurm.conf 2>/dev/null) == "$(render_slurm_conf)" ]] &&
            [[ $(cat $CONF_DIR/slurmdbd.conf 2>/dev/null) == "$(render_slurmdbd_conf)" ]]; then
            say "already up ($NODE_CPUS CPUs, node $(node_state)) in $(elapsed)"
            timeout 15 sinfo
            return 0
        fi
    fi

    install -d -m 755 "$CONF_DIR" "$LOG_DIR"
    write_conf $CONF_DIR/slurm.conf 644 "$(render_slurm_conf)" && slurm_changed=1
    write_conf $CONF_DIR/slurmdbd.conf 600 "$(render_slurmdbd_conf)" && dbd_changed=1
    ((slurm_changed)) && say "wrote $CONF_DIR/slurm.conf ($NODE_CPUS CPUs, RealMemory=$NODE_MEM, DefMemPerCPU=$DEF_MEM)"
    ((dbd_changed)) && say "wrote $CONF_DIR/slurmdbd.conf"

    # A changed config needs a restart (node CPUs cannot change by `scontrol reconfigure`).
    # Only restart what we started; someone else's daemons are theirs to manage.
    # Running jobs survive: slurmctld saves its state on SIGTERM, slurmstepd outlives slurmd.
    for name in slurmd slurmctld slurmdbd; do
        if [[ $name == slurmdbd ]]; then changed=$dbd_changed; else changed=$slurm_changed; fi
        if ((changed)) && pid_of "$name" >/dev/null; then
            if started_by_us "$name"; then
                say "restarting $name for the new config"
                stop_daemon "$name"
            else
                say "warning: $name runs with an older config and was not started by this script; restart it yourself"
            fi
        fi
    done

    ensure_daemon munged munge_ok
    ensure_daemon mariadbd mariadb_ok
    setup_db
    ensure_daemon slurmdbd slurmdbd_ok
    # slurmctld would register the cluster itself; doing it first makes it certain.
    if ! timeout 10 sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
        timeout 20 sacctmgr -i add cluster "$CLUSTER" >/dev/null || die_log "sacctmgr add cluster failed" "$(logfile_of slurmdbd)"
        say "registered cluster $CLUSTER in slurmdbd"
    fi
    ensure_daemon slurmctld slurmctld_ok
    # After a kill -9, slurmctld recovers jobs whose end it had not saved yet as RUNNING, and
    # nothing ends an srun allocation early (no batch script to miss, InactiveLimit=0): a
    # finished smoke job would hold a CPU until its time limit. Only `up` makes smoke jobs,
    # under the lock, so any still listed is such a ghost.
    timeout 10 scancel --quiet --name=slurm-local-smoke 2>/dev/null || true
    ensure_daemon slurmd slurmd_registered

    # ReturnToService=2 does not clear every drain (e.g. "Low RealMemory" from an older config).
    state=$(node_state)
    if [[ $state =~ drain|drng|down|inval|fail ]]; then
        say "node was '$state' ($(timeout 10 sinfo -h -R -o %E | head -n 1)); resuming it"
        timeout 10 scontrol update nodename="$NODE" state=resume || true
    fi
    wait_for "node $NODE idle" slurmd "$(logfile_of slurmd)" node_ok

    # Smoke test: a job runs, and its record reaches the accounting database (submitit only
    # learns about jobs that die without output through sacct). Skipped when other people's
    # jobs fill the node (e.g. only slurmd was restarted): srun would just queue behind them.
    if [[ $(node_state) == alloc ]]; then
        say "ready in $(elapsed) (node fully allocated: smoke test skipped)"
        timeout 15 sinfo
        return 0
    fi
    # shellcheck disable=SC2016  # $SLURM_JOB_ID is the job's, expanded inside the job
    jobid=$(timeout 60 srun -N1 -n1 -t 1 -J slurm-local-smoke sh -c 'echo $SLURM_JOB_ID' 2>>"$LOG_DIR/smoke.log") ||
        die_log "smoke test (srun) failed; see also $(logfile_of slurmd)" "$LOG_DIR/smoke.log"
    wait_for "accounting record of smoke job $jobid" "" "$(logfile_of slurmdbd)" sacct_completed "$jobid"
    say "ready in $(elapsed): smoke job $jobid ran and is in sacct"
    timeout 15 sinfo
}

# slurmd answers once the controller has heard from it: the node is no longer unknown/not responding.
slurmd_registered() { local s; s=$(node_state); [[ -n $s && $s != *'*' && $s != unk* ]]; }
sacct_completed() { timeout 10 sacct -n -X -P -j "$1" -o State 2>/dev/null | grep -q COMPLETED; }

cmd_down() {
    local name pid i
    if [[ ! -s $STATE_FILE ]]; then
        say "nothing to stop: no daemon was started by this script"
        return 0
    fi
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[i]}
        started_by_us "$name" || continue
        if pid=$(pid_of "$name"); then
            stop_daemon "$name"
            say "$name stopped (pid $pid)"
        else
            say "$name was not running"
        fi
        sed -i "/^$name\$/d" "$STATE_FILE"
    done
    rm -f "$STATE_FILE"
    say "down in $(elapsed)"
}

cmd_status() {
    local name pid state rc=0 how
    for name in "${DAEMONS[@]}"; do
        how=""
        started_by_us "$name" && how=", started by slurm-local.sh"
        if pid=$(pid_of "$name"); then
            printf '%-10s running (pid %s%s)\n' "$name" "$pid" "$how"
        elif [[ -e $(pidfile_of "$name") ]]; then
            printf '%-10s stopped (stale pid file %s)\n' "$name" "$(pidfile_of "$name")"
        else
            printf '%-10s stopped\n' "$name"
        fi
    done
    # Without slurmctld, sinfo would only time out.
    if ! pid_of slurmctld >/dev/null; then
        echo "cluster: down (no slurmctld)"
        exit 1
    fi
    timeout 15 sinfo || rc=1
    state=$(node_state)
    if ((rc == 0)) && [[ $state =~ ^(idle|mix|alloc|comp)$ ]]; then
        echo "cluster: up (node $NODE $state)"
        exit 0
    fi
    echo "cluster: not answering (node state '${state:-?}')"
    timeout 10 sinfo -h -R 2>/dev/null || true
    exit 1   # not `return 1`: that would fire the ERR trap
}

usage() {
    sed -n '2,/^set -Eeuo/p' "$0" | sed -e '/^set -Eeuo/d' -e 's/^# \{0,1\}//'
}

main() {
    local cmd=${1:-}
    case $cmd in
        up | down | status) ;;
        -h | --help | help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    [[ $cmd == status ]] || [[ $EUID -eq 0 ]] || die "$cmd needs root"
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
    if [[ $cmd != status ]]; then
        install -d -m 755 "$STATE_DIR" "$LOG_DIR"
        # Several shells (other engineers, CI steps) may call up/down at once: one at a time.
        exec 9>"$LOCK_FILE"
        flock -w 600 9 || die "another slurm-local.sh has held $LOCK_FILE for 10 minutes"
    fi
    "cmd_$cmd"
}

main "$@"
