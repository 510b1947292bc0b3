# shellcheck shell=bash
# Help text for scripts: their "# Usage:" header is the single source.

# tk_usage SCRIPT — print SCRIPT's header comment (from "# Usage:" to the first non-comment line).
tk_usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}

# tk_maybe_help SCRIPT ARGS... — print the usage and exit 0 when ARGS hold -h or --help.
tk_maybe_help() {
  local script="$1" arg
  shift
  for arg in "$@"; do
    if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
      tk_usage "$script"
      exit 0
    fi
  done
}
