#!/usr/bin/env bash
# Usage: scripts/train.sh --platform {h100,m4,cpu} [--config FILE] [--output-dir DIR] [--session NAME]
#                         [--no-wait] [--watch-steps N] [--watch-timeout SECONDS] [--dry-run[=load]]
#                         [-- TRAIN_ARGS...]
#
# Launch a training run in tmux and watch its start. Runs the preflight checks, refuses a
# second trainer on the same output dir or session, starts scripts/supervise.sh (which runs
# train.py and resumes it after crashes) in tmux session NAME (default weatherman-training),
# logs everything to logs/training_[m4_|cpu_]YYYYmmdd_HHMMSS.log (logs/latest.log links to it),
# then watches until step N (default 100): a run that fails during the watch ends this
# command with its exit code and the log's tail; otherwise it detaches with exit 0 and the
# run goes on in tmux. --no-wait detaches right after the launch.
#
#   --config FILE        default: configs/training_config_h100.yaml, _m4.yaml, or configs/smoke.yaml (cpu)
#   --output-dir DIR     override the config's output_dir
#   --dry-run[=load]     run the preflight checks, then train.py --dry-run in the foreground (no tmux, no
#                        log, nothing written): the plan up to the first optimizer step; =load reads the weights
#   TRAIN_ARGS           extra train.py flags, e.g. -- --max_steps 2000
#
# Exit codes: 0 running (or finished), 1 preflight/input error or another trainer owns the
# run, 2 crash loop, 3 diverged, 70 crashed, 75 interrupted. Reconnect: tmux attach -t NAME.
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
# shellcheck source=lib/platform_watch.sh
source "$(dirname "$0")/lib/platform_watch.sh"
# shellcheck source=lib/status.sh
source "$(dirname "$0")/lib/status.sh"
tk_maybe_help "$0" "$@"

platform="" config="" output_dir="" session="${TRAINKIT_SESSION:-weatherman-training}"
dry_run="" wait_for_steps=1 watch_steps=100 watch_timeout="${TRAINKIT_WATCH_TIMEOUT:-3600}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --platform) platform="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --output-dir) output_dir="$2"; shift 2 ;;
    --session) session="$2"; shift 2 ;;
    --no-wait) wait_for_steps=0; shift ;;
    --watch-steps) watch_steps="$2"; shift 2 ;;
    --watch-timeout) watch_timeout="$2"; shift 2 ;;
    --yes) shift ;;
    --dry-run | --dry-run=*) dry_run="$1"; shift ;;
    --) shift; break ;;
    *) tk_die "$TK_EXIT_ERROR" "unknown argument: $1" "see scripts/train.sh --help" ;;
  esac
done
case "$platform" in
  h100) default_config=configs/training_config_h100.yaml log_prefix=training_ ;;
  m4) default_config=configs/training_config_m4.yaml log_prefix=training_m4_ ;;
  cpu) default_config=configs/smoke.yaml log_prefix=training_cpu_ ;;
  *) tk_die "$TK_EXIT_ERROR" "--platform must be h100, m4 or cpu" "e.g. scripts/train.sh --platform cpu" ;;
esac
tag="TRAINING-$(printf %s "$platform" | tr "[:lower:]" "[:upper:]")"
root="$(tk_repo_root)"
cd "$root"
config="${config:-$default_config}"
[[ -f "$config" ]] || tk_die "$TK_EXIT_ERROR" "config file not found: $config" "pass --config configs/<name>.yaml"
output_dir="${output_dir:-$(tk_config_value "$config" output_dir outputs/run)}"
[[ "$output_dir" == /* ]] || output_dir="$root/$output_dir"
command -v tmux >/dev/null || [[ -n "$dry_run" ]] || tk_die "$TK_EXIT_ERROR" "tmux is not installed" "install it: apt-get install tmux, or brew install tmux"

# One trainer per output dir and per session; a lock left by a dead supervisor is cleared.
if [[ -f "$(tk_lock_file "$output_dir")" ]]; then
  owner="$(tk_lock_get "$output_dir" session)"
  if tk_lock_alive "$output_dir"; then
    tk_die "$TK_EXIT_ERROR" "a trainer is already running on $output_dir (tmux session ${owner:-?}, pid $(tk_lock_get "$output_dir" pid))" \
      "watch it with: tmux attach -t ${owner:-$session}; or stop it first (Ctrl-C inside tmux saves a checkpoint)"
  fi
  tk_warning "removing a stale lock from a run that is no longer alive: $(tk_lock_file "$output_dir")"
  rm -f "$(tk_lock_file "$output_dir")"
fi
if tk_session_alive "$session"; then
  tk_die "$TK_EXIT_ERROR" "tmux session $session already exists" \
    "attach with: tmux attach -t $session; or launch with --session <other-name>"
fi

python="$(tk_python "$platform")"
tk_section "$tag" "preflight: $config -> $output_dir"
run_check() {
  "$python" "$@" || tk_die "$TK_EXIT_ERROR" "preflight failed: ${1##*/} (see the ERROR above)" \
    "fix it and launch again; nothing was started"
}
run_check scripts/validate_environment.py --env "$platform"
[[ "$platform" == "cpu" ]] || run_check scripts/check_gpu.py --env "$platform"
run_check scripts/check_storage.py --path "$root" --platform "$platform" --output-dir "$output_dir"
run_check scripts/validate_training_config.py --config "$config" --output_dir "$output_dir" "$@"

