#!/usr/bin/env bash
# Usage: scripts/check_training_status.sh [--output-dir DIR | --config FILE] [--json] [--wandb]
#                                         [--session NAME] [--lines N] [--wait [--timeout S]] [--help]
#
# Report on one training run: state, step/max_steps, loss, tokens/s, ETA, elapsed, when
# status.json was last updated, GPU utilisation and memory (when nvidia-smi exists), the tmux
# session, the supervisor, the newest checkpoint, resume_count, the last log lines and the W&B URL.
#
#   --output-dir DIR  the run's output directory (holds status.json)
#   --config FILE     use output_dir from FILE (relative paths are relative to the repo root)
#                     Without either: the output dir named in logs/latest.log (the run the
#                     launch scripts started last), else the newest outputs/*/status.json.
#   --json            print one JSON object on stdout and nothing else: status.json (state: the
#                     state decided from the processes) plus tmux_alive, supervisor_alive,
#                     trainer_alive, newest_checkpoint, gpu, log, stale, updated_seconds_ago
#                     (and wandb_summary with --wandb); tagged lines go to stderr
#   --wandb           also ask the W&B API for the run's latest summary metrics (needs
#                     WANDB_API_KEY or ~/.netrc; a missing key or any API failure is a WARNING)
#   --session NAME    tmux session to look for (default: the lock's session=, else
#                     $TRAINKIT_SESSION, else weatherman-training)
#   --lines N         log lines to show (default 10; 0 for none)
#   --wait            first block until the run has a verdict: no process holds its lock and
#                     its trainer pid is gone;
#                     a [STATUS] line every $TRAINKIT_WAIT_REPORT_SECONDS (30) while it waits
#   --timeout S       give up waiting after S seconds (default: no limit) with a WARNING,
#                     then report the run as it is
#
# The log is the one named in OUTPUT_DIR/.trainkit.lock, else the newest logs/*.log whose
# train.py header names OUTPUT_DIR. Whether the trainer and the supervisor are alive comes from
# the processes (the lock's holder, the trainer's pid and its start time), never from the age
# of status.json: a run with neither and no verdict is dead at once.
#
# Exit code mirrors the run's state (the last line is the verdict; trainkit/supervise/supervision.py decides):
#   completed                        0   ✅ SUCCESS: training completed …
#   running, starting                0   ✅ SUCCESS: training running (step X/Y)
#   restarting                       0   ✅ SUCCESS: training restarting (attempt N, relaunch in S s; …)
#   supervisor up, no status.json    0   ✅ SUCCESS: training launching …
#   no status.json, no supervisor    1   ❌ ERROR: no training run found in DIR
#   failed, supervisor still up      0   ✅ SUCCESS: training relaunching after a crash …
#   stalled (alive, no step for stall_timeout_seconds)  4   the supervisor kills and relaunches it
#   failed                           70  (or the exit_code it records, e.g. 1)  read the log, re-run
#   crash_loop                       2   stop; a human must look
#   diverged                         3   lower learning_rate or inspect the data
#   interrupted                      75  re-run the train command to resume
#   dead (no trainer, no supervisor, no verdict)  75  (or the supervisor's non-zero code in .trainkit.exit)
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
# shellcheck source=lib/platform.sh
source "$(dirname "$0")/lib/platform.sh"
# shellcheck source=lib/status.sh
source "$(dirname "$0")/lib/status.sh"
tk_maybe_help "$0" "$@"

usage_hint="see scripts/check_training_status.sh --help"
output_dir="" config="" json=0 wandb=0 session="" lines=10 wait=0 timeout=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --output-dir | --config | --session | --lines | --timeout)
      [[ $# -ge 2 ]] || tk_die "$TK_EXIT_ERROR" "$1 needs a value" "$usage_hint"
      case "$1" in
        --output-dir) output_dir="$2" ;;
        --config) config="$2" ;;
        --session) session="$2" ;;
        --lines) lines="$2" ;;
        --timeout) timeout="$2" ;;
      esac
      shift 2
      ;;
    --json) json=1; shift ;;
    --wandb) wandb=1; shift ;;
    --wait) wait=1; shift ;;
    *) tk_die "$TK_EXIT_ERROR" "unknown argument: $1" "$usage_hint" ;;
  esac
