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
#   --json            print one JSON object on stdout and nothing else: status.json plus
#                     tmux_alive, supervisor_alive, newest_checkpoint, gpu, log, stale,
#                     updated_seconds_ago (and wandb_summary with --wandb); tagged lines go to stderr
#   --wandb           also ask the W&B API for the run's latest summary metrics (needs
#                     WANDB_API_KEY or ~/.netrc; a missing key or any API failure is a WARNING)
#   --session NAME    tmux session to look for (default: the lock's session=, else
#                     $TRAINKIT_SESSION, else weatherman-training)
#   --lines N         log lines to show (default 10; 0 for none)
#   --wait            first block until the run has a verdict: its supervisor has exited and
#                     status.json no longer says starting/running with a live trainer pid;
#                     a [STATUS] line every $TRAINKIT_WAIT_REPORT_SECONDS (30) while it waits
#   --timeout S       give up waiting after S seconds (default: no limit) with a WARNING,
#                     then report the run as it is
#
# The log is the one named in OUTPUT_DIR/.trainkit.lock, else the newest logs/*.log whose
# train.py header names OUTPUT_DIR. A run whose status.json says starting/running while its
# trainer pid and supervisor are gone and which has not been updated for
# $TRAINKIT_STALE_SECONDS (300) is stale: it died without a verdict.
#
# Exit code mirrors the run's state (the last line is the verdict):
#   completed                        0   ✅ SUCCESS: training completed …
#   running, starting                0   ✅ SUCCESS: training running (step X/Y)
#   supervisor up, no status.json    0   ✅ SUCCESS: training launching …
#   no status.json, no supervisor    1   ❌ ERROR: no training run found in DIR
#   failed, supervisor still up      0   ✅ SUCCESS: training relaunching after a crash …
#   failed                           70  (or the exit_code it records, e.g. 1)  read the log, re-run
#   crash_loop                       2   stop; a human must look
#   diverged                         3   lower learning_rate or inspect the data
#   interrupted                      75  re-run the train command to resume
#   stale (died without a verdict)   75  (or the supervisor's non-zero code in .trainkit.exit)
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

# Facts outside status.json.
supervisor_pid="$(tk_lock_get "$output_dir" pid)"
supervisor_alive=0
tk_lock_alive "$output_dir" && supervisor_alive=1
session="${session:-$(tk_lock_get "$output_dir" session)}"
session="${session:-${TRAINKIT_SESSION:-weatherman-training}}"
tmux_alive=0
if command -v tmux >/dev/null && tk_session_alive "$session"; then
  tmux_alive=1
fi
checkpoint="$(tk_newest_checkpoint "$output_dir")"
log="$(tk_status_log "$output_dir" "$root")"
gpu_csv="" gpu_note=""
if ! command -v nvidia-smi >/dev/null; then
  gpu_note="n/a (no nvidia-smi)"
elif ! gpu_csv="$(tk_gpu_csv)" || [[ -z "$gpu_csv" ]]; then
  gpu_csv="" gpu_note="nvidia-smi failed"
fi
supervisor_exit=""
[[ ! -f "$(tk_exit_file "$output_dir")" ]] || supervisor_exit="$(head -n 1 "$(tk_exit_file "$output_dir")")"

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

st_json="" st_problem="" st_found=0 st_stale=0 st_trainer_alive=0 st_age="" st_gpu="" st_state=""
st_steps="" st_progress="" st_loss="" st_tps="" st_eta="" st_elapsed="" st_updated="" st_pid="" st_resume_count=""
st_wandb_url="" st_exit_code="" st_message="" st_last_checkpoint="" st_wandb="" st_wandb_path=""
python="$(tk_python cpu)"
# The supervisor's last verdict was "input error" and came after status.json was last written.
refused=0
if ((!supervisor_alive)) && [[ "$supervisor_exit" == "$TK_EXIT_ERROR" ]] &&
  { [[ ! -f "$output_dir/status.json" ]] || [[ "$(tk_exit_file "$output_dir")" -nt "$output_dir/status.json" ]]; }; then
  refused=1
fi
reading="$(tk_status_read "$python" "$output_dir/status.json" "${TRAINKIT_STALE_SECONDS:-300}" \
  "$supervisor_alive" "$tmux_alive" "$checkpoint" "$log" "$gpu_csv" "$wandb_json" "$refused")" ||
  tk_die "$TK_EXIT_ERROR" "could not read $output_dir/status.json with $python" "check that $python runs"
eval "$reading"

if ((json)); then
  printf '%s\n' "$st_json" >&3
