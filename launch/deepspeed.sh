#!/usr/bin/env bash
# Run a curriculum with the DeepSpeed launcher: started on the first host only, it starts every rank of every
# host listed in the hostfile over passwordless ssh (pdsh).
#
#   launch/deepspeed.sh [--dry-run] --hostfile HOSTFILE CURRICULUM.yaml [spinegpt run arguments...]
#
# HOSTFILE lines read 'hostname slots=GPUS'. MASTER_ADDR defaults to the first host, MASTER_PORT to 29500.
# SPINEGPT picks the spinegpt command (default: spinegpt on PATH, else .venv/bin/spinegpt).
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
if [[ "${1:-}" != "--hostfile" || $# -lt 3 ]]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
hostfile=$2; curriculum=$3; shift 3
[[ -f "$hostfile" ]] || { echo "error: hostfile not found: $hostfile" >&2; exit 2; }

source "$(dirname "$0")/common.sh"
spinegpt=$(spinegpt_bin)
use_spinegpt_env
run=("$spinegpt" run "$curriculum" --launcher deepspeed --hostfile "$hostfile" "$@")
if [[ $dry_run == 1 ]]; then
  echo "# first host only: $(grep -v '^\s*#' "$hostfile" | awk 'NF {print $1; exit}')"
  echo "${run[*]}"
  plan_args "$@"
  "$spinegpt" plan "$curriculum" --launcher deepspeed --hostfile "$hostfile" "${PLAN_ARGS[@]}" --commands | sed 's/^/#   /'
  exit 0
fi
exec "${run[@]}"
