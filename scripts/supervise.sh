#!/usr/bin/env bash
# Usage: scripts/supervise.sh --platform P --config FILE --output-dir DIR --log FILE [--session NAME]
#                             [--nproc N] [--nnodes N --rdzv-endpoint HOST:PORT [--node-rank R]] [-- TRAIN_ARGS...]
#
# Run train.py until it reaches a verdict, resuming it after a crash (a relaunch reads the config as the
# launch's first attempt read it: DIR/launch_config.yaml, whatever the file says now). Meant to run inside
# the tmux session that scripts/train.sh opens; all output is appended to the log.
#
# The supervisor holds DIR/.trainkit.lock (an flock, trainkit/core/lock.py) for its whole life and
# hands it to train.py ($TRAINKIT_LOCK_FD); a second supervisor or trainer on DIR exits 1 naming
# this one. What each train.py exit code means is trainkit/supervise/supervision.py's (supervisor_next):
#   0 done, 1 input error, 2 crash loop, 3 diverged, 75 interrupted  -> stop with that code
#   70 crashed, 128+N killed by a signal, anything else              -> relaunch after a backoff
# The backoff starts at $TRAINKIT_BACKOFF_SECONDS (10) and doubles up to 300 s; status.json says
# `restarting` meanwhile (attempt, when). The supervisor gives up with 70 after
# $TRAINKIT_MAX_RESTARTS (10) failures in a row without progress (a step beyond the attempt's start).
# Every $TRAINKIT_STALL_POLL_SECONDS (30) it asks whether train.py is stalled (alive, no step for
# stall_timeout_seconds); a stalled trainer gets SIGTERM, then SIGKILL after
# $TRAINKIT_STALL_KILL_GRACE_SECONDS (60), and is relaunched as a crash.
# A stop request at any moment (Ctrl-C in the pane, SIGTERM, tmux kill-session's SIGHUP) is passed
# to train.py, which saves a checkpoint and exits 75; no relaunch follows, also during a backoff. A train.py
# still alive stop_grace_seconds (20) after the request is SIGKILLed: the verdict is 75, "the stop was forced".
# With TRAINKIT_NOTIFY_URL set it posts what only it sees (restarting, stalled, gave_up) through runctl notify,
# which hands the request to a detached sender (trainkit/core/notify.py); train.py posts the rest.
# The final code goes to DIR/.trainkit.exit (with the launch id) and the lock is released on exit.
# On node R > 0 of a multi-node run (--node-rank) the lock and verdict are DIR/.trainkit.node<R>.lock
# and .exit, and status.json is left to node 0: the nodes may share one output dir.
#
# --nproc N (N > 1) or --nnodes N (> 1) runs train.py under torchrun (`python -m torch.distributed.run`,
# --standalone on one node; across nodes a rendezvous at --rdzv-endpoint: static with --node-rank, so
# that node 0 keeps rank 0, else c10d). torchrun's own exit status
# hides its workers' codes (a 75 or 70 becomes 1), so the code decided on is the group's verdict
# (trainkit.supervise.supervision.group_verdict): each rank records its exit code in a folder made for the attempt,
# and a rank that recorded none was killed, which is a crash.
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

platform="" config="" output_dir="" log="" session="" nproc=1 nnodes=1 node_rank="" rdzv_endpoint=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --platform) platform="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --output-dir) output_dir="$2"; shift 2 ;;
    --log) log="$2"; shift 2 ;;
    --session) session="$2"; shift 2 ;;
    --nproc) nproc="$2"; shift 2 ;;
    --nnodes) nnodes="$2"; shift 2 ;;
    --node-rank) node_rank="$2"; shift 2 ;;
    --rdzv-endpoint) rdzv_endpoint="$2"; shift 2 ;;
    --) shift; break ;;
    *) tk_die "$TK_EXIT_ERROR" "unknown argument: $1" "see scripts/supervise.sh --help" ;;
  esac
done
[[ -n "$platform" && -n "$config" && -n "$output_dir" && -n "$log" ]] ||
  tk_die "$TK_EXIT_ERROR" "--platform, --config, --output-dir and --log are required" "see scripts/supervise.sh --help"

