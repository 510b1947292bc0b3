#!/usr/bin/env bash
# Usage: scripts/train.sh --platform {h100,m4,cpu} [--config FILE] [--output-dir DIR] [--session NAME]
#                         [--no-wait] [--watch-steps N] [--watch-timeout SECONDS] [--dry-run[=load]]
#                         [--gpus N | --nproc N] [--nnodes N --rdzv-endpoint HOST:PORT [--node-rank R]]
#                         [-- TRAIN_ARGS...]
#
# Launch a training run in tmux and watch its start. Runs the preflight checks, takes the
# output dir's lock (an flock: of two launches on one output dir exactly one gets it) and
# refuses an existing session, starts scripts/supervise.sh (which takes the lock over, runs
# train.py and resumes it after crashes) in tmux session NAME (default weatherman-training),
# logs everything to logs/training_[m4_|cpu_]YYYYmmdd_HHMMSS.log (logs/latest.log links to it;
# $TRAINKIT_LOG_DIR moves logs/),
# then watches this launch until it made N steps (default 100) beyond where it started: a run
# that fails during the watch ends this command with its exit code and the log's tail; a
# finished run says "already complete"; otherwise it detaches with exit 0 and the run goes on
# in tmux. --no-wait detaches right after the launch.
#
#   --config FILE        default: configs/training_config_h100.yaml, _m4.yaml, or configs/smoke.yaml (cpu)
#   --output-dir DIR     override the config's output_dir (a --output_dir in TRAIN_ARGS wins)
#   --dry-run[=load]     run the preflight checks, then train.py --dry-run in the foreground (no tmux, no
#                        log, nothing written): the plan up to the first optimizer step; =load reads the weights
#   --gpus N             processes to train with, one per GPU (default: every visible GPU on h100, 1 on m4
#                        and cpu); N > 1 runs train.py under torchrun inside the supervisor. --gpus 1: one process
#   --nproc N            the same, by its torchrun name (on cpu: N gloo processes, for testing)
#   --nnodes N           nodes in a multi-node run; each node runs this same command (docs/MULTI_NODE.md)
#   --rdzv-endpoint H:P  node 0's address for torchrun's c10d rendezvous (with --nnodes)
#   --node-rank R        this node's rank, when the nodes are numbered by hand; a node other than 0
#                        detaches right after the launch: node 0 reports the run's progress
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
dry_run="" gpus="" nnodes=1 node_rank="" rdzv_endpoint="" wait_for_steps=1 watch_steps=100 watch_timeout="${TRAINKIT_WATCH_TIMEOUT:-3600}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --platform) platform="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --output-dir) output_dir="$2"; shift 2 ;;
    --session) session="$2"; shift 2 ;;
    --no-wait) wait_for_steps=0; shift ;;
    --watch-steps) watch_steps="$2"; shift 2 ;;
    --watch-timeout) watch_timeout="$2"; shift 2 ;;
    --gpus | --nproc) gpus="$2"; shift 2 ;;
    --nnodes) nnodes="$2"; shift 2 ;;
    --node-rank) node_rank="$2"; shift 2 ;;
    --rdzv-endpoint) rdzv_endpoint="$2"; shift 2 ;;
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
gpus="${gpus:-$(tk_runctl gpu-count --platform "$platform")}"
[[ "$gpus" =~ ^[1-9][0-9]*$ && "$nnodes" =~ ^[1-9][0-9]*$ ]] ||
  tk_die "$TK_EXIT_ERROR" "--gpus and --nnodes must be whole numbers of at least 1" "e.g. --gpus 2, or --gpus 1 for one process"
((nnodes == 1)) || [[ -n "$rdzv_endpoint" ]] ||
  tk_die "$TK_EXIT_ERROR" "--nnodes $nnodes needs --rdzv-endpoint HOST:PORT (node 0's address)" "see docs/MULTI_NODE.md"
[[ -z "$node_rank" ]] || { [[ "$node_rank" =~ ^[0-9]+$ ]] && ((node_rank < nnodes)); } ||
  tk_die "$TK_EXIT_ERROR" "--node-rank $node_rank is not a node of --nnodes $nnodes" "number the nodes 0 to $((nnodes - 1)), node 0 at the --rdzv-endpoint"
# Node R > 0 of a multi-node run keeps its own lock and verdict (see supervise.sh).
node=0
((nnodes == 1)) || [[ -z "$node_rank" ]] || node=$node_rank
config="${config:-$default_config}"
[[ -f "$config" ]] || tk_die "$TK_EXIT_ERROR" "config file not found: $config" "pass --config configs/<name>.yaml"
# The directory train.py will train: a --output_dir among TRAIN_ARGS wins, as it does for train.py.
output_dir="$(tk_runctl output-dir --config "$config" --output-dir "$output_dir" -- "$@")"
[[ "$output_dir" == /* ]] || output_dir="$root/$output_dir"
command -v tmux >/dev/null || [[ -n "$dry_run" ]] || tk_die "$TK_EXIT_ERROR" "tmux is not installed" "install it: apt-get install tmux, or brew install tmux"

# One trainer per output dir and per session. This early look saves the preflight's time; the
# lock itself is taken below, atomically, and kept by the supervisor.
tk_runctl lock-free --output-dir "$output_dir" --node-rank "$node" || exit "$TK_EXIT_ERROR"
if tk_session_alive "$session"; then
  tk_die "$TK_EXIT_ERROR" "tmux session $session already exists" \
    "attach with: tmux attach -t $session; or launch with --session <other-name>"
fi

# The preflight's batch and memory figures are per process; it prints the effective batch for this many.
export TRAINKIT_WORLD_SIZE=$((gpus * nnodes))

python="$(tk_python "$platform")"
tk_section "$tag" "preflight: $config -> $output_dir"
((gpus * nnodes == 1)) || tk_section "$tag" "$gpus processes per node on $nnodes node(s), under torchrun"
run_check() {
  "$python" "$@" || tk_die "$TK_EXIT_ERROR" "preflight failed: ${1##*/} (see the ERROR above)" \
    "fix it and launch again; nothing was started"
}
run_check scripts/validate_environment.py --env "$platform"
[[ "$platform" == "cpu" ]] || run_check scripts/check_gpu.py --env "$platform"
run_check scripts/check_storage.py --path "$root" --platform "$platform" --output-dir "$output_dir"
# A pass on the same inputs within the hour (setup.sh's, or the last launch's) is recalled, not repeated.
run_check scripts/validate_training_config.py --config "$config" --output_dir "$output_dir" "$@" \
  --remember "$(tk_preflight_dir "$root")"

