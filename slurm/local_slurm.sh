#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine (slurmctld + slurmd + munge on 127.0.0.1), for trying the
# SLURM launch paths on a workstation and for galmass's integration tests.
#
#   sudo slurm/local_slurm.sh start     # install the Debian packages if missing, write the config, start daemons
#   export SLURM_CONF=/tmp/galmass-slurm/slurm.conf    # printed by `start`; only needed if /etc/slurm is taken
#   sinfo; sbatch slurm/train_ddp.sh configs/quickstart.yaml ...
#   sudo slurm/local_slurm.sh status    # daemons, node state, queue
#   sudo slurm/local_slurm.sh stop      # stops ONLY the daemons this script started (by their pid files)
#
# Everything lives under $GALMASS_SLURM_DIR (default /tmp/galmass-slurm): slurm.conf, pid files, logs, the
# controller state and slurmd spool. Nothing in /etc is changed, except that when /etc/slurm/slurm.conf does
# not exist a symlink to our slurm.conf is placed there (so plain `sbatch` works without SLURM_CONF) and removed
# again by `stop`. An already running munged (a site's) is used as it is and never stopped.
#
# Needs root (the daemons run as root; apt installs the packages). Debian/Ubuntu only. Tested with Slurm
# 22.05.8 and munge 0.5.15 on Debian 12 without systemd. No accounting daemon: `sacct` is not available, so
# submitit's job *states* are unknown, but its results, arrays, dependencies and requeue work.
#
# Submission is checked against the partition (EnforcePartLimits=ALL): `sbatch --ntasks=8 ...` on a 2-CPU machine
# fails at once ("More processors requested than permitted") instead of pending forever.
#
# Known behaviour of a single-node SLURM: a requeued job waits 120 s (Reason=BeginTime) before it may start
# again (`scontrol update JobId=ID StartTime=now` skips the wait); with CR_Core a one-CPU job holds a whole core,
# so at most $(nproc) one-CPU jobs run at once; `--signal=B:USR2@T` is delivered within 30–60 s of T.
set -euo pipefail

DIR="${GALMASS_SLURM_DIR:-/tmp/galmass-slurm}"
CONF="$DIR/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge)