done
[[ "$lines" =~ ^[0-9]+$ ]] || tk_die "$TK_EXIT_ERROR" "--lines wants a number, got '$lines'" "$usage_hint"
[[ "$timeout" =~ ^[0-9]+$ ]] || tk_die "$TK_EXIT_ERROR" "--timeout wants whole seconds, got '$timeout'" "$usage_hint"

if ((json)); then
  # The JSON object goes to fd 3 (the real stdout); every tagged line goes to stderr.
  exec 3>&1 1>&2
fi

root="$(tk_repo_root)"
if [[ -n "$output_dir" ]]; then
  output_dir="$(tk_abs_path "$output_dir")"
elif [[ -n "$config" ]]; then
  [[ -f "$config" ]] || tk_die "$TK_EXIT_ERROR" "config not found: $config" "pass an existing YAML config, e.g. --config configs/smoke.yaml"
  value="$(tk_config_value "$config" output_dir)"
  [[ -n "$value" ]] || tk_die "$TK_EXIT_ERROR" "$config has no output_dir" "pass the run's directory with --output-dir DIR"
  output_dir="$(tk_abs_path "$value" "$root")"
else
  output_dir="$(tk_status_default_output_dir "$root")"
  [[ -n "$output_dir" ]] || tk_die "$TK_EXIT_ERROR" "no training run found (no logs/latest.log, no outputs/*/status.json)" \
    "pass the run with --output-dir DIR or --config FILE, or launch one with the train script"
fi

if ((wait)); then
  tk_status_wait "$output_dir" "$timeout" || tk_warning "gave up waiting after ${timeout}s: the run has no verdict yet" \
    "check again later, or watch it: tmux attach -t $(tk_lock_get "$output_dir" session)"
fi

# Facts only the shell sees; the state, its exit code and the report come from trainkit.supervise.runctl.
session="${session:-$(tk_lock_get "$output_dir" session)}"
session="${session:-${TRAINKIT_SESSION:-weatherman-training}}"
tmux_installed=0 tmux_alive=0
if command -v tmux >/dev/null; then
  tmux_installed=1
  ! tk_session_alive "$session" || tmux_alive=1
fi
log="$(tk_status_log "$output_dir" "$root")"
gpu_csv="" gpu_note=""
if ! command -v nvidia-smi >/dev/null; then
  gpu_note="n/a (no nvidia-smi)"
elif ! gpu_csv="$(tk_gpu_csv)" || [[ -z "$gpu_csv" ]]; then
  gpu_csv="" gpu_note="nvidia-smi failed"
fi

wandb_json=""
if ((wandb)); then
  if ! tk_wandb_key_present >/dev/null; then
    tk_warning "--wandb: no W&B API key (WANDB_API_KEY or ~/.netrc): not querying the W&B API" \
      "export WANDB_API_KEY=... or run \`wandb login\`"
  else
    if ! wandb_reply="$(tk_wandb_summary "$(tk_python h100)" "$output_dir")"; then
      tk_warning "--wandb: ${wandb_reply:-W&B API query failed}" "the status below is from status.json only"
    else
      wandb_json="$wandb_reply"
    fi
  fi
fi

report=(status --output-dir "$output_dir" --session "$session" --tmux-installed "$tmux_installed"
  --tmux-alive "$tmux_alive" --gpu-csv "$gpu_csv" --gpu-note "$gpu_note" --log "$log" --lines "$lines"
  --wandb-json "$wandb_json")
code=0
if ((json)); then
  tk_runctl "${report[@]}" --json >&3 || code=$?
else
  tk_runctl "${report[@]}" || code=$?
fi
exit "$code"
