#!/usr/bin/env bats
# `make demo` in a fresh copy of the repo (the files git would commit, nothing built): setup,
# preflight, the tmux launch, real CPU training, checkpoints and the final status. The copy
# borrows this checkout's .venv-local/ so the test does not reinstall torch; it builds its
# own tiny model.

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  [[ -x "$REPO_ROOT/.venv-local/bin/python" ]] || skip "needs make setup"
  command -v git >/dev/null || skip "needs git to list the repo's files"
  use_private_training_env demo
  unset TRAINKIT_LOG_DIR # the copy's own logs/, as make demo writes them
  COPY="$BATS_TEST_TMPDIR/repo"
  mkdir -p "$COPY"
  (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -xf - -C "$COPY"
  ln -s "$REPO_ROOT/.venv-local" "$COPY/.venv-local"
}

teardown() {
  kill_private_tmux
}

@test "make demo in a fresh copy runs setup, the tmux launch, training and ends on a completed status" {
  assert_file_not_exists "$COPY/models/tiny-chat/config.json"
  mkdir -p "$COPY/outputs/smoke/checkpoint-500"
  echo "a user's own run" >"$COPY/outputs/smoke/checkpoint-500/adapter_model.safetensors"
  run -0 make -s -C "$COPY" demo DEMO_SESSION=demo-bats
  # setup.sh checked the config a moment before: the launch recalls that pass in one line.
  assert_equal "$(grep -c '^\[PREFLIGHT\] unchanged since this check passed' <<<"$output")" 1
  assert_equal "$(grep -c '^\[PREFLIGHT\] loss mask:' <<<"$output")" 1
  assert_line --regexp "^⚠️ WARNING: outputs/smoke holds a run make demo did not make \(or one trained further\): kept it as outputs/smoke\.kept-[0-9_]+$"
  assert_file_exists "$COPY"/outputs/smoke.kept-*/checkpoint-500/adapter_model.safetensors
  assert_line "✅ SUCCESS: cpu setup complete"
  refute_output --partial "below the recommended"
  assert_line --partial "[TRAINING-CPU] launched in tmux session demo-bats; log: $COPY/logs/training_cpu_"
  assert_line --regexp '^✅ SUCCESS: training (running in tmux session demo-bats|completed during the watch)'
  assert_line "[TRAINING-CPU] W&B: offline run in $COPY/outputs/smoke/wandb (wandb sync it later)"
  assert_line "[STATUS] state: completed"
  assert_line "[STATUS] step: 20/20 (100.0%)"
  assert_equal "${lines[-1]}" "✅ SUCCESS: training completed: step 20/20: adapter saved to $COPY/outputs/smoke/final"
  assert_file_exists "$COPY/models/tiny-chat/config.json"
  assert_file_exists "$COPY/outputs/smoke/checkpoint-20/trainer_state.json"
  assert_file_exists "$COPY/outputs/smoke/final/adapter_model.safetensors"
  run -1 grep -q $'\e' "$COPY"/logs/training_cpu_*.log
  run -1 grep -q "is_gradient_checkpointing" "$COPY"/logs/training_cpu_*.log
  # The next demo removes the demo's own completed run, and only that.
  cd "$COPY"
  run -0 .venv-local/bin/python -m trainkit.supervise.demo prepare outputs/smoke
  assert_output "[DEMO] removed the previous demo run in outputs/smoke"
  assert_file_exists "$COPY"/outputs/smoke.kept-*/checkpoint-500/adapter_model.safetensors
}
