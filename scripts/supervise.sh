#!/usr/bin/env bash
# Usage: scripts/supervise.sh --platform P --config FILE --output-dir DIR --log FILE [--session NAME] [-- TRAIN_ARGS...]
#
# Run train.py until it reaches a verdict, resuming it after a crash. Meant to run inside
# the tmux session that scripts/train.sh opens; all output is appended to the log.
#
# train.py exit codes decide:
#   0 done, 1 input error, 2 crash loop, 3 diverged, 75 interrupted  -> stop with that code
#   70 crashed, 128+N killed by a signal, anything else              -> relaunch after a backoff
# The backoff starts at $TRAINKIT_BACKOFF_SECONDS (10) and doubles up to 300 s. train.py
# itself stops a crash loop (exit 2) after 3 resumes without progress; as a last guard the
# supervisor gives up after $TRAINKIT_MAX_RESTARTS (10) relaunches and exits 70.
# The final code is written to DIR/.trainkit.exit; DIR/.trainkit.lock is held meanwhile.
# Ctrl-C in the tmux pane stops the run the same way as SIGTERM: checkpoint, then exit 75.
set -euo pipefail
# shellcheck source=lib/protocol.sh
source "$(dirname "$0")/lib/protocol.sh"
# shellcheck source=lib/usage.sh
source "$(dirname "$0")/lib/usage.sh"
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
# shellcheck source=lib/lock.sh
source "$(dirname "$0")/lib/lock.sh"
# shellcheck source=lib/tmux.sh
source "$(dirname "$0")/lib/tmux.sh"
tk_maybe_help "$0" "$@"
# The environment train.sh forwards arrives in a file, never on a command line (see tk_forwarded_env).
if [[ -n "${TRAINKIT_ENV_FILE:-}" ]]; then
  tk_load_forwarded_env "$TRAINKIT_ENV_FILE"
  unset TRAINKIT_ENV_FILE
fi

platform="" config="" output_dir="" log="" session=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --platform) platform="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --output-dir) output_dir="$2"; shift 2 ;;
    --log) log="$2"; shift 2 ;;
    --session) session="$2"; shift 2 ;;
    --) shift; break ;;
    *) tk_die "$TK_EXIT_ERROR" "unknown argument: $1" "see scripts/supervise.sh --help" ;;
  esac
done
[[ -n "$platform" && -n "$config" && -n "$output_dir" && -n "$log" ]] ||
  tk_die "$TK_EXIT_ERROR" "--platform, --config, --output-dir and --log are required" "see scripts/supervise.sh --help"

tag="TRAINING-$(printf %s "$platform" | tr "[:lower:]" "[:upper:]")"
root="$(tk_repo_root)"
python="$(tk_python "$platform")"
backoff="${TRAINKIT_BACKOFF_SECONDS:-10}"
max_restarts="${TRAINKIT_MAX_RESTARTS:-10}"
export NO_COLOR=1 PYTHONUNBUFFERED=1 TRAINKIT_LOG_FILE="$log"
if [[ "$platform" == "m4" ]]; then
  # Read by torch at import time only: they must be in the environment before Python starts.
  export PYTORCH_ENABLE_MPS_FALLBACK=1
fi

tk_lock_write "$output_dir" "$$" "$session" "$log"
rm -f "$(tk_exit_file "$output_dir")"
# A signal for the session reaches train.py too (same process group); it saves and exits 75,
# and this loop ends on that code. The trap only keeps bash alive long enough to record it.
trap 'stop_requested=1' HUP TERM INT
stop_requested=0

thermal_pid=""
if [[ "$platform" == "m4" ]] && command -v pmset >/dev/null; then
  # shellcheck source=lib/platform_watch.sh
  source "$(dirname "$0")/lib/platform_watch.sh"
  tk_thermal_watch "$tag" >>"$log" 2>&1 &
  thermal_pid=$!
fi

restarts=0
while true; do
  set +e
  # Ctrl-C or a hangup in the tmux pane reaches the whole foreground process group. train.py
  # answers with a checkpoint and exit 75, so tee must outlive it, or the checkpoint line
  # becomes a BrokenPipeError.
  (cd "$root" && "$python" train.py --config "$config" --output_dir "$output_dir" "$@") 2>&1 |
    (trap '' INT HUP TERM && exec tee -a "$log")
  code=${PIPESTATUS[0]}
  set -e
  case "$code" in
    0 | 1 | 2 | 3 | 75) break ;;
  esac
  if [[ "$stop_requested" -eq 1 ]]; then
    break
  fi
  if ((restarts >= max_restarts)); then
    tk_error "train.py failed $((restarts + 1)) times (last exit $code); the supervisor gives up" \
      "read the log $log; fix the cause and launch again" | tee -a "$log"
    code=$TK_EXIT_CRASHED
    break
  fi
  restarts=$((restarts + 1))
  tk_section "$tag" "train.py exited $code; relaunching in ${backoff}s (restart $restarts of $max_restarts)" | tee -a "$log"
  sleep "$backoff"
  backoff=$((backoff * 2 > 300 ? 300 : backoff * 2))
done

[[ -z "$thermal_pid" ]] || kill "$thermal_pid" 2>/dev/null || true
printf '%s\n' "$code" >"$(tk_exit_file "$output_dir")"
rm -f "$(tk_lock_file "$output_dir")"
tk_section "$tag" "supervisor exited $code" | tee -a "$log" || true
# A person attaching to the pane can still read the end ($TRAINKIT_TMUX_LINGER seconds, default 0).
sleep "${TRAINKIT_TMUX_LINGER:-0}"
exit "$code"
