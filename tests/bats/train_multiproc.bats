#!/usr/bin/env bats
# scripts/train.sh --nproc 2: two gloo processes under torchrun on CPU, inside the supervisor.

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  use_private_training_env multiproc
  OUT="$BATS_TEST_TMPDIR/run"
  SESSION="bats-multiproc-${BATS_TEST_NUMBER}"
  cd "$REPO_ROOT"
}

teardown() {
  kill_private_tmux
  local pid
  # Supervisors a test started outside tmux: stopped like Ctrl-C, if they still run.
  for pid in $(cat "$BATS_TEST_TMPDIR/supervisors" 2>/dev/null); do
    kill -TERM "$pid" 2>/dev/null || true
  done
}

# worker_of_rank R — the pid of the train.py process of rank R (from its environment).
worker_of_rank() {
  local pid
  for pid in $(pgrep -f "train.py --config configs/smoke.yaml --output_dir $OUT"); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "RANK=$1"; then
      printf '%s\n' "$pid"
      return 0
    fi
  done
  return 1
}

# free_port — a TCP port on localhost nobody listens on now, for a rendezvous.
free_port() {
  "$REPO_ROOT/.venv-local/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# launch_node RANK DIR [TRAIN_SH_ARGS...] [-- TRAIN_ARGS...] — train.sh as node RANK of 2 on localhost ($port).
launch_node() {
  local rank=$1 dir=$2
  shift 2
  scripts/train.sh --platform cpu --nproc 1 --nnodes 2 --node-rank "$rank" --rdzv-endpoint "127.0.0.1:$port" \
    --output-dir "$dir" --session "$SESSION-node$rank" "$@"
}

exit_code() { head -n 1 "$OUT/.trainkit.exit"; }

launch() {
  scripts/train.sh --platform cpu --nproc 2 --output-dir "$OUT" --session "$SESSION" "$@"
}

@test "--nproc 2: a rank killed outright relaunches the whole group, which resumes from its newest checkpoint and completes" {
  [[ -d /proc/self ]] || skip "finds the ranks through /proc"
  TRAINKIT_FAULT_STEP_DELAY=0.3 run -0 launch --no-wait -- --report_to none --max_steps 6 --save_steps 2
  log="$(launched_log "$output")"
  wait_until 240 test -f "$OUT/checkpoint-2/trainer_state.json"
  wait_until 60 at_step 3
  kill -KILL "$(worker_of_rank 1)"
  wait_until 300 test -f "$OUT/.trainkit.exit"
  assert_equal "$(exit_code)" 0
  run -0 grep -E "^\[TRAINING-CPU\] torchrun exited [0-9]+; its processes' verdict: 70$" "$log"
  run -0 grep -E '^\[TRAINING-CPU\] train.py exited 70; relaunching in 0s \(restart 1 of 10\)' "$log"
  run -0 grep -E '^⚠️ RESUME: Found checkpoint at step (2|4)\. Resuming training\.$' "$log"
  assert_file_exists "$OUT/final/adapter_model.safetensors"
  run -0 grep -F "effective batch: 4 per device x 2 processes x 1 accumulation = 8 sequences" "$log"
}

@test "--nproc 2: SIGTERM to the supervisor stops every rank with 75 after one checkpoint, no relaunch" {
  [[ -d /proc/self ]] || skip "finds the ranks through /proc"
  TRAINKIT_FAULT_STEP_DELAY=0.3 run -0 launch --no-wait -- --report_to none --max_steps 400 --save_steps 1000
  log="$(launched_log "$output")"
  wait_until 240 at_step 2
  kill -TERM "$(sed -n 's/^pid=//p' "$OUT/.trainkit.lock")"
  wait_until 120 test -f "$OUT/.trainkit.exit"
  assert_equal "$(exit_code)" 75
  run -0 grep -E "^\[TRAINING-CPU\] torchrun exited [0-9]+; its processes' verdict: 75$" "$log"
  run -1 grep -F "relaunching" "$log"
  run -0 find "$OUT" -maxdepth 1 -name 'checkpoint-*'
  assert_equal "${#lines[@]}" 1
  assert_file_exists "${lines[0]}/rng_state_1.pth"
}

@test "--nproc 2: a rank that crashes before its first step on every start ends in a crash loop, exit 2" {
  export TRAINKIT_FAULT_CRASH_AT_STEP=0 TRAINKIT_FAULT_RANK=1
  run -2 launch -- --report_to none --crash_loop_limit 1
  log="$(launched_log "$output")"
  assert_line --index "$((${#lines[@]} - 2))" --partial "❌ ERROR: crash loop"
  assert_equal "$(exit_code)" 2
  run -0 grep -E "^\[TRAINING-CPU\] torchrun exited [0-9]+; its processes' verdict: 70$" "$log"
  run -0 grep -E "^\[TRAINING-CPU\] torchrun exited [0-9]+; its processes' verdict: 2$" "$log"
  run -0 grep -c "relaunching" "$log"
  assert_output 1
  run -0 grep -F "❌ ERROR: Crash loop detected: resumed 1 times from the start" "$log"
}

@test "--nproc 2: an input error the trainer finds is exit 1 on every rank, without a relaunch" {
  run -1 launch -- --report_to none --padding_free true
  log="$(launched_log "$output")"
  assert_equal "$(exit_code)" 1
  run -0 grep -E "^\[TRAINING-CPU\] torchrun exited [0-9]+; its processes' verdict: 1$" "$log"
  run -1 grep -F "relaunching" "$log"
  run -0 grep -F "❌ ERROR: the trainer refused this configuration: ValueError: When" "$log"
}

@test "two nodes on localhost (static rendezvous): a trainer killed on node 1 relaunches both, node 0 resumes and completes" {
  [[ -d /proc/self ]] || skip "finds the ranks through /proc"
  local port node pid
  port="$(free_port)"
  export TRAINKIT_FAULT_STEP_DELAY=0.3 TRAINKIT_RDZV_ID="bats-$$"
  for node in 0 1; do
    scripts/supervise.sh --platform cpu --config configs/smoke.yaml --output-dir "$OUT$node" \
      --log "$BATS_TEST_TMPDIR/node$node.log" --nproc 1 --nnodes 2 --node-rank "$node" --rdzv-endpoint "127.0.0.1:$port" \
      -- --max_steps 6 --save_steps 2 --save_on_each_node true --report_to none >/dev/null 2>&1 3>&- &
    echo "$!" >>"$BATS_TEST_TMPDIR/supervisors"
  done
  wait_until 240 test -f "${OUT}1/checkpoint-2/trainer_state.json"
  for pid in $(pgrep -f "train.py --config configs/smoke.yaml --output_dir ${OUT}1"); do
    ! tr '\0' '\n' <"/proc/$pid/environ" | grep -qx "RANK=1" || kill -KILL "$pid"
  done
  wait_until 240 test -f "${OUT}0/.trainkit.exit" -a -f "${OUT}1/.trainkit.node1.exit"
  assert_equal "$(head -n 1 "${OUT}0/.trainkit.exit")" 0
  assert_equal "$(head -n 1 "${OUT}1/.trainkit.node1.exit")" 0
  run -0 grep -E "^\[TRAINING-CPU\] torchrun exited [0-9]+; its processes' verdict: 70$" "$BATS_TEST_TMPDIR/node1.log"
  run -0 grep -E '^⚠️ RESUME: Found checkpoint at step (2|4)\. Resuming training\.$' "$BATS_TEST_TMPDIR/node0.log"
  assert_file_exists "${OUT}0/final/adapter_model.safetensors"
  # status.json is node 0's to write: node 1's supervisor keeps to its own verdict file.
  assert_not_exists "${OUT}1/status.json"
  assert_not_exists "${OUT}1/.trainkit.lock"
  # save_on_each_node: node 1 holds its own copy of every checkpoint, to resume from.
  assert_equal "$(cd "${OUT}1" && ls -d checkpoint-*)" "$(cd "${OUT}0" && ls -d checkpoint-*)"
}

@test "train.sh refuses a node rank outside the node count before anything starts" {
  run -1 scripts/train.sh --platform cpu --nproc 1 --nnodes 2 --node-rank 2 --rdzv-endpoint 127.0.0.1:29500 --output-dir "$OUT"
  assert_line --index 0 "❌ ERROR: --node-rank 2 is not a node of --nnodes 2"
  assert_not_exists "$OUT"
}

@test "two nodes in output dirs of their own without save_on_each_node are refused at the start (exit 1), not after a crash" {
  local port
  port="$(free_port)"
  export TRAINKIT_RDZV_ID="bats-apart-$$"
  node() { launch_node "$1" "$OUT$1" -- --report_to none --max_steps 4; }
  run -0 node 1
  run -1 node 0
  # The run's own ERROR is the watch's verdict, though torchrun's report fills the log's tail.
  assert_line --index "$((${#lines[@]} - 2))" --partial "❌ ERROR: training failed before it started: the nodes train in output dirs of their own (ranks 1 do not see rank 0's), but save_on_each_node is off"
  assert_line --index "$((${#lines[@]} - 1))" --partial "--save_on_each_node true"
  wait_until 120 test -f "${OUT}1/.trainkit.node1.exit"
  assert_equal "$(head -n 1 "${OUT}0/.trainkit.exit")" 1
  assert_equal "$(head -n 1 "${OUT}1/.trainkit.node1.exit")" 1
  run -1 grep -F "relaunching" "$(ls -t "$TRAINKIT_LOG_DIR"/training_cpu_*.log | head -n 1)"
}

@test "train.sh on two nodes sharing one output dir: node 1 detaches at once, node 0 watches, each supervisor holds its own lock, a crash on node 1 resumes both from the shared checkpoint" {
  local port
  port="$(free_port)"
  export TRAINKIT_RDZV_ID="bats-shared-$$" TRAINKIT_FAULT_STEP_DELAY=0.2
  export TRAINKIT_FAULT_CRASH_AT_STEP=3 TRAINKIT_FAULT_RANK=1 TRAINKIT_FAULT_ONCE="$BATS_TEST_TMPDIR/crashed-once"
  node() { launch_node "$1" "$OUT" --watch-steps 2 -- --report_to none --max_steps 6 --save_steps 2; }
  run -0 node 1
  assert_line --index "$((${#lines[@]} - 1))" "✅ SUCCESS: node 1 of 2 launched in tmux session $SESSION-node1; node 0 reports the run's progress"
  run -0 node 0
  assert_output --partial "effective batch: 4 per device x 2 processes x 1 accumulation = 8 sequences"
  assert_line --index "$((${#lines[@]} - 1))" --regexp "^✅ SUCCESS: training (running|complete)"
  wait_until 300 test -f "$OUT/.trainkit.exit" -a -f "$OUT/.trainkit.node1.exit"
  assert_equal "$(head -n 1 "$OUT/.trainkit.exit")" 0
  assert_equal "$(head -n 1 "$OUT/.trainkit.node1.exit")" 0
  run -0 grep -hE '^⚠️ RESUME: Found checkpoint at step 2\. Resuming training\.$' "$TRAINKIT_LOG_DIR"/training_cpu_*.log
  run -0 grep -hF "relaunching" "$TRAINKIT_LOG_DIR"/training_cpu_*.log
  assert_equal "${#lines[@]}" 2  # each node's supervisor relaunched once
  assert_file_exists "$OUT/final/adapter_model.safetensors"
  assert_equal "$(sed -n 's/^  "state": "\(.*\)",$/\1/p' "$OUT/status.json")" completed
}
