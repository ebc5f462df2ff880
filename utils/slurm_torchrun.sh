#!/usr/bin/env bash
# Multi-node training under Slurm: run this with srun, one task per node, inside
# an allocation; on each node it starts torchrun with NPROC processes (one per
# GPU), and the torchruns of all nodes meet at the allocation's first node
# (c10d rendezvous keyed by the job id). The rest of the line is a tsekit
# command, normally "train ...".
#
#   srun --ntasks-per-node=1 utils/slurm_torchrun.sh NPROC train --config C --train-data D ...
#
# Environment: TSEKIT_RDZV_PORT (default 29500), the port on the first node.
set -euo pipefail
if [ $# -lt 2 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: srun --ntasks-per-node=1 $0 NPROC_PER_NODE train ARGS..." >&2
  exit 2
fi
if [ -z "${SLURM_JOB_ID:-}" ] || [ -z "${SLURM_JOB_NODELIST:-}" ]; then
  echo "$0: not inside a Slurm allocation (no SLURM_JOB_ID); start it with srun in an sbatch script" >&2
  exit 1
fi
nproc=$1
shift
first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
exec torchrun --nnodes "${SLURM_JOB_NUM_NODES:-1}" --nproc-per-node "$nproc" \
  --rdzv-backend c10d --rdzv-id "$SLURM_JOB_ID" --rdzv-endpoint "$first_node:${TSEKIT_RDZV_PORT:-29500}" \
  -m tsekit "$@"