if [[ -n "$dry_run" ]]; then
  exec "$python" train.py --config "$config" --output_dir "$output_dir" "$dry_run" "$@"
fi

mkdir -p logs "$output_dir"
# The last run's verdict must not pass for this one's while the new supervisor is starting.
rm -f "$(tk_exit_file "$output_dir")"
log="$root/logs/${log_prefix}$(tk_timestamp).log"
: >"$log"
ln -sfn "$(basename "$log")" logs/latest.log
env_file="$(tk_forwarded_env)"
supervisor=("$root/scripts/supervise.sh" --platform "$platform" --config "$config" --output-dir "$output_dir"
  --log "$log" --session "$session" -- "$@")
tk_tmux new-session -d -s "$session" -x 220 -y 50 -e TRAINKIT_ENV_FILE="$env_file" -e NO_COLOR=1 -c "$root" \
  "exec $(printf '%q ' "${supervisor[@]}")" ||
  { rm -rf "$(dirname "$env_file")"; tk_die "$TK_EXIT_ERROR" "tmux could not open session $session (see its message above)" "check \`tmux ls\`, then launch again"; }
tk_section "$tag" "launched in tmux session $session; log: $log"
tk_section "$tag" "reconnect: tmux attach -t $session   |   follow: tail -f $log"

# report_to as train.py will see it: the last --report_to among TRAIN_ARGS, else the config's.
report_to="$(tk_config_value "$config" report_to)"
train_args=("$@")
for ((i = 0; i + 1 < ${#train_args[@]}; i++)); do
  [[ "${train_args[i]}" != --report_to ]] || report_to="${train_args[i + 1]}"
done

wandb_line() {
  local url
  url="$(tk_status_field "$output_dir" wandb_url)"
  if [[ -n "$url" ]]; then
    tk_section "$tag" "W&B: $url"
  elif grep -qw wandb <<<"$report_to"; then
    tk_section "$tag" "W&B: offline run in $output_dir/wandb (wandb sync it later)"
  fi
}

if ((!wait_for_steps)); then
  wandb_line
  tk_success "training launched in tmux session $session (not watched: --no-wait)"
  exit 0
fi

trap 'tk_success "stopped watching; training continues in tmux session $session"; exit 0' INT
started=$(date +%s)
throttled=0
exit_file="$(tk_exit_file "$output_dir")"
while true; do
  if [[ -f "$exit_file" ]]; then
    code="$(cat "$exit_file")"
    if [[ "$code" == 0 ]]; then
      wandb_line
      tk_success "training completed during the watch: adapter in $output_dir/final"
      exit 0
    fi
    tk_section "$tag" "last lines of $log:"
    tail -n 20 "$log" | sed 's/^/    /'
    case "$code" in
      2) tk_die "$TK_EXIT_CRASH_LOOP" "crash loop: train.py resumed 3 times without progress" "a human must look at $log" ;;
      3) tk_die "$TK_EXIT_DIVERGED" "training diverged (loss NaN/inf)" "lower learning_rate or inspect the data, then launch again" ;;
      75) tk_die "$TK_EXIT_INTERRUPTED" "training was interrupted during the watch" "launch again to resume" ;;
      1) tk_die "$TK_EXIT_ERROR" "training failed before it started (see the ERROR above)" "fix it and launch again" ;;
      *) tk_die "$code" "training crashed (exit $code) and the supervisor gave up" "read $log" ;;
    esac
  fi
  step="$(tk_status_field "$output_dir" step)"
  if [[ -n "$step" ]] && ((step >= watch_steps)); then
    eta="$(tk_status_field "$output_dir" eta_seconds)"
    if [[ -n "$eta" ]]; then
      tk_section "$tag" "estimated time to finish: $(printf '%d:%02d:%02d' $((${eta%.*} / 3600)) $((${eta%.*} % 3600 / 60)) $((${eta%.*} % 60))) (from the measured throughput so far)"
    fi
    wandb_line
    tk_success "training running in tmux session $session (step $step, watched $watch_steps steps); reconnect: tmux attach -t $session"
    exit 0
  fi
  if ! tk_session_alive "$session" && [[ ! -f "$exit_file" ]]; then
    sleep 1
    [[ -f "$exit_file" ]] && continue
    tk_die "$TK_EXIT_CRASHED" "the tmux session $session ended without a verdict" "read $log"
  fi
  if (($(date +%s) - started > watch_timeout)); then
    tk_warning "no step $watch_steps after ${watch_timeout}s; still starting (model download?)" "check: scripts/check_training_status.sh --output-dir $output_dir"
    tk_success "training launched in tmux session $session (watch timed out)"
    exit 0
  fi
  if [[ "$platform" == "m4" ]] && command -v pmset >/dev/null; then
    # Warn when throttling starts, not on every poll.
    if thermal_warning="$(tk_thermal_check "$tag")"; then
      throttled=0
    elif ((!throttled)); then
      printf '%s\n' "$thermal_warning"
      throttled=1
    fi
  fi
  sleep "${TRAINKIT_WATCH_INTERVAL:-1}"
done