[[ "$nproc" =~ ^[1-9][0-9]*$ && "$nnodes" =~ ^[1-9][0-9]*$ ]] ||
  tk_die "$TK_EXIT_ERROR" "--nproc and --nnodes must be whole numbers of at least 1" "e.g. --nproc 2"
((nnodes == 1)) || [[ -n "$rdzv_endpoint" ]] ||
  tk_die "$TK_EXIT_ERROR" "--nnodes $nnodes needs --rdzv-endpoint HOST:PORT (node 0's address)" "see docs/MULTI_NODE.md"
tag="TRAINING-$(printf %s "$platform" | tr "[:lower:]" "[:upper:]")"
# Node R > 0 of a multi-node run keeps its own lock and verdict, so that the nodes may share one output dir.
node=0
((nnodes == 1)) || [[ -z "$node_rank" ]] || node=$node_rank
root="$(tk_repo_root)"
cd "$root"
python="$(tk_python "$platform")"
backoff="${TRAINKIT_BACKOFF_SECONDS:-10}"
max_restarts="${TRAINKIT_MAX_RESTARTS:-10}"
poll="${TRAINKIT_STALL_POLL_SECONDS:-30}"
grace="${TRAINKIT_STALL_KILL_GRACE_SECONDS:-60}"
launch_id="${TRAINKIT_LAUNCH_ID:-supervise-$$-$(date +%s)}"
export NO_COLOR=1 PYTHONUNBUFFERED=1 TRAINKIT_LOG_FILE="$log" TRAINKIT_SESSION="$session" TRAINKIT_LAUNCH_ID="$launch_id"
if [[ "$platform" == "m4" ]]; then
  # Read by torch at import time only: they must be in the environment before Python starts.
  export PYTORCH_ENABLE_MPS_FALLBACK=1
fi

# say CMD ARGS... — run a tk_* printer into the pane and the log; once the pane is gone
# (tmux kill-session), into the log only: a write to a dead terminal must not end the run.
pane_gone=0
say() {
  if ((pane_gone)); then
    "$@" >>"$log" 2>&1 || true
  else
    "$@" 2>&1 | tee -a "$log" || true
  fi
}

mkdir -p "$output_dir"
# fd 9 holds the lock while this script lives; train.py inherits it, nothing else does.
exec 9>>"$(tk_lock_file "$output_dir" "$node")"
if ! taken="$(tk_runctl lock-take --fd 9 --output-dir "$output_dir" --node-rank "$node" --pid $$ --session "$session" \
  --log "$log" --launch-id "$launch_id" --handover-seconds 30)"; then
  printf '%s\n' "$taken" | tee -a "$log" || true
  exit "$TK_EXIT_ERROR"
fi
rm -f "$(tk_exit_file "$output_dir" "$node")"

child="" stop_signal="" code=0 finished=0 thermal_pid="" rank_exits=""
# The command of one attempt: train.py itself, or torchrun with one train.py per process. Across
# nodes, each attempt meets under its own rendezvous id: torchrun closes the previous one when it exits.
distributed=0
((nproc == 1 && nnodes == 1)) || distributed=1
trainer=()
trainer_for_attempt() {
  trainer=("$python" train.py)
  ((distributed)) || return 0
  trainer=("$python" -m torch.distributed.run --nproc_per_node "$nproc")
  if ((nnodes > 1)); then
    trainer+=(--nnodes "$nnodes" --rdzv_endpoint "$rdzv_endpoint" --rdzv_id "${TRAINKIT_RDZV_ID:-trainkit}-$1")
    if [[ -n "$node_rank" ]]; then
      # Fixed ranks: node 0 keeps global rank 0 (status.json, the protocol) across relaunches.
      trainer+=(--rdzv_backend static --node_rank "$node_rank")
    else
      trainer+=(--rdzv_backend c10d)
    fi
  else
    trainer+=(--standalone)
  fi
  trainer+=(train.py)
}
# A stop request: remember it and pass it on to train.py (in its own process group, so that
# it hears each request exactly once, from here).
# shellcheck disable=SC2317  # called from the traps below
on_stop() {
  stop_signal="${stop_signal:-$1}"
  [[ "$1" != HUP ]] || pane_gone=1
  [[ -z "$child" ]] || kill -s "$1" "$child" 2>/dev/null || true
}
trap 'on_stop TERM' TERM
trap 'on_stop INT' INT
trap 'on_stop HUP' HUP

