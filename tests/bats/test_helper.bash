# shellcheck shell=bash
# Loaded by every bats file: assertion libraries and the repo's paths.
bats_load_library bats-support
bats_load_library bats-assert
bats_load_library bats-file

REPO_ROOT="$(cd "$(dirname "${BATS_TEST_FILENAME}")/../.." && pwd)"
export REPO_ROOT

# setup_repo_copy REPO STUB_BIN — a copy of the scripts under REPO (configs, trainkit and the sample
# data linked, not copied) so setup scripts can write links, stamps and logs without touching the
# checkout; puts tests/bats/stubs/python-stub at STUB_BIN/python-stub.
setup_repo_copy() {
  local repo="$1" stub_bin="$2"
  mkdir -p "$repo/data" "$repo/models" "$stub_bin"
  cp -Rp "$REPO_ROOT/scripts" "$REPO_ROOT/environment-remote.yml" "$REPO_ROOT/requirements-local.txt" \
    "$REPO_ROOT/requirements-dev.txt" "$repo/"
  ln -s "$REPO_ROOT/configs" "$repo/configs"
  ln -s "$REPO_ROOT/trainkit" "$repo/trainkit"
  ln -s "$REPO_ROOT/data/sample" "$repo/data/sample"
  cp "$REPO_ROOT/tests/bats/stubs/python-stub" "$stub_bin/python-stub"
}

# use_private_training_env NAME — for tests that really train: a private tmux server
# (trainkit-NAME-PID-TEST), its own log directory, offline, no restart backoff, and no fault injection or NO_COLOR
# inherited from the caller.
use_private_training_env() {
  export TRAINKIT_TMUX_SOCKET="trainkit-$1-$$-${BATS_TEST_NUMBER}"
  # Its own logs/ (and logs/latest.log): tests run side by side (bats --jobs).
  export TRAINKIT_LOG_DIR="$BATS_TEST_TMPDIR/logs"
  # Config checks that passed are recalled across the run's tests, as across one user's launches.
  export TRAINKIT_PREFLIGHT_DIR="$BATS_RUN_TMPDIR/preflight"
  export TRAINKIT_BACKOFF_SECONDS=0 TRAINKIT_WATCH_INTERVAL=1
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
  unset TRAINKIT_FAULT_CRASH_AT_STEP TRAINKIT_FAULT_RANK TRAINKIT_FAULT_NAN_AT_STEP TRAINKIT_FAULT_STEP_DELAY TRAINKIT_FAULT_ONCE NO_COLOR
}

# kill_private_tmux — stop the private tmux server and whatever still runs in it.
kill_private_tmux() {
  tmux -L "$TRAINKIT_TMUX_SOCKET" kill-server 2>/dev/null || true
}

# launched_log TEXT — the log a train.sh launch named in TEXT ("[TRAINING-X] launched in tmux session S; log: PATH").
# Tests read it rather than logs/latest.log, which a launch running beside them may repoint.
launched_log() {
  sed -n 's/^\[TRAINING-[A-Z0-9]*\] launched in tmux session .*; log: //p' <<<"$1" | tail -n 1
}

# wait_until SECONDS COMMAND... — poll until COMMAND succeeds.
wait_until() {
  local i limit=$1
  shift
  for ((i = 0; i < limit * 2; i++)); do
    "$@" && return 0
    sleep 0.5
  done
  echo "timed out waiting for: $*" >&2
  return 1
}

# wait_for_file PATH [SECONDS] — poll until PATH exists.
wait_for_file() { wait_until "${2:-240}" test -e "$1"; }

# at_step N — $OUT/status.json (rank 0's) says step N or later.
at_step() {
  local step
  step="$(sed -n 's/^  "step": \([0-9]*\),$/\1/p' "$OUT/status.json" 2>/dev/null || true)"
  [[ -n "$step" ]] && ((step >= $1))
}

# wait_for_step N — poll $OUT/status.json until the run reaches step N.
wait_for_step() { wait_until 240 at_step "$1"; }

# start_webhooks — two local webhooks for the notification tests: one that records each POST in
# $WEBHOOK_RECORD and answers, one that records and never answers; TRAINKIT_NOTIFY_URL names both, each
# with a secret path that must appear in no file, log or process list. stop_webhooks ends them.
start_webhooks() {
  local dir="$BATS_TEST_TMPDIR/webhooks"
  mkdir -p "$dir"
  WEBHOOK_RECORD="$dir/posts.jsonl" WEBHOOK_SECRET="hook-secret-$$-${BATS_TEST_NUMBER}"
  "$REPO_ROOT/.venv-local/bin/python" "$REPO_ROOT/tests/bats/webhook_server.py" "$dir/port" "$WEBHOOK_RECORD" 3>&- &
  WEBHOOK_PIDS="$!"
  "$REPO_ROOT/.venv-local/bin/python" "$REPO_ROOT/tests/bats/webhook_server.py" "$dir/hang-port" "$dir/hang.jsonl" --hang 3>&- &
  WEBHOOK_PIDS="$WEBHOOK_PIDS $!"
  wait_for_file "$dir/port" 30
  wait_for_file "$dir/hang-port" 30
  TRAINKIT_NOTIFY_URL="http://127.0.0.1:$(cat "$dir/port")/$WEBHOOK_SECRET http://127.0.0.1:$(cat "$dir/hang-port")/$WEBHOOK_SECRET-hang"
  export TRAINKIT_NOTIFY_URL TRAINKIT_NOTIFY_TIMEOUT=2 WEBHOOK_RECORD WEBHOOK_SECRET
}

stop_webhooks() {
  # shellcheck disable=SC2086
  [[ -z "${WEBHOOK_PIDS:-}" ]] || kill $WEBHOOK_PIDS 2>/dev/null || true
}

# posted EVENT — the first body the answering webhook got for EVENT (one JSON line), once it came.
posted() {
  wait_until 30 grep -q "\"event\": \"$1\"" "$WEBHOOK_RECORD" &&
    grep "\"event\": \"$1\"" "$WEBHOOK_RECORD" | head -n 1
}

# assert_secret_hidden DIR... — the webhook's secret path is in no file under DIR and no process's argv.
assert_secret_hidden() {
  run grep -rl --exclude=posts.jsonl --exclude=hang.jsonl "$WEBHOOK_SECRET" "$@"
  assert_failure
  run bash -c "ps -eo args | grep -F '$WEBHOOK_SECRET' | grep -v grep"
  assert_failure
}
