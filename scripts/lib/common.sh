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

# tk_runctl ARGS... — run python -m trainkit.runctl: the run's decisions (status, lock, watch,
# supervisor), stdlib + PyYAML only so it starts fast. The Python is looked up once per script.
tk_runctl() {
  local root
  root="$(tk_repo_root)"
  [[ -n "${TK_RUNCTL_PYTHON:-}" ]] || TK_RUNCTL_PYTHON="$(tk_python h100)"
  PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$TK_RUNCTL_PYTHON" -m trainkit.runctl "$@"
}

# tk_config_value CONFIG KEY [DEFAULT] — print KEY's value from a YAML config (DEFAULT when absent).
tk_config_value() {
  tk_runctl config-value "$@"
}

# tk_timestamp — print the local time as YYYYmmdd_HHMMSS, for log file names.
tk_timestamp() {
  date +%Y%m%d_%H%M%S
}