# finish — record the verdict, stop what is left, release the lock; runs once, also on an unexpected exit.
finish() {
  local status=$?
  ((finished)) && return 0
  finished=1
  ((status == 0)) || ((code != 0)) || code=$status
  [[ -z "$thermal_pid" ]] || kill "$thermal_pid" 2>/dev/null || true
  [[ -z "$rank_exits" ]] || rm -rf "$rank_exits"
  if [[ -n "$child" ]] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  tk_runctl exit-record --output-dir "$output_dir" --node-rank "$node" --code "$code" --launch-id "$launch_id" \
    --stopped-by "$stop_signal" 9>&- || true
  exec 9>&-
  say tk_section "$tag" "supervisor exited $code"
}
trap finish EXIT

if [[ "$platform" == "m4" ]] && command -v pmset >/dev/null; then
  # shellcheck source=lib/platform_watch.sh
  source "$(dirname "$0")/lib/platform_watch.sh"
  tk_thermal_watch "$tag" >>"$log" 2>&1 9>&- &
  thermal_pid=$!
fi

# pause SECONDS — sleep that a stop request cuts short.
pause() {
  local sleeper
  sleep "$1" 9>&- &
  sleeper=$!
  wait "$sleeper" 2>/dev/null || kill "$sleeper" 2>/dev/null || true
}

# stop_stalled — SIGTERM, the grace period, then SIGKILL for a train.py that no longer steps:
# to its whole process group, so that torchrun's workers go too.
stop_stalled() {
  local waited=0
  kill -TERM -- "-$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null || true
  while kill -0 "$child" 2>/dev/null && ((waited < grace)) && [[ -z "$stop_signal" ]]; do
    pause 1
    waited=$((waited + 1))
  done
  kill -KILL -- "-$child" 2>/dev/null || kill -KILL "$child" 2>/dev/null || true
}

