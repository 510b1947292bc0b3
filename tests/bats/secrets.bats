#!/usr/bin/env bats
# Credentials stay secret: a real CPU launch through scripts/train.sh with fake values in every
# credential variable, scanned for those values in the process list, the log, the output dir,
# the tmux scrollback and the status report; the same for setup.sh. The values reach grep
# through a file (grep -f), never on its command line.

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  use_private_training_env secrets
  OUT="$BATS_TEST_TMPDIR/run"
  SESSION="bats-secrets-${BATS_TEST_NUMBER}"
  export TMPDIR="$BATS_TEST_TMPDIR/tmp"
  mkdir -p "$TMPDIR"
  local tag="$$-${BATS_TEST_NUMBER}"
  export WANDB_API_KEY="fake-wandb-key-$tag-0a1b2c3d" HF_TOKEN="hf_fakeHfToken${tag}x9y8"
  export HUGGING_FACE_HUB_TOKEN="hf_fakeHubToken${tag}q7r6" MY_SERVICE_TOKEN="fake-service-token-$tag-s5"
  export SOME_API_KEY="fake-some-api-key-$tag-t4" X_SECRET="fake-x-secret-$tag-u3" DB_PASSWORD="fake-db-password-$tag-v2"
  SECRETS="$BATS_TEST_TMPDIR/secret-values"
  printf '%s\n' "$WANDB_API_KEY" "$HF_TOKEN" "$HUGGING_FACE_HUB_TOKEN" "$MY_SERVICE_TOKEN" "$SOME_API_KEY" \
    "$X_SECRET" "$DB_PASSWORD" >"$SECRETS"
  cd "$REPO_ROOT"
}

teardown() {
  kill_private_tmux
  [[ -z "${STANDIN_PID:-}" ]] || kill "$STANDIN_PID" 2>/dev/null || true
}


# refute_secrets_in FILE... — none of the fake values in FILE (directories are searched whole).
refute_secrets_in() {
  run -1 grep -rlaF -D skip -f "$SECRETS" "$@"
}

# refute_secrets_anywhere — not in any process's arguments, the output dir, the logs, $TMPDIR or the pane's scrollback.
refute_secrets_anywhere() {
  ps -eo args >"$BATS_TEST_TMPDIR/ps.txt"
  run -1 grep -aF -f "$SECRETS" "$BATS_TEST_TMPDIR/ps.txt"
  refute_secrets_in "$OUT" "$TRAINKIT_LOG_DIR" "$TMPDIR"
  tmux -L "$TRAINKIT_TMUX_SOCKET" capture-pane -p -S - -t "$SESSION" >"$BATS_TEST_TMPDIR/scrollback.txt"
  [[ -s "$BATS_TEST_TMPDIR/scrollback.txt" ]]
  refute_secrets_in "$BATS_TEST_TMPDIR/scrollback.txt"
}

@test "a CPU launch with fake credentials leaves none in ps, the log, the output dir, the scrollback or the status report; a failing W&B costs a WARNING" {
  umask 022
  # W&B online with a key, but answering 500: the run logs offline and trains on, no relaunch.
  mkdir -p "$BATS_TEST_TMPDIR/wandb-standin"
  "$REPO_ROOT/.venv-local/bin/python" "$REPO_ROOT/tests/bats/webhook_server.py" "$BATS_TEST_TMPDIR/wandb-standin/port" \
    "$BATS_TEST_TMPDIR/wandb-standin/posts.jsonl" --status 500 3>&- &
  STANDIN_PID=$!
  wait_for_file "$BATS_TEST_TMPDIR/wandb-standin/port" 30
  unset WANDB_MODE
  export WANDB_BASE_URL="http://127.0.0.1:$(cat "$BATS_TEST_TMPDIR/wandb-standin/port")"
  TRAINKIT_FAULT_STEP_DELAY=0.5 TRAINKIT_TMUX_LINGER=120 \
    run -0 scripts/train.sh --platform cpu --output-dir "$OUT" --session "$SESSION" --no-wait -- --max_steps 8 --save_steps 4 \
    --wandb_timeout_seconds 5
  assert_line "⚠️ WARNING: W&B is not answering (127.0.0.1:${WANDB_BASE_URL##*:} answered HTTP 500): the run will log offline and can be synced later"
  refute_secrets_in <(printf '%s\n' "$output")
  wait_for_step 2
  refute_secrets_anywhere
  # The forwarded environment was read and deleted by the supervisor, directory and all.
  run -0 tmux -L "$TRAINKIT_TMUX_SOCKET" show-environment -t "$SESSION" TRAINKIT_ENV_FILE
  assert_output --regexp "^TRAINKIT_ENV_FILE=$TMPDIR/trainkit-env\.[^/]+/env$"
  assert_file_not_exists "${output#*=}"
  run -0 find "$TMPDIR" -name 'trainkit-env.*'
  assert_output ""

  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(head -n 1 "$OUT/.trainkit.exit")" 0
  assert_file_exists "$OUT/checkpoint-4/training_args.bin"
  assert_file_exists "$OUT/wandb_run.json"
  run -0 grep -F "⚠️ WARNING: W&B is not answering (127.0.0.1:${WANDB_BASE_URL##*:} answered HTTP 500): the run logs offline in $OUT/wandb/offline-run-" "$TRAINKIT_LOG_DIR/latest.log"
  run -1 grep -F "relaunching" "$TRAINKIT_LOG_DIR/latest.log"
  run -0 grep -F '"wandb_mode": "offline"' "$OUT/status.json"
  refute_secrets_anywhere
  run -0 scripts/check_training_status.sh --output-dir "$OUT" --session "$SESSION" --json
  refute_secrets_in <(printf '%s\n' "$output")
  run -0 scripts/check_training_status.sh --output-dir "$OUT" --session "$SESSION"
  refute_secrets_in <(printf '%s\n' "$output")
  # Run outputs keep the user's umask; only the forwarded environment was private.
  run -0 find "$OUT/status.json" "$OUT/final/trainer_state.json" "$OUT/checkpoint-4/training_args.bin" -perm -044
  assert_equal "${#lines[@]}" 3
}

