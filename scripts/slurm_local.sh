#!/usr/bin/env bash
# Run the milkcells workflow through Snakemake's SLURM executor on a real one-node
# SLURM started here (Debian's slurm-wlm and munge; root needed), then stop it.
#
#   bash scripts/slurm_local.sh [snakemake args...]     # default: the tiny demo (.test/)
#
# SLURM's state and logs live in a temporary folder. Jobs' own srun calls read the
# standard /etc/slurm/slurm.conf, so the script writes it there (any existing file
# is moved aside and put back at the end).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge
fi
tmp=$(mktemp -d /tmp/milkcells-slurm.XXXX)
mkdir -p "$tmp"/{state,spool} /run/munge
chown munge:munge /run/munge
[ -f /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) * 8 / 10 ))
cat > "$tmp/slurm.conf" <<CONF
ClusterName=milkcells
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2000
MinJobAge=600
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=localhost CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p /etc/slurm
[ -e /etc/slurm/slurm.conf ] && mv /etc/slurm/slurm.conf "$tmp/slurm.conf.saved"
cp "$tmp/slurm.conf" /etc/slurm/slurm.conf
export SLURM_CONF=/etc/slurm/slurm.conf
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  pkill -u munge munged 2>/dev/null || true
  rm -f /etc/slurm/slurm.conf
  [ -e "$tmp/slurm.conf.saved" ] && mv "$tmp/slurm.conf.saved" /etc/slurm/slurm.conf
  return 0
}
trap cleanup EXIT
runuser -u munge -- /usr/sbin/munged --force
slurmctld -D -f "$SLURM_CONF" & pids+=($!)
sleep 2
slurmd -D -N localhost -f "$SLURM_CONF" & pids+=($!)
for _ in $(seq 30); do sinfo -h -o %T 2>/dev/null | grep -qx idle && break; sleep 1; done
sinfo
cd "$repo"
if [ $# -eq 0 ]; then
  set -- --configfile .test/config.yaml --config outdir=results_slurm
fi
"$python" -m snakemake --profile workflow/profiles/slurm-local "$@"
echo "SLURM jobs run:"; squeue -h -t all -o "%i %j %T" 2>/dev/null | tail -n 5 || true