# stop_grace_seconds (train.py writes it into status.json; 20 before it has) bounds a stop request.
readonly TK_STOP_GRACE_DEFAULT=20
attempt=0 failures=0 action="" forced=0 stop_grace=$TK_STOP_GRACE_DEFAULT
while [[ -z "$stop_signal" ]]; do
  attempt=$((attempt + 1))
  # Its own process group (set -m): a Ctrl-C in the pane reaches train.py only through on_stop.
  trainer_for_attempt "$attempt"
  if ((distributed)); then
    [[ -z "$rank_exits" ]] || rm -rf "$rank_exits"
    rank_exits="$(mktemp -d "${TMPDIR:-/tmp}/trainkit-ranks.XXXXXX")"
  fi
  # A relaunch trains what the launch started: the copy of the config its first attempt made, not the live
  # file, which may have been edited for the next run since (trainkit/train/snapshot.py).
  attempt_config="$config"
  if ((attempt > 1)); then
    attempt_config="$(tk_runctl launch-config --output-dir "$output_dir" --launch-id "$launch_id" --config "$config" 9>&-)"
    [[ "$attempt_config" == "$config" ]] || say tk_section "$tag" "this attempt reads the config as launched: $attempt_config"
  fi
  set -m
  TRAINKIT_ATTEMPT=$attempt TRAINKIT_LOCK_FD=9 TRAINKIT_RANK_EXIT_DIR="$rank_exits" \
    "${trainer[@]}" --config "$attempt_config" --output_dir "$output_dir" "$@" </dev/null > >(trap '' INT HUP TERM && exec tee -a "$log" 9>&-) 2>&1 &
  child=$!
  set +m
  ticks=0 stop_waited=0
  while kill -0 "$child" 2>/dev/null; do
    pause 1
    ticks=$((ticks + 1))
    if [[ -n "$stop_signal" ]] && ((!forced)) && kill -0 "$child" 2>/dev/null; then
      # A bounded stop: past the grace, SIGKILL the trainer's whole group; checkpoints are complete or marked.
      ((stop_waited)) || stop_grace="$(tk_runctl field --output-dir "$output_dir" stop_grace_seconds 9>&- || true)"
      [[ "$stop_grace" =~ ^[0-9]+$ ]] || stop_grace=$TK_STOP_GRACE_DEFAULT
      stop_waited=$((stop_waited + 1))
      if ((stop_waited >= stop_grace)); then
        forced=1
        kill -KILL -- "-$child" 2>/dev/null || kill -KILL "$child" 2>/dev/null || true
      fi
    fi
    if ((ticks % poll == 0)) && [[ -z "$stop_signal" ]] && kill -0 "$child" 2>/dev/null &&
      stalled_for="$(tk_runctl stalled --output-dir "$output_dir" 9>&-)"; then
      say tk_warning "train.py (pid $child) is stalled: no step for ${stalled_for}s; stopping it to relaunch" \
        "stall_timeout_seconds in the config sets the limit; the log has what it was doing"
      tk_runctl notify --event stalled --output-dir "$output_dir" --node-rank "$node" --seconds "$stalled_for" 9>&- || true
      stop_stalled
    fi
  done
  set +e
  wait "$child"
  code=$?
  set -e
  child=""
  if [[ -n "$rank_exits" ]]; then
    launcher_code=$code
    code="$(tk_runctl group-verdict --folder "$rank_exits" --nproc "$nproc" --output-dir "$output_dir" \
      --node-rank "$node" 9>&-)" ||
      code=$TK_EXIT_CRASHED
    say tk_section "$tag" "torchrun exited $launcher_code; its processes' verdict: $code"
  fi
  progressed=0
  ! tk_runctl progressed --output-dir "$output_dir" --launch-id "$launch_id" --attempt "$attempt" 9>&- || progressed=1
  read -r action value < <(tk_runctl supervise-next --code "$code" --failures "$failures" \
    --max-restarts "$max_restarts" --progressed "$progressed" 9>&-)
  [[ -n "$action" ]] || action=relaunch value=$((failures + 1))
  if [[ "$action" == stop ]]; then
    break
  fi
  if ((forced)); then
    say tk_error "the stop was forced: train.py did not exit within ${stop_grace}s of SIG$stop_signal and was killed (SIGKILL)" \
      "nothing is lost: checkpoints are complete or marked incomplete; re-run the same command to resume from the newest complete one"
    code=$TK_EXIT_INTERRUPTED
    break
  fi
  if [[ -n "$stop_signal" ]]; then
    code=$TK_EXIT_INTERRUPTED
    break
  fi
  if [[ "$action" == give_up ]]; then
    say tk_error "train.py failed $((failures + 1)) times in a row without progress (last exit $code); the supervisor gives up" \
      "read the log $log; fix the cause and launch again"
    tk_runctl notify --event gave_up --output-dir "$output_dir" --node-rank "$node" --code "$code" \
      --failures $((failures + 1)) 9>&- || true
    code=$value
    break
  fi
  failures=$value
  say tk_section "$tag" "train.py exited $code; relaunching in ${backoff}s (restart $failures of $max_restarts)"
  tk_runctl mark-restarting --output-dir "$output_dir" --node-rank "$node" --attempt $((attempt + 1)) --delay "$backoff" \
    --code "$code" --launch-id "$launch_id" 9>&- || true
  tk_runctl notify --event restarting --output-dir "$output_dir" --node-rank "$node" --code "$code" \
    --attempt $((attempt + 1)) --delay "$backoff" 9>&- || true
  pause "$backoff"
  backoff=$((backoff * 2 > 300 ? 300 : backoff * 2))
done
if [[ -n "$stop_signal" && "$action" == relaunch ]]; then
  # Stopped between two launches: nothing runs, nothing more to save.
  code=$TK_EXIT_INTERRUPTED
fi

finish
# A person attaching to the pane can still read the end ($TRAINKIT_TMUX_LINGER seconds, default 0).
((pane_gone)) || sleep "${TRAINKIT_TMUX_LINGER:-0}"
exit "$code"