log() { echo "[local_slurm] $*" >&2; }
die() { echo "[local_slurm] error: $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (the SLURM daemons run as root here). HINT: sudo $0 $*"
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "packages ${missing[*]} are missing and apt-get is not available"
    log "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    # apt refuses to start services without systemd (policy-rc.d / no init): that is fine, we start them below.
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# pid_alive PIDFILE NAME: true if the pid file names a live process whose command is NAME (guards pid reuse).
pid_alive() {
  local f="$1" name="$2" pid
  [ -s "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]
}

munge_ok() { command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

write_conf() {
  local host cpus mem
  host="$(hostname -s)"
  cpus="$(nproc)"
  # RealMemory must not exceed what slurmd measures, or the node is drained: take 80 % of MemTotal.
  mem="$(awk '/^MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  cat >"$CONF.tmp" <<EOF
# Written by galmass slurm/local_slurm.sh: a single-node cluster on 127.0.0.1. State under $DIR.
ClusterName=galmass-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
JobRequeue=1
# Refuse at submission (sbatch fails with Slurm's message) a job that the partition can never hold — more CPUs,
# nodes, memory or time than it has — instead of queueing it to pend forever (Reason=PartitionConfig).
EnforcePartLimits=ALL
# Fast kill of timed-out/cancelled steps (default 30 s) keeps tests and requeues short.
KillWait=5
# Scheduling passes every 2 s instead of 60 s: jobs whose dependencies just finished start at once.
SchedulerParameters=sched_interval=2,bf_interval=1
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPort=${GALMASS_SLURMCTLD_PORT:-6817}
SlurmdPort=${GALMASS_SLURMD_PORT:-6818}
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  if [ -f "$CONF" ] && cmp -s "$CONF.tmp" "$CONF"; then rm -f "$CONF.tmp"; return 1; fi
  mv "$CONF.tmp" "$CONF"
}

start() {
  need_root start
  install_packages
  if pid_alive "$DIR/slurmctld.pid" slurmctld && pid_alive "$DIR/slurmd.pid" slurmd; then
    if write_conf; then  # started by an older version of this script: apply the current settings
      log "already running; configuration updated (scontrol reconfigure)"
      SLURM_CONF="$CONF" scontrol reconfigure || die "scontrol reconfigure failed; see $DIR/log/slurmctld.log"
    else
      log "already running (state in $DIR)"
    fi
    wait_idle
    return 0
  fi
  write_conf || true
  if ! munge_ok; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    [ -s /etc/munge/munge.key ] || { log "creating /etc/munge/munge.key"; (umask 077; mungekey -c -f 2>/dev/null || \
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null); chown munge:munge /etc/munge/munge.key; }
    rm -f "$DIR/munged.pid"
    touch "$DIR/munged.pid" && chown munge:munge "$DIR/munged.pid"
    su -s /bin/sh munge -c "/usr/sbin/munged --pid-file=$DIR/munged.pid" \
      || die "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || die "munge does not answer (see /var/log/munge/munged.log)"
  else
    log "using the running munged"
  fi
  if [ ! -e "$ETC_CONF" ] && [ ! -L "$ETC_CONF" ]; then
    mkdir -p /etc/slurm && ln -s "$CONF" "$ETC_CONF"
  fi
  pid_alive "$DIR/slurmctld.pid" slurmctld || SLURM_CONF="$CONF" /usr/sbin/slurmctld -f "$CONF"
  pid_alive "$DIR/slurmd.pid" slurmd || SLURM_CONF="$CONF" /usr/sbin/slurmd -f "$CONF"
  wait_idle
  log "running. Clients: export SLURM_CONF=$CONF   (logs: $DIR/log)"
}

wait_idle() {
  local state=""
  for _ in $(seq 100); do
    state="$(SLURM_CONF="$CONF" timeout 5 sinfo -h -o %t 2>/dev/null | head -n1 || true)"
    case "$state" in idle|mix|alloc|comp) return 0 ;; esac
    sleep 0.2
  done
  die "node not idle after 20 s (state '$state'); see $DIR/log/slurmctld.log and slurmd.log"
}

stop_one() {  # stop_one PIDFILE NAME
  local f="$1" name="$2" pid
  if pid_alive "$f" "$name"; then
    pid="$(cat "$f")"
    kill "$pid"
    for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && { log "$name ($pid) ignores SIGTERM; sending SIGKILL"; kill -9 "$pid" || true; }
    log "stopped $name ($pid)"
  fi
  rm -f "$f"
}

stop() {
  need_root stop
  stop_one "$DIR/slurmd.pid" slurmd
  stop_one "$DIR/slurmctld.pid" slurmctld
  stop_one "$DIR/munged.pid" munged   # only present when this script started munged
  if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then rm -f "$ETC_CONF"; fi
}

status() {
  local rc=0
  for d in slurmctld slurmd munged; do
    if pid_alive "$DIR/$d.pid" "$d"; then echo "$d: running (pid $(cat "$DIR/$d.pid"))"; else echo "$d: not started by this script"; rc=1; fi
  done
  [ -f "$CONF" ] && echo "config: $CONF"
  if pid_alive "$DIR/slurmctld.pid" slurmctld; then
    SLURM_CONF="$CONF" timeout 5 sinfo || true
    SLURM_CONF="$CONF" timeout 5 squeue || true
  fi
  # munged may be a site daemon; the exit status reflects the two SLURM daemons only.
  pid_alive "$DIR/slurmctld.pid" slurmctld && pid_alive "$DIR/slurmd.pid" slurmd || rc=1
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 {start|stop|status}   (state under \$GALMASS_SLURM_DIR, default /tmp/galmass-slurm)" >&2; exit 2 ;;
esac
