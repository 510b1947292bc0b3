# shellcheck shell=bash
# Shared helpers for the platform scripts: repo paths, the Python to use, config lookups.

# tk_repo_root — print the repository root (the directory holding train.py).
tk_repo_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd
}

# tk_python PLATFORM — print the Python that trains on PLATFORM ($TRAINKIT_PYTHON wins).
tk_python() {
  local platform="${1:-cpu}" root base
  root="$(tk_repo_root)"
  if [[ -n "${TRAINKIT_PYTHON:-}" ]]; then
    printf '%s\n' "$TRAINKIT_PYTHON"
  elif [[ "$platform" == "h100" ]] && command -v conda >/dev/null &&
    base="$(conda info --base 2>/dev/null)" && [[ -x "$base/envs/${TRAINKIT_CONDA_ENV:-weatherman}/bin/python" ]]; then
    printf '%s\n' "$base/envs/${TRAINKIT_CONDA_ENV:-weatherman}/bin/python"
  elif [[ -x "$root/.venv-local/bin/python" ]]; then
    printf '%s\n' "$root/.venv-local/bin/python"
  else
    command -v python3
  fi
}

# tk_runctl ARGS... — run python -m trainkit.supervise.runctl: the run's decisions (status, lock, watch,
# supervisor). It needs the stdlib only (PyYAML when there), so any Python 3 will do: the
# cheapest one to find, never a `conda info` per call.
tk_runctl() {
  local root python
  root="$(tk_repo_root)"
  if [[ -n "${TRAINKIT_PYTHON:-}" ]]; then
    python="$TRAINKIT_PYTHON"
  elif [[ -n "${CONDA_PREFIX:-}" && -x "$CONDA_PREFIX/bin/python" ]]; then
    python="$CONDA_PREFIX/bin/python"
  elif [[ -x "$root/.venv-local/bin/python" ]]; then
    python="$root/.venv-local/bin/python"
  else
    python="$(command -v python3)"
  fi
  PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$python" -m trainkit.supervise.runctl "$@"
}

# tk_config_value CONFIG KEY [DEFAULT] — print KEY's value from a YAML config (DEFAULT when absent).
tk_config_value() {
  tk_runctl config-value "$@"
}

# tk_timestamp — print the local time as YYYYmmdd_HHMMSS, for log file names.
tk_timestamp() {
  date +%Y%m%d_%H%M%S
}

# tk_log_dir ROOT — print where launch logs go: $TRAINKIT_LOG_DIR, else ROOT/logs.
tk_log_dir() {
  printf '%s\n' "${TRAINKIT_LOG_DIR:-$1/logs}"
}

# tk_preflight_dir ROOT — where config checks that passed are remembered: $TRAINKIT_PREFLIGHT_DIR, else logs/.preflight.
tk_preflight_dir() {
  printf '%s\n' "${TRAINKIT_PREFLIGHT_DIR:-$(tk_log_dir "$1")/.preflight}"
}
