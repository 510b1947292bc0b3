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
  stop_webhooks
}

# exit_code — the supervisor's final code (the first line of OUT/.trainkit.exit).
exit_code() { head -n 1 "$OUT/.trainkit.exit"; }

# lock_held — succeed while a live process holds OUT's lock.
lock_held() {
  PYTHONPATH="$REPO_ROOT" "$REPO_ROOT/.venv-local/bin/python" -m trainkit.supervise.runctl lock-info --output-dir "$OUT" pid --live >/dev/null
}

# supervisor_pid — the pid the lock names (the supervisor's, once it runs).
supervisor_pid() { sed -n 's/^pid=//p' "$OUT/.trainkit.lock"; }

# status_of — run the status command on OUT (sets $status and $output through bats' run).
status_of() {
  run scripts/check_training_status.sh --output-dir "$OUT" --session "$SESSION" --lines 0
}

# assert_stopped_with_checkpoint SIGNAL — the supervisor ended with 75 after train.py saved a checkpoint on SIGNAL.
assert_stopped_with_checkpoint() {
  local step
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(exit_code)" 75
  run -0 grep -E "^❌ ERROR: interrupted by $1: checkpoint saved at step [0-9]+$" "$TRAINKIT_LOG_DIR/latest.log"
  step="$(sed -n 's/.*checkpoint saved at step \([0-9]*\)$/\1/p' "$TRAINKIT_LOG_DIR/latest.log" | tail -n 1)"
  assert_file_exists "$OUT/checkpoint-$step/trainer_state.json"
}

launch() {
  scripts/train.sh --platform cpu --output-dir "$OUT" --session "$SESSION" "$@"
}

@test "a CPU launch runs in tmux, detaches after the watched steps and finishes there, and posts started and completed" {
  start_webhooks
  run -0 launch --watch-steps 3 -- --report_to none
  assert_line --partial "[TRAINING-CPU] reconnect: tmux attach -t $SESSION"
  assert_line --regexp '^✅ SUCCESS: training (running in tmux session|completed during the watch)'
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(exit_code)" 0
  assert_file_exists "$OUT/final/adapter_model.safetensors"
  run -1 lock_held
  run -1 grep -q $'\e' "$TRAINKIT_LOG_DIR/latest.log"
  run -0 grep -F "✅ SUCCESS: training complete: adapter saved to $OUT/final" "$TRAINKIT_LOG_DIR/latest.log"
  # Notifications: what the webhook got, and a webhook that never answers neither slowed nor held the run.
  run -0 posted completed
  assert_output --partial '"step": 20, "max_steps": 20, "exit_code": 0'
  assert_output --partial "\"message\": \"training complete: adapter saved to $OUT/final\""
  run -0 posted started
  run -0 grep -c '"event": "completed"' "$WEBHOOK_RECORD"
  assert_output 1
  wait_until 30 grep -qE '"sent": "completed", "url": "[^"]*", "ok": false' "$OUT/events.jsonl"
  assert_secret_hidden "$OUT" "$TRAINKIT_LOG_DIR"
}

@test "backend mlx runs the same launch: preflight, tmux, supervisor, checkpoints, a PEFT adapter, exit 0" {
  run -0 launch --watch-steps 2 -- --report_to none --backend mlx --max_steps 4 --save_steps 2 --per_device_train_batch_size 2
  assert_line --partial "[PREFLIGHT] backend: mlx"
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(exit_code)" 0
  assert_file_exists "$OUT/checkpoint-4/mlx_state.json"
  assert_file_exists "$OUT/final/adapter_model.safetensors"
  assert_file_exists "$OUT/final/mlx/adapters.safetensors"
  run -0 grep -F "✅ SUCCESS: training complete: adapter saved to $OUT/final" "$TRAINKIT_LOG_DIR/latest.log"
  run -0 grep -F "(float32, mlx)" "$TRAINKIT_LOG_DIR/latest.log"
}

