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