@test "the forwarded environment file is 0600 in a 0700 directory; loading it exports every value and deletes both" {
  source scripts/lib/protocol.sh
  source scripts/lib/tmux.sh
  export TRAINKIT_ODD_VALUE=$'two\nlines = and spaces'
  umask 022
  file="$(tk_forwarded_env)"
  run -0 find "$file" -perm 600
  assert_output "$file"
  run -0 find "$(dirname "$file")" -maxdepth 0 -perm 700
  assert_output "$(dirname "$file")"
  expected="$WANDB_API_KEY|$HF_TOKEN|$HUGGING_FACE_HUB_TOKEN|$TRAINKIT_ODD_VALUE"
  run -0 env -u WANDB_API_KEY -u HF_TOKEN -u HUGGING_FACE_HUB_TOKEN -u TRAINKIT_ODD_VALUE bash -c \
    'source scripts/lib/protocol.sh && source scripts/lib/tmux.sh && tk_load_forwarded_env "$1" &&
     printf "%s|%s|%s|%s" "$WANDB_API_KEY" "$HF_TOKEN" "$HUGGING_FACE_HUB_TOKEN" "$TRAINKIT_ODD_VALUE"' _ "$file"
  assert_output "$expected"
  assert_file_not_exists "$file"
  assert_file_not_exists "$(dirname "$file")"
}

@test "a forwarded environment file that others can read is refused" {
  source scripts/lib/protocol.sh
  source scripts/lib/tmux.sh
  file="$(tk_forwarded_env)"
  chmod 644 "$file"
  run -1 bash -c 'source scripts/lib/protocol.sh && source scripts/lib/tmux.sh && tk_load_forwarded_env "$1"' _ "$file"
  assert_line --partial "❌ ERROR: the forwarded environment $file is missing or readable by others"
  refute_secrets_in <(printf '%s\n' "$output")
}

@test "setup.sh --platform cpu says where the credentials are, never their values, on screen or in its log" {
  [[ -x "$REPO_ROOT/.venv-local/bin/python" && -f "$REPO_ROOT/models/tiny-chat/config.json" ]] || skip "needs make setup"
  repo="$BATS_TEST_TMPDIR/repo"
  setup_repo_copy "$repo" "$BATS_TEST_TMPDIR/bin"
  mkdir -p "$repo/.venv-local"
  touch "$repo/.venv-local/.trainkit-deps"
  cp -Rp "$REPO_ROOT/models/tiny-chat" "$repo/models/tiny-chat"
  touch "$repo/models/tiny-chat/config.json"
  TRAINKIT_PYTHON="$REPO_ROOT/.venv-local/bin/python" run -0 "$repo/scripts/setup.sh" --platform cpu
  assert_line --partial "W&B API key found (WANDB_API_KEY)"
  assert_line --partial "Hugging Face token found (HF_TOKEN)"
  refute_secrets_in <(printf '%s\n' "$output")
  refute_secrets_in "$repo"
}
