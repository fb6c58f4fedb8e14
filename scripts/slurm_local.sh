#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (Debian/Ubuntu, as root), to try `data.executor: slurm` without a
# cluster: munge, slurmctld and slurmd from Debian's slurm-wlm, one partition `debug` holding every core.
# CI runs it so that tests/unit/test_scale.py::test_slurm_executor_on_a_real_cluster submits real jobs.
#
#   sudo bash scripts/slurm_local.sh        # then: sinfo; cptnb prepare ... --data.executor slurm
#
# It never overwrites a slurm.conf it did not write, and does nothing when a partition is already up.
set -euo pipefail
CONF=/etc/slurm/slurm.conf
MARK="# written by cptnb scripts/slurm_local.sh"

if command -v sinfo >/dev/null && sinfo -h -o "%a" 2>/dev/null | grep -qx up; then
  echo "slurm_local: a Slurm partition is already up"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "slurm_local: run as root (it installs packages and starts daemons)" >&2; exit 1
fi
if [ -f "$CONF" ] && ! grep -qx "$MARK" "$CONF"; then
  echo "slurm_local: $CONF exists and is not ours; not touching a real cluster's configuration" >&2; exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

host=$(hostname -s)
cpus=$(nproc)
memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))  # leave a fifth to the system
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > "$CONF" <<EOF
$MARK
ClusterName=cptnb-local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups inside a container: track processes by pid, bind no cores.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

[ -s /etc/munge/munge.key ] || mungekey --create 2>/dev/null || create-munge-key -f
chown munge:munge /run/munge /etc/munge/munge.key 2>/dev/null || true
pgrep -x munged >/dev/null || munged --force
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 30); do
  if sinfo -h -o "%a" 2>/dev/null | grep -qx up && sinfo -h -o "%t" | grep -qE "idle|mix|alloc"; then
    sinfo; exit 0
  fi
  sleep 1
done
echo "slurm_local: the node did not come up; see /var/log/slurm/ (stopping the daemons again)" >&2
sinfo >&2 || true
pkill -x slurmd || true  # a partition that is up with no usable node would make a submission wait, not fail
pkill -x slurmctld || true
exit 1
