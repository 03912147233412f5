# Sourced by the launch scripts (not run on its own).

# The spinegpt command: $SPINEGPT, else spinegpt on PATH, else this checkout's .venv.
spinegpt_bin() {
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  echo "${SPINEGPT:-$(command -v spinegpt || echo "$here/.venv/bin/spinegpt")}"
}

# PLAN_ARGS=( the arguments given for `spinegpt run`, less the run-only ones `spinegpt plan` does not take )
plan_args() {
  PLAN_ARGS=()
  local skip=0 arg
  for arg in "$@"; do
    if [[ $skip == 1 ]]; then skip=0; continue; fi
    case "$arg" in
      --resume | --until=*) ;;
      --until) skip=1 ;;
      *) PLAN_ARGS+=("$arg") ;;
    esac
  done
}

# The environment spinegpt is installed in goes first on PATH: DeepSpeed's CPU Adam op (ZeRO-3 offload) is compiled
# on first use with `ninja`, which pip installs into that environment's bin/, off PATH wherever the environment is
# not activated (srun, ssh, a batch script).
use_spinegpt_env() {
  local bin
  bin=$(dirname "$(spinegpt_bin)")
  export PATH="$bin:$PATH"
}
