# shellcheck shell=bash
# Setup steps that say how long they took, so a user on a paid GPU sees where the minutes go.
#
#   tk_step_begin TAG "conda env"   # ends the step before it (printing its time), starts this one
#   tk_step_end TAG                 # ends the last step and prints the total
#
# The lines read "[TAG] step <name>: <M>m<SS>s (total <M>m<SS>s)". TRAINKIT_CLOCK (a command that
# prints seconds since the epoch) replaces `date +%s`, for tests.

TK_STEP_NAME="" TK_STEP_START="" TK_STEPS_START=""

# tk_now — seconds since the epoch.
tk_now() {
  if [[ -n "${TRAINKIT_CLOCK:-}" ]]; then "$TRAINKIT_CLOCK"; else date +%s; fi
}

# tk_minutes SECONDS — print SECONDS as <M>m<SS>s.
tk_minutes() {
  printf '%dm%02ds\n' "$(($1 / 60))" "$(($1 % 60))"
}

# tk_step_close TAG NOW — print the time of the running step, if any.
tk_step_close() {
  [[ -n "$TK_STEP_NAME" ]] || return 0
  tk_section "$1" "step $TK_STEP_NAME: $(tk_minutes $(($2 - TK_STEP_START))) (total $(tk_minutes $(($2 - TK_STEPS_START))))"
}

# tk_step_begin TAG NAME — print the time of the running step (if any) and start step NAME.
tk_step_begin() {
  local now
  now="$(tk_now)"
  [[ -n "$TK_STEPS_START" ]] || TK_STEPS_START="$now"
  tk_step_close "$1" "$now"
  TK_STEP_NAME="$2" TK_STEP_START="$now"
}

# tk_step_end TAG — print the time of the last step and of all of them.
tk_step_end() {
  local now
  [[ -n "$TK_STEP_NAME" ]] || return 0
  now="$(tk_now)"
  tk_step_close "$1" "$now"
  TK_STEP_NAME=""
  tk_section "$1" "setup took $(tk_minutes $((now - TK_STEPS_START)))"
}