if [[ -n "$dry_run" ]]; then
  exec "$python" train.py --config "$config" --output_dir "$output_dir" "$dry_run" "$@"
fi

logs_dir="$(tk_log_dir "$root")"
mkdir -p "$logs_dir" "$output_dir"
TRAINKIT_LAUNCH_ID="launch-$(tk_timestamp)-$$"
export TRAINKIT_LAUNCH_ID
log="$logs_dir/${log_prefix}$(tk_timestamp).log"
# Two launches in the same second get two logs.
(set -C && : >"$log") 2>/dev/null || log="${log%.log}_$$.log"
: >"$log"
# Held from here until the supervisor takes it over (same launch id): of two launches racing for
# one output dir, exactly one gets here.
exec 9>>"$(tk_lock_file "$output_dir" "$node")"
tk_runctl lock-take --fd 9 --output-dir "$output_dir" --node-rank "$node" --pid $$ --role launcher --session "$session" --log "$log" \
  --launch-id "$TRAINKIT_LAUNCH_ID" || exit "$TK_EXIT_ERROR"
ln -sfn "$(basename "$log")" "$logs_dir/latest.log"
env_file="$(tk_forwarded_env)"
supervisor=("$root/scripts/supervise.sh" --platform "$platform" --config "$config" --output-dir "$output_dir"
  --log "$log" --session "$session" --nproc "$gpus" --nnodes "$nnodes")
[[ -z "$rdzv_endpoint" ]] || supervisor+=(--rdzv-endpoint "$rdzv_endpoint")
[[ -z "$node_rank" ]] || supervisor+=(--node-rank "$node_rank")
supervisor+=(-- "$@")
tk_tmux new-session -d -s "$session" -x 220 -y 50 -e TRAINKIT_ENV_FILE="$env_file" -e NO_COLOR=1 -c "$root" \
  "exec $(printf '%q ' "${supervisor[@]}")" 9>&- ||
  { rm -rf "$(dirname "$env_file")"; tk_die "$TK_EXIT_ERROR" "tmux could not open session $session (see its message above)" "check \`tmux ls\`, then launch again"; }
exec 9>&-
# Letting go leaves a moment in which another launch could take the lock before our supervisor
# does: say "launched" only once the supervisor holds it.
tk_runctl lock-handover --output-dir "$output_dir" --node-rank "$node" --launch-id "$TRAINKIT_LAUNCH_ID" || exit "$TK_EXIT_ERROR"
tk_section "$tag" "launched in tmux session $session; log: $log"
tk_section "$tag" "reconnect: tmux attach -t $session   |   follow: tail -f $log"

# report_to as train.py will see it: the last --report_to among TRAIN_ARGS, else the config's.
report_to="$(tk_config_value "$config" report_to)"
train_args=("$@")
for ((i = 0; i + 1 < ${#train_args[@]}; i++)); do
  [[ "${train_args[i]}" != --report_to ]] || report_to="${train_args[i + 1]}"
done

if [[ -n "$node_rank" ]] && ((node_rank > 0)); then
  # Only global rank 0, on node 0, writes status.json and the protocol: there is nothing to watch here.
  tk_success "node $node_rank of $nnodes launched in tmux session $session; node 0 reports the run's progress"
  exit 0
fi
if ((!wait_for_steps)); then
  url="$(tk_status_field "$output_dir" wandb_url)"
  if [[ -n "$url" ]]; then
    tk_section "$tag" "W&B: $url"
  elif grep -qw wandb <<<"$report_to"; then
    tk_section "$tag" "W&B: offline run in $output_dir/wandb (wandb sync it later)"
  fi
  tk_success "training launched in tmux session $session (not watched: --no-wait)"
  exit 0
fi

trap 'tk_success "stopped watching; training continues in tmux session $session"; exit 0' INT
started=$(date +%s)
throttled=0
# watch [--final] — one look at this launch (trainkit.supervise.runctl watch): it prints the verdict and
# returns its exit code, or returns TK_WATCH_CONTINUE while there is none yet.
readonly TK_WATCH_CONTINUE=100
watch() {
  local alive=0
  ! tk_session_alive "$session" || alive=1
  tk_runctl watch --output-dir "$output_dir" --launch-id "$TRAINKIT_LAUNCH_ID" --watch-steps "$watch_steps" \
    --session-alive "$alive" --session "$session" --tag "$tag" --log "$log" --report-to "$report_to" "$@"
}
while true; do
  code=0
  watch || code=$?
  ((code == TK_WATCH_CONTINUE)) || exit "$code"
  if ! tk_session_alive "$session"; then
    # The session is gone: its verdict, if any, is written by now.
    sleep 1
    code=0
    watch --final || code=$?
    ((code == TK_WATCH_CONTINUE)) || exit "$code"
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