@test "a second launch or a second train.py on a live run is refused with the owner to attach to" {
  TRAINKIT_FAULT_STEP_DELAY=0.5 run -0 launch --no-wait -- --report_to none --max_steps 400
  wait_for_step 1
  run -1 launch --no-wait -- --report_to none
  assert_line --index "$((${#lines[@]} - 2))" --partial "❌ ERROR: a trainer is already running on $OUT (tmux session $SESSION"
  assert_line --index "$((${#lines[@]} - 1))" --partial "tmux attach -t $SESSION"
  # --output_dir after -- is the directory that gets locked.
  run -1 scripts/train.sh --platform cpu --session "other-$SESSION" --no-wait -- --output_dir "$OUT"
  assert_line --partial "❌ ERROR: a trainer is already running on $OUT (tmux session $SESSION"
  # A trainer started by hand is refused by train.py itself, and leaves status.json alone.
  owner_pid="$(sed -n 's/^  "pid": \([0-9]*\),$/\1/p' "$OUT/status.json")"
  run -1 .venv-local/bin/python train.py --config configs/smoke.yaml --output_dir "$OUT" --report_to none
  assert_line --regexp "^❌ ERROR: a trainer is already running on $OUT \(tmux session $SESSION, pid [0-9]+, log .*\)$"
  assert_line --partial "  ↳ watch it with: tmux attach -t $SESSION"
  assert_equal "$(sed -n 's/^  "pid": \([0-9]*\),$/\1/p' "$OUT/status.json")" "$owner_pid"
}

