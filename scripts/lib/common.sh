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

# tk_config_value CONFIG KEY [DEFAULT] — print KEY's value from a flat YAML config (DEFAULT when absent).
tk_config_value() {
  local config="$1" key="$2" default="${3:-}" value
  value="$(sed -n "s/^${key}:[[:space:]]*//p" "$config" | sed -e 's/[[:space:]]*#.*$//' -e 's/^["'\'']//' -e 's/["'\'']$//' | tail -n 1)"
  printf '%s\n' "${value:-$default}"
}

# tk_timestamp — print the local time as YYYYmmdd_HHMMSS, for log file names.
tk_timestamp() {
  date +%Y%m%d_%H%M%S
}
