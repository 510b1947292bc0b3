# shellcheck shell=bash
# Agent protocol for bash: tagged stdout lines and exit codes (docs/AGENT_PROTOCOL.md).
# Prints the same bytes as trainkit/core/protocol.py for the same message.

readonly TK_EXIT_OK=0           # success (warnings allowed)
readonly TK_EXIT_ERROR=1        # environment, config or data is wrong: fix and re-run
readonly TK_EXIT_CRASH_LOOP=2   # resumed crash_loop_limit (3) times without progress: a human must look
readonly TK_EXIT_DIVERGED=3     # loss went NaN/inf: lower the learning rate or inspect the data
readonly TK_EXIT_CRASHED=70     # unexpected exception mid-training: the supervisor resumes
readonly TK_EXIT_INTERRUPTED=75 # interrupted after saving a checkpoint: re-run to resume
export TK_EXIT_OK TK_EXIT_ERROR TK_EXIT_CRASH_LOOP TK_EXIT_DIVERGED TK_EXIT_CRASHED TK_EXIT_INTERRUPTED

# tk_colour_enabled — succeed when stdout is a terminal and NO_COLOR is unset or empty.
tk_colour_enabled() {
  [[ -z "${NO_COLOR:-}" && -t 1 ]]
}

# tk__emit COLOUR TEXT [HINT] — print TEXT (coloured when allowed) and an optional ↳ hint line.
tk__emit() {
  local colour="$1" text="$2" hint="${3:-}"
  if [[ -n "$colour" ]] && tk_colour_enabled; then
    printf '\033[%sm%s\033[0m\n' "$colour" "$text"
  else
    printf '%s\n' "$text"
  fi
  if [[ -n "$hint" ]]; then
    printf '  ↳ %s\n' "$hint"
  fi
}

# tk_section TAG [MESSAGE] — print a "[TAG] message" section or progress line.
tk_section() {
  local line="[$1] ${2:-}"
  tk__emit "" "${line%"${line##*[! ]}"}"
}

# tk_success MESSAGE — print the "✅ SUCCESS:" verdict line.
tk_success() { tk__emit 32 "✅ SUCCESS: $1"; }

# tk_warning MESSAGE [HINT] — print an advisory "⚠️ WARNING:" line.
tk_warning() { tk__emit 33 "⚠️ WARNING: $1" "${2:-}"; }

# tk_error MESSAGE [HINT] — print a "❌ ERROR:" line with what to do next.
tk_error() { tk__emit 31 "❌ ERROR: $1" "${2:-}"; }

# tk_resume STEP — print the auto-resume line.
tk_resume() { tk__emit 33 "⚠️ RESUME: Found checkpoint at step $1. Resuming training."; }

# tk_die CODE MESSAGE [HINT] — print the ERROR verdict and exit with CODE.
tk_die() {
  local code="$1"
  shift
  tk_error "$@"
  exit "$code"
}
