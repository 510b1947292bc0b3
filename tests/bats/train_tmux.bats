#!/usr/bin/env bats
# scripts/train.sh with real tmux and real CPU training of the tiny model.

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  use_private_training_env bats
  OUT="$BATS_TEST_TMPDIR/run"
  SESSION="bats-train-${BATS_TEST_NUMBER}"
  cd "$REPO_ROOT"
}

teardown() {
  kill_private_tmux
}

# wait_for_file PATH [SECONDS] — poll until PATH exists.
wait_for_file() {
  local i
  for ((i = 0; i < ${2:-240} * 2; i++)); do
    [[ -e "$1" ]] && return 0
    sleep 0.5
  done
  echo "timed out waiting for $1" >&2
  return 1
}

# wait_for_step N — poll status.json until the run reaches step N.
wait_for_step() {
  local i step
  for ((i = 0; i < 480; i++)); do
    step="$(sed -n 's/^  "step": \([0-9]*\),$/\1/p' "$OUT/status.json" 2>/dev/null || true)"
    [[ -n "$step" ]] && ((step >= $1)) && return 0
    sleep 0.5
  done
  echo "timed out waiting for step $1" >&2
  return 1
}

# assert_stopped_with_checkpoint SIGNAL — the supervisor ended with 75 after train.py saved a checkpoint on SIGNAL.
assert_stopped_with_checkpoint() {
  local step
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(cat "$OUT/.trainkit.exit")" 75
  run -0 grep -E "^❌ ERROR: interrupted by $1: checkpoint saved at step [0-9]+$" logs/latest.log
  step="$(sed -n 's/.*checkpoint saved at step \([0-9]*\)$/\1/p' logs/latest.log | tail -n 1)"
  assert_file_exists "$OUT/checkpoint-$step/trainer_state.json"
}

launch() {
  scripts/train.sh --platform cpu --output-dir "$OUT" --session "$SESSION" "$@"
}

@test "a CPU launch runs in tmux, detaches after the watched steps and finishes there" {
  run -0 launch --watch-steps 3 -- --report_to none
  assert_line --partial "[TRAINING-CPU] reconnect: tmux attach -t $SESSION"
  assert_line --regexp '^✅ SUCCESS: training (running in tmux session|completed during the watch)'
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(cat "$OUT/.trainkit.exit")" 0
  assert_file_exists "$OUT/final/adapter_model.safetensors"
  assert_file_not_exists "$OUT/.trainkit.lock"
  run -1 grep -q $'\e' logs/latest.log
  run -0 grep -F "✅ SUCCESS: training complete: adapter saved to $OUT/final" logs/latest.log
}

@test "a second launch on a live run is refused with the session to attach to" {
  TRAINKIT_FAULT_STEP_DELAY=0.5 run -0 launch --no-wait -- --report_to none --max_steps 400
  wait_for_step 1
  run -1 launch --no-wait -- --report_to none
  assert_line --index "$((${#lines[@]} - 2))" --partial "❌ ERROR: a trainer is already running on $OUT (tmux session $SESSION"
  assert_line --index "$((${#lines[@]} - 1))" --partial "tmux attach -t $SESSION"
}

@test "a stale lock from a dead run is cleared and the launch goes ahead" {
  mkdir -p "$OUT"
  printf 'pid=999999\nsession=gone\nlog=x\n' >"$OUT/.trainkit.lock"
  run -0 launch --no-wait -- --report_to none --max_steps 2
  assert_line --partial "⚠️ WARNING: removing a stale lock"
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(cat "$OUT/.trainkit.exit")" 0
}

@test "the supervisor resumes train.py after a crash and the run still completes" {
  TRAINKIT_FAULT_CRASH_AT_STEP=12 TRAINKIT_FAULT_ONCE="$BATS_TEST_TMPDIR/crashed-once" \
    run -0 launch --no-wait -- --report_to none
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(cat "$OUT/.trainkit.exit")" 0
  run -0 grep -E '^\[TRAINING-CPU\] train.py exited 70; relaunching in 0s \(restart 1 of 10\)' logs/latest.log
  run -0 grep -F "⚠️ RESUME: Found checkpoint at step 10. Resuming training." logs/latest.log
  assert_file_exists "$OUT/final/adapter_model.safetensors"
}

@test "a crash loop ends the watch with exit 2 and the tmux session gone" {
  TRAINKIT_FAULT_CRASH_AT_STEP=1 run -2 launch -- --report_to none
  assert_line --index "$((${#lines[@]} - 2))" --partial "❌ ERROR: crash loop"
  run -0 grep -F "❌ ERROR: Crash loop detected: resumed 3 times from the start" logs/latest.log
  sleep 1
  run -1 tmux -L "$TRAINKIT_TMUX_SOCKET" has-session -t "$SESSION"
}

@test "SIGTERM to the trainer saves a checkpoint and the supervisor stops with 75" {
  TRAINKIT_FAULT_STEP_DELAY=0.3 run -0 launch --no-wait -- --report_to none --max_steps 400
  wait_for_step 3
  pkill -TERM -f "train.py --config configs/smoke.yaml --output_dir $OUT"
  assert_stopped_with_checkpoint SIGTERM
}

@test "train.sh --help prints its Usage header" {
  run -0 scripts/train.sh --help
  assert_line --index 0 --partial "Usage: scripts/train.sh --platform {h100,m4,cpu}"
  run -0 scripts/train_h100_runpod.sh --help
  assert_line --index 0 --partial "Usage: scripts/train_h100_runpod.sh"
}

@test "an unknown platform is refused before anything starts" {
  run -1 scripts/train.sh --platform tpu
  assert_output --partial "❌ ERROR: --platform must be h100, m4 or cpu"
}

@test "a trainer killed outright (SIGKILL) is relaunched by the supervisor and resumes from its newest checkpoint" {
  TRAINKIT_FAULT_STEP_DELAY=0.3 run -0 launch --no-wait -- --report_to none --max_steps 16 --save_steps 4
  wait_for_file "$OUT/checkpoint-4/trainer_state.json"
  wait_for_step 6
  pkill -KILL -f "train.py --config configs/smoke.yaml --output_dir $OUT"
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(cat "$OUT/.trainkit.exit")" 0
  run -0 grep -E '^\[TRAINING-CPU\] train.py exited 137; relaunching in 0s \(restart 1 of 10\)' logs/latest.log
  run -0 grep -E '^⚠️ RESUME: Found checkpoint at step (4|8)\. Resuming training\.$' logs/latest.log
  assert_file_exists "$OUT/final/adapter_model.safetensors"
}

@test "Ctrl-C typed into the tmux pane saves a checkpoint and the supervisor stops with 75" {
  TRAINKIT_FAULT_STEP_DELAY=0.3 run -0 launch --no-wait -- --report_to none --max_steps 400
  wait_for_step 3
  tmux -L "$TRAINKIT_TMUX_SOCKET" send-keys -t "$SESSION" C-c
  assert_stopped_with_checkpoint SIGINT
  run -1 grep -E "BrokenPipeError|Traceback" logs/latest.log
  run -0 grep -F "[TRAINING-CPU] supervisor exited 75" logs/latest.log
}