else
  tk_section STATUS "output dir: $output_dir"
  if ((st_found)); then
    tk_section STATUS "state: $st_state$( ((st_stale)) && printf ' (stale)')"
    tk_section STATUS "step: $st_progress"
    tk_section STATUS "loss: $st_loss"
    tk_section STATUS "tokens/s: $st_tps"
    tk_section STATUS "ETA: $st_eta"
    tk_section STATUS "elapsed: $st_elapsed"
    tk_section STATUS "updated: ${st_age:-?} s ago ($st_updated)"
    tk_section STATUS "trainer pid: $st_pid ($( ((st_trainer_alive)) && printf alive || printf 'not running'))"
  fi
  if [[ -n "$supervisor_pid" ]]; then
    tk_section STATUS "supervisor pid: $supervisor_pid ($( ((supervisor_alive)) && printf alive || printf 'not running'))"
  fi
  if [[ -n "$st_gpu" ]]; then
    while IFS= read -r gpu_line; do tk_section STATUS "$gpu_line"; done <<<"$st_gpu"
  else
    tk_section STATUS "GPU: ${gpu_note:-n/a}"
  fi
  if ! command -v tmux >/dev/null; then
    tk_section STATUS "tmux session $session: tmux not installed"
  else
    tk_section STATUS "tmux session $session: $( ((tmux_alive)) && printf alive || printf 'not running')"
  fi
  if [[ -n "$checkpoint" ]]; then
    incomplete=""
    [[ ! -e "$checkpoint/checkpoint-is-incomplete.txt" ]] || incomplete=", incomplete: killed while saving"
    tk_section STATUS "newest checkpoint: ${checkpoint##*/} (step ${checkpoint##*/checkpoint-}$incomplete) $checkpoint"
  else
    tk_section STATUS "newest checkpoint: none"
  fi
  if ((st_found)); then
    tk_section STATUS "resume_count: $st_resume_count"
    if [[ -n "$st_wandb_url" ]]; then
      tk_section STATUS "W&B: $st_wandb_url"
    elif [[ -f "$output_dir/wandb_run.json" ]]; then
      tk_section STATUS "W&B: offline"
    else
      tk_section STATUS "W&B: off (no W&B run for this output dir)"
    fi
  fi
  if [[ -n "$st_wandb_path" ]]; then
    tk_section STATUS "W&B API: $st_wandb_path"
    while IFS= read -r metric; do
      [[ -z "$metric" ]] || tk_section STATUS "W&B $metric"
    done <<<"$st_wandb"
  fi
  if [[ -z "$log" ]]; then
    tk_section STATUS "log: none found (no lock naming one, no logs/*.log for this output dir)"
  elif ((lines > 0)); then
    tk_section STATUS "log: $log (last $lines lines)"
    # Indented so that no log line can pass for this command's own tagged lines.
    tail -n "$lines" "$log" | sed 's/^/    /'
  else
    tk_section STATUS "log: $log"
  fi
fi

# The verdict.
where="in $output_dir"
[[ -z "$log" ]] || where="in $log"
if [[ -n "$st_problem" ]]; then
  tk_die "$TK_EXIT_ERROR" "$st_problem in $output_dir" "wait a moment and check again; re-running the train command rewrites it"
fi
if ((!st_found)); then
  if ((supervisor_alive)); then
    tk_success "training launching: supervisor pid $supervisor_pid is starting train.py for $output_dir (no status.json yet)"
    exit "$TK_EXIT_OK"
  fi
  tk_die "$TK_EXIT_ERROR" "no training run found in $output_dir (no status.json)" \
    "launch training first, or pass the run's directory with --output-dir DIR (or --config FILE)"
fi
if ((st_stale)); then
  code="$TK_EXIT_INTERRUPTED"
  [[ ! "$supervisor_exit" =~ ^[1-9][0-9]*$ ]] || code="$supervisor_exit"
  tk_warning "status.json says $st_state but trainer pid $st_pid and its supervisor are gone; last update ${st_age} s ago"
  tk_die "$code" "training stopped without a verdict at step $st_steps (killed outright?)" \
    "read the log $where; re-run the train command to resume from the newest checkpoint"
fi
message="${st_message:+: $st_message}"
case "$st_state" in
  completed)
    tk_success "training completed: step $st_steps$message"
    exit "$TK_EXIT_OK"
    ;;
  running | starting)
    tk_success "training $st_state (step $st_steps)"
    exit "$TK_EXIT_OK"
    ;;
  interrupted)
    tk_die "$TK_EXIT_INTERRUPTED" "training interrupted at step $st_steps$message" \
      "re-run the train command to resume${st_last_checkpoint:+ from ${st_last_checkpoint##*/}}"
    ;;
  crash_loop)
    tk_die "$TK_EXIT_CRASH_LOOP" "training stopped by the crash-loop guard at step $st_steps$message" \
      "stop: a human must look at the tracebacks $where (and $output_dir/trainkit.log); after fixing the cause delete $output_dir/resume_metadata.json and re-run"
    ;;
  diverged)
    tk_die "$TK_EXIT_DIVERGED" "training diverged at step $st_steps$message" \
      "do not retry unchanged: lower learning_rate or inspect the data${st_last_checkpoint:+; the last good state is in ${st_last_checkpoint##*/}}"
    ;;
  failed)
    code="$TK_EXIT_CRASHED"
    [[ ! "$st_exit_code" =~ ^[1-9][0-9]*$ ]] || code="$st_exit_code"
    if ((code == TK_EXIT_CRASHED && supervisor_alive)); then
      tk_warning "train.py crashed at step $st_steps$message" "supervisor pid $supervisor_pid relaunches it; it resumes from the last checkpoint"
      tk_success "training relaunching after a crash (step $st_steps)"
      exit "$TK_EXIT_OK"
    fi
    if ((code == TK_EXIT_ERROR)); then
      tk_die "$code" "training failed before it started$message" "fix what the ERROR $where says, then re-run the train command"
    fi
    tk_die "$code" "training crashed at step $st_steps$message" \
      "read the traceback $where; re-run the train command to resume from the last checkpoint"
    ;;
  *)
    tk_die "$TK_EXIT_ERROR" "status.json in $output_dir has an unknown state '$st_state'" \
      "update trainkit, or read $output_dir/status.json yourself"
    ;;
esac