@test "two launches racing for one output dir under different sessions: exactly one trains" {
  launch_as() {
    local code=0
    # Long enough that the winner still trains when the loser reaches the lock, however loaded the machine.
    TRAINKIT_FAULT_STEP_DELAY=0.5 scripts/train.sh --platform cpu --output-dir "$OUT" --session "$1" --no-wait -- \
      --report_to none --max_steps 400 --save_steps 1000 >"$BATS_TEST_TMPDIR/$1.out" 2>&1 || code=$?
    echo "$code" >"$BATS_TEST_TMPDIR/$1.code"
  }
  launch_as "a-$SESSION" &
  launch_as "b-$SESSION" &
  wait
  codes="$(cat "$BATS_TEST_TMPDIR/a-$SESSION.code" "$BATS_TEST_TMPDIR/b-$SESSION.code" | sort | tr '\n' ' ')"
  assert_equal "$codes" "0 1 "
  run -0 grep -h "❌ ERROR: a trainer is already running on $OUT" "$BATS_TEST_TMPDIR"/*.out
  kill -TERM "$(sed -n 's/^pid=//p' "$OUT/.trainkit.lock")"
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(exit_code)" 75
}

@test "the launch watch reports only this launch's progress, and a finished run's relaunch says already complete" {
  mkdir -p "$OUT"
  # An older run's status.json: running at step 500, its trainer long gone.
  true &
  dead=$!
  wait "$dead"
  printf '{"schema_version": 1, "state": "running", "step": 500, "max_steps": 1000, "pid": %s}\n' "$dead" >"$OUT/status.json"
  run -0 launch --watch-steps 2 -- --report_to none --max_steps 4
  refute_output --partial "step 500"
  assert_line --regexp '^✅ SUCCESS: training (running in tmux session .* \(step [234], watched 2 steps\)|completed during the watch)'
  wait_for_file "$OUT/.trainkit.exit"
  kill_private_tmux
  run -0 launch --watch-steps 2 -- --report_to none --max_steps 4
  assert_equal "${lines[-1]}" "✅ SUCCESS: training already complete: step 4, adapter in $OUT/final"
}

@test "a run whose supervisor and trainer are killed outright is dead at once, not running" {
  TRAINKIT_FAULT_STEP_DELAY=0.3 run -0 launch --no-wait -- --report_to none --max_steps 400
  wait_for_step 2
  kill -KILL "$(supervisor_pid)"
  pkill -KILL -f "train.py --config configs/smoke.yaml --output_dir $OUT"
  sleep 0.5
  status_of
  assert_equal "$status" 75
  assert_line "[STATUS] state: dead (status.json says running)"
  run -1 lock_held
}

@test "a lock file left by a dead run does not block the next launch: only a live holder counts" {
  mkdir -p "$OUT"
  printf 'pid=%s\nsession=gone\nlog=x\n' "$$" >"$OUT/.trainkit.lock"
  run -0 launch --no-wait -- --report_to none --max_steps 2
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(exit_code)" 0
}

@test "the supervisor resumes train.py after a crash, the run still completes and resume_count says it resumed" {
  TRAINKIT_FAULT_CRASH_AT_STEP=12 TRAINKIT_FAULT_ONCE="$BATS_TEST_TMPDIR/crashed-once" \
    run -0 launch --no-wait -- --report_to none
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(exit_code)" 0
  run -0 grep -E '^\[TRAINING-CPU\] train.py exited 70; relaunching in 0s \(restart 1 of 10\)' "$TRAINKIT_LOG_DIR/latest.log"
  run -0 grep -F "⚠️ RESUME: Found checkpoint at step 10. Resuming training." "$TRAINKIT_LOG_DIR/latest.log"
  assert_file_exists "$OUT/final/adapter_model.safetensors"
  # One resume, though it resumed from a later step than the start (the crash-loop count is 0).
  assert_equal "$(sed -n 's/^  "resume_count": \([0-9]*\),$/\1/p' "$OUT/status.json")" 1
}

@test "a crash loop ends the watch with exit 2 and the tmux session gone, and posts crash_loop" {
  start_webhooks
  TRAINKIT_FAULT_CRASH_AT_STEP=1 run -2 launch -- --report_to none --crash_loop_limit 1
  assert_line --index "$((${#lines[@]} - 2))" --partial "❌ ERROR: crash loop"
  run -0 grep -F "❌ ERROR: Crash loop detected: resumed 1 times from the start" "$TRAINKIT_LOG_DIR/latest.log"
  sleep 1
  run -1 tmux -L "$TRAINKIT_TMUX_SOCKET" has-session -t "$SESSION"
  run -0 posted crash_loop
  assert_output --partial '"exit_code": 2'
  run -0 posted restarting
  assert_output --partial "train.py exited 70; the supervisor relaunches it"
  assert_secret_hidden "$OUT" "$TRAINKIT_LOG_DIR"
}

@test "SIGTERM to the trainer saves a checkpoint and the supervisor stops with 75, and posts interrupted" {
  start_webhooks
  TRAINKIT_FAULT_STEP_DELAY=0.3 run -0 launch --no-wait -- --report_to none --max_steps 400
  wait_for_step 3
  assert_secret_hidden "$OUT" "$TRAINKIT_LOG_DIR"
  pkill -TERM -f "train.py --config configs/smoke.yaml --output_dir $OUT"
  assert_stopped_with_checkpoint SIGTERM
  run -0 posted interrupted
  assert_output --partial '"exit_code": 75'
  assert_output --partial '"state": "interrupted"'
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
  assert_equal "$(exit_code)" 0
  run -0 grep -E '^\[TRAINING-CPU\] train.py exited 137; relaunching in 0s \(restart 1 of 10\)' "$TRAINKIT_LOG_DIR/latest.log"
  run -0 grep -E '^⚠️ RESUME: Found checkpoint at step (4|8)\. Resuming training\.$' "$TRAINKIT_LOG_DIR/latest.log"
  assert_file_exists "$OUT/final/adapter_model.safetensors"
}

@test "Ctrl-C typed into the tmux pane saves a checkpoint and the supervisor stops with 75" {
  TRAINKIT_FAULT_STEP_DELAY=0.3 run -0 launch --no-wait -- --report_to none --max_steps 400
  wait_for_step 3
  tmux -L "$TRAINKIT_TMUX_SOCKET" send-keys -t "$SESSION" C-c
  assert_stopped_with_checkpoint SIGINT
  run -1 grep -E "BrokenPipeError|Traceback" "$TRAINKIT_LOG_DIR/latest.log"
  run -0 grep -F "[TRAINING-CPU] supervisor exited 75" "$TRAINKIT_LOG_DIR/latest.log"
}

@test "a hung trainer is reported stalled, and the supervisor kills it and relaunches it as a crash, and posts stalled" {
  start_webhooks
  TRAINKIT_FAULT_HANG_AT_STEP=2 TRAINKIT_FAULT_ONCE="$BATS_TEST_TMPDIR/hung-once" TRAINKIT_STALL_POLL_SECONDS=8 \
    TRAINKIT_STALL_KILL_GRACE_SECONDS=1 run -0 launch --no-wait -- --report_to none --max_steps 4 --stall_timeout_seconds 3
  wait_for_file "$BATS_TEST_TMPDIR/hung-once"
  for _ in $(seq 1 40); do
    status_of
    [[ "$status" != 4 ]] || break
    sleep 0.5
  done
  assert_equal "$status" 4
  assert_line "[STATUS] state: stalled (status.json says running)"
  assert_line --regexp "^❌ ERROR: training stalled at step 2/4: trainer pid [0-9]+ is alive but made no step for [0-9]+ s$"
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(exit_code)" 0
  run -0 grep -E "^⚠️ WARNING: train.py \(pid [0-9]+\) is stalled: no step for [0-9]+s; stopping it to relaunch$" "$TRAINKIT_LOG_DIR/latest.log"
  run -0 grep -E '^\[TRAINING-CPU\] train.py exited 137; relaunching in 0s \(restart 1 of 10\)' "$TRAINKIT_LOG_DIR/latest.log"
  assert_file_exists "$OUT/final/adapter_model.safetensors"
  run -0 posted stalled
  assert_output --regexp '"message": "train.py made no step for [0-9]+ s; the supervisor stops it and relaunches it'
}

@test "during the backoff the run is restarting, and SIGTERM then ends it with 75: no relaunch, lock released" {
  TRAINKIT_BACKOFF_SECONDS=120 TRAINKIT_FAULT_CRASH_AT_STEP=1 run -0 launch --no-wait -- --report_to none
  for _ in $(seq 1 240); do
    grep -q "relaunching in 120s" "$TRAINKIT_LOG_DIR/latest.log" 2>/dev/null && break
    sleep 0.5
  done
  status_of
  assert_equal "$status" 0
  assert_line --regexp '^\[STATUS\] state: restarting \(attempt 2, relaunch in [0-9]+ s\)$'
  started=$SECONDS
  kill -TERM "$(supervisor_pid)"
  wait_for_file "$OUT/.trainkit.exit" 20
  ((SECONDS - started < 20))
  assert_equal "$(exit_code)" 75
  run -1 lock_held
  assert_equal "$(grep -c '^\[TRAINING-CPU\] trainkit ' "$TRAINKIT_LOG_DIR/latest.log")" 1
  status_of
  assert_equal "$status" 75
  assert_line --partial "interrupted by SIGTERM while waiting to relaunch train.py"
}

@test "tmux kill-session stops the run like Ctrl-C: checkpoint, exit 75, lock released" {
  TRAINKIT_FAULT_STEP_DELAY=0.3 run -0 launch --no-wait -- --report_to none --max_steps 400
  wait_for_step 3
  tmux -L "$TRAINKIT_TMUX_SOCKET" kill-session -t "$SESSION"
  assert_stopped_with_checkpoint SIGHUP
  for _ in $(seq 1 20); do lock_held || break; sleep 0.5; done
  run -1 lock_held
  run -1 pgrep -f "train.py --config configs/smoke.yaml --output_dir $OUT"
}

@test "the restart budget counts failures in a row without progress: a crash after progress starts it again" {
  # Each attempt gets one step past its checkpoint, then crashes: progress every time, so a
  # budget of one restart is never spent; train.py's crash-loop guard ends it (exit 2).
  TRAINKIT_MAX_RESTARTS=1 TRAINKIT_FAULT_CRASH_AT_STEP=3 \
    run -0 launch --no-wait -- --report_to none --max_steps 6 --save_steps 2 --crash_loop_limit 1
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(exit_code)" 2
  assert_equal "$(grep -c 'relaunching in 0s (restart 1 of 1)' "$TRAINKIT_LOG_DIR/latest.log")" 2
  run -1 grep -F "the supervisor gives up" "$TRAINKIT_LOG_DIR/latest.log"
}

@test "a full disk at a save ends the launch with exit 1 and no relaunch, status says why, and the relaunch resumes; an OOM step names its lever" {
  # The disk fills at the save of checkpoint-6, and status.json's writes fail from step 5 on, as they would.
  TRAINKIT_FAULT_ENOSPC_AT_SAVE=6 TRAINKIT_FAULT_STATUS_WRITE_ERROR=from_step:5 \
    run -1 launch -- --report_to none --save_steps 3 --max_steps 9
  assert_line --index "$((${#lines[@]} - 2))" --regexp "^❌ ERROR: training stopped at step [0-9]+: the disk is full: writing $OUT/checkpoint-6/"
  assert_output --partial "the newest complete checkpoint, checkpoint-3, is untouched"
  assert_equal "$(exit_code)" 1
  log="$(launched_log "$output")"
  run -1 grep -F "relaunching" "$log"
  run -1 grep -F "Traceback" "$log"
  assert_file_not_exists "$OUT/checkpoint-6"
  assert_file_exists "$OUT/checkpoint-3/trainer_state.json"
  status_of
  assert_equal "$status" 1
  assert_line "[STATUS] state: failed (status.json says running)"
  assert_line --regexp "^❌ ERROR: training stopped at step [0-9]+/9: the disk is full: writing $OUT/checkpoint-6/"

  # Space back: the same launch resumes from checkpoint-3, and then runs out of memory at step 5.
  TRAINKIT_FAULT_OOM_AT_STEP=5 run -1 launch -- --report_to none --save_steps 3 --max_steps 9
  assert_line --index "$((${#lines[@]} - 2))" --regexp "^❌ ERROR: training stopped at step 4: out of memory on cpu at step 5: a micro-batch of [0-9]+ x [0-9]+ \(rows x tokens\) did not fit"
  assert_line --index "$((${#lines[@]} - 1))" --partial "per_device_train_batch_size: 2, gradient_accumulation_steps: 2"
  assert_equal "$(exit_code)" 1
  log="$(launched_log "$output")"
  run -0 grep -F "Found checkpoint at step 3" "$log"
  run -1 grep -F "relaunching" "$log"
}

@test "a config edited while the run trains: the supervisor's relaunch trains the launched one, and the user's re-run is refused with the command that resumes it" {
  config="$BATS_TEST_TMPDIR/mine.yaml"
  cp configs/smoke.yaml "$config"
  TRAINKIT_FAULT_CRASH_AT_STEP=6 TRAINKIT_FAULT_ONCE="$BATS_TEST_TMPDIR/crashed" TRAINKIT_FAULT_STEP_DELAY=0.15 \
    run -0 launch --config "$config" --no-wait -- --report_to none --max_steps 8 --save_steps 3
  wait_for_step 1
  sed -i.bak 's/^learning_rate: .*/learning_rate: 5.0e-4/' "$config"
  wait_for_file "$OUT/.trainkit.exit"
  assert_equal "$(exit_code)" 0
  log="$TRAINKIT_LOG_DIR/latest.log"
  run -0 grep -F "[TRAINING-CPU] this attempt reads the config as launched: $OUT/launch_config.yaml" "$log"
  run -0 grep -F "Found checkpoint at step 3" "$log"
  run -0 grep -F "learning_rate: 1.0e-3" "$OUT/launch_config.yaml"
  assert_file_exists "$OUT/final/adapter_model.safetensors"

  run -1 launch --config "$config" -- --report_to none --max_steps 8 --save_steps 3
  assert_line --index "$((${#lines[@]} - 2))" --partial "holds a run launched with another config ($config changed since, or a different one): learning_rate: 0.001 -> 0.0005"
  assert_line --index "$((${#lines[@]} - 1))" --partial "resume the run as it was launched: scripts/train.sh --platform cpu --config $OUT/launch_config.yaml -- --output_dir $OUT --report_to none --max_steps 8 --save_steps 3; or train the edited config into a new output_dir"
  status_of
  assert_line "[STATUS] config: $config (changed since launch); relaunches read $OUT/launch_config.yaml"
}

@test "a trainer deaf to a stop is SIGKILLed by the supervisor after stop_grace_seconds: verdict 75, the stop forced, the lock free" {
  TRAINKIT_FAULT_IGNORE_STOP=1 TRAINKIT_FAULT_STEP_DELAY=0.3 \
    run -0 launch --no-wait -- --report_to none --max_steps 400 --stop_grace_seconds 2
  wait_for_step 2
  kill -TERM "$(supervisor_pid)"
  wait_for_file "$OUT/.trainkit.exit" 30
  assert_equal "$(exit_code)" 75
  run -0 grep -F "❌ ERROR: the stop was forced: train.py did not exit within 2s of SIGTERM and was killed (SIGKILL)" "$TRAINKIT_LOG_DIR/latest.log"
  run -1 grep -F "relaunching" "$TRAINKIT_LOG_DIR/latest.log"
  run -1 lock_held
  status_of
  assert_equal "$status" 75
}
