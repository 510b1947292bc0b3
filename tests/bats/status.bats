#!/usr/bin/env bats
# scripts/check_training_status.sh: what it reports about a run and the exit code that mirrors its state.
# Each test works in a copy of scripts/ under $BATS_TEST_TMPDIR, so logs/ and outputs/ are its own;
# tmux and nvidia-smi are PATH stubs.

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  # Physical path: the script resolves directories with pwd -P (macOS's /var is /private/var).
  TMPD="$(cd "$BATS_TEST_TMPDIR" && pwd -P)"
  ROOT="$TMPD/repo"
  mkdir -p "$ROOT/logs" "$ROOT/outputs"
  cp -R "$REPO_ROOT/scripts" "$ROOT/scripts"
  ln -s "$REPO_ROOT/trainkit" "$ROOT/trainkit"
  CHECK="$ROOT/scripts/check_training_status.sh"
  RUN_DIR="$ROOT/outputs/smoke"
  mkdir -p "$RUN_DIR"
  # The copied repo has no .venv-local/: use the real one (stdlib only is needed).
  if [[ -z "${TRAINKIT_PYTHON:-}" && -x "$REPO_ROOT/.venv-local/bin/python" ]]; then
    export TRAINKIT_PYTHON="$REPO_ROOT/.venv-local/bin/python"
  fi
  STUBS="$TMPD/bin"
  mkdir -p "$STUBS"
  PATH="$STUBS:$PATH"
  unset TRAINKIT_SESSION TRAINKIT_TMUX_SOCKET TRAINKIT_STALE_SECONDS WANDB_API_KEY TMUX_STUB_SESSIONS NO_COLOR
  export HOME="$TMPD/home"
  mkdir -p "$HOME"
  stub_tmux
  # A pid that is certainly not running: a child that has been reaped.
  true &
  DEAD_PID=$!
  wait "$DEAD_PID"
}

teardown() {
  [[ -z "${HOLDER:-}" ]] || kill "$HOLDER" 2>/dev/null || true
}

# hold_lock PID SESSION [LOG] [SECONDS] — a live process holds RUN_DIR's lock (flock) for SECONDS
# (default 600), its file naming supervisor PID, SESSION and LOG; $HOLDER is the holder's pid.
hold_lock() {
  local lock="$RUN_DIR/.trainkit.lock"
  printf 'pid=%s\nsession=%s\nlog=%s\nrole=supervisor\n' "$1" "$2" "${3:-}" >"$lock"
  rm -f "$TMPD/held"
  "${TRAINKIT_PYTHON:-python3}" -c 'import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
open(sys.argv[2], "w").close()
time.sleep(float(sys.argv[3]))' "$lock" "$TMPD/held" "${4:-600}" &
  HOLDER=$!
  while [[ ! -e "$TMPD/held" ]]; do sleep 0.05; done
}

# stub_tmux — a tmux whose has-session succeeds only for the names in $TMUX_STUB_SESSIONS.
stub_tmux() {
  cat >"$STUBS/tmux" <<'EOF'
#!/usr/bin/env bash
[[ " $* " == *" has-session "* ]] || exit 1
for arg; do name="$arg"; done
name="${name#=}"
[[ " ${TMUX_STUB_SESSIONS:-} " == *" $name "* ]]
EOF
  chmod +x "$STUBS/tmux"
}

# stub_nvidia_smi [CSV] — an nvidia-smi printing CSV (one GPU at 87%); "fail" makes it exit 9.
stub_nvidia_smi() {
  if [[ "${1:-}" == fail ]]; then
    printf '#!/bin/sh\necho "NVIDIA-SMI has failed" >&2\nexit 9\n' >"$STUBS/nvidia-smi"
  else
    printf '#!/bin/sh\nprintf "%%s\\n" "%s"\n' "${1:-87, 40000, 81559}" >"$STUBS/nvidia-smi"
  fi
  chmod +x "$STUBS/nvidia-smi"
}

# iso_now — the current UTC time as status.json writes it.
iso_now() { date -u +%Y-%m-%dT%H:%M:%S+00:00; }

# write_status [KEY=JSON...] — write RUN_DIR/status.json (a smoke run at step 12 of 20 by default).
write_status() {
  local state='"running"' step=12 exit_code=null message=null pid=$$ wandb_url=null loss=5.729731559753418
  local last_checkpoint="\"$RUN_DIR/checkpoint-10\"" eta=5.9 resume_count=0 updated_at
  updated_at="\"$(iso_now)\""
  [[ $# -eq 0 ]] || local "$@"
  cat >"$RUN_DIR/status.json" <<EOF
{
  "schema_version": 1,
  "state": $state,
  "step": $step,
  "max_steps": 20,
  "epoch": 0.8,
  "loss": $loss,
  "learning_rate": 0.0005,
  "tokens_per_second": 1242.4,
  "elapsed_seconds": 8.731,
  "eta_seconds": $eta,
  "last_checkpoint": $last_checkpoint,
  "resume_count": $resume_count,
  "wandb_url": $wandb_url,
  "exit_code": $exit_code,
  "message": $message,
  "pid": $pid,
  "output_dir": "$RUN_DIR",
  "started_at": "2026-11-23T18:44:01+00:00",
  "updated_at": $updated_at,
  "device": "cpu",
  "platform": "cpu",
  "startup_seconds": 9.33,
  "memory": {"rss_bytes": 526114816}
}
EOF
}

# write_log NAME — a launch log under logs/ whose train.py header names RUN_DIR, 15 step lines, latest.log -> it.
write_log() {
  local log="$ROOT/logs/$1" i
  {
    echo "[INFO] Running in WANDB offline mode"
    echo "[TRAINING-CPU] trainkit 0.1.0: models/tiny-chat on cpu (float32, sdpa) -> $RUN_DIR"
    for i in $(seq 1 15); do
      echo "[TRAINING-CPU] step $i/20 | loss 5.9049 | lr 1.00e-03 | 1,242 tok/s | ETA 0:00:12"
    done
  } >"$log"
  ln -sfn "$1" "$ROOT/logs/latest.log"
}

# last_line — the last line of $output.
last_line() { printf '%s\n' "${lines[${#lines[@]} - 1]}"; }

# schema_python — a Python with jsonschema, or skip.
schema_python() {
  local py="${TRAINKIT_PYTHON:-python3}"
  "$py" -c 'import jsonschema' 2>/dev/null || skip "jsonschema not importable by $py"
  printf '%s\n' "$py"
}

# check_json JSON — validate the status part against docs/status.schema.json and the extra keys' types.
check_json() {
  "$(schema_python)" - "$REPO_ROOT/docs/status.schema.json" "$1" <<'PY'
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
doc = json.loads(sys.argv[2])
extras = {"tmux_alive": bool, "supervisor_alive": bool, "stale": bool, "trainer_alive": bool,
          "supervisor_pid": (int, type(None)), "newest_checkpoint_problems": list, "recorded_state": (str, type(None)),
          "stalled_seconds": (int, type(None)), "restart_in_seconds": (int, type(None)),
          "newest_checkpoint": (str, type(None)), "gpu": (dict, type(None)), "log": (str, type(None)),
          "updated_seconds_ago": (int, type(None)), "wandb_summary": (dict, type(None))}
for key, kind in extras.items():
    if key in doc:
        assert isinstance(doc[key], kind), f"{key} is {doc[key]!r}"
for key in ("tmux_alive", "supervisor_alive", "newest_checkpoint", "gpu", "log", "stale"):
    assert key in doc, f"{key} missing"
jsonschema.validate({k: v for k, v in doc.items() if k not in extras}, schema)
PY
}

@test "a running run reports its progress and succeeds with its step" {
  write_status
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] output dir: $RUN_DIR"
  assert_line "[STATUS] state: running"
  assert_line "[STATUS] step: 12/20 (60.0%)"
  assert_line "[STATUS] loss: 5.7297"
  assert_line "[STATUS] tokens/s: 1,242"
  assert_line "[STATUS] ETA: 0:00:05"
  assert_line "[STATUS] elapsed: 0:00:08"
  assert_line --regexp '^\[STATUS\] updated: [0-9]+ s ago \('
  assert_line "[STATUS] resume_count: 0"
  assert_equal "$(last_line)" "✅ SUCCESS: training running (step 12/20)"
}

@test "a starting run succeeds too" {
  write_status state='"starting"' step=0 loss=null eta=null last_checkpoint=null
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] loss: n/a"
  assert_line "[STATUS] ETA: ?"
  assert_equal "$(last_line)" "✅ SUCCESS: training starting (step 0/20)"
}

@test "a completed run succeeds with its message" {
  write_status state='"completed"' step=20 exit_code=0 eta=0 message="\"adapter saved to $RUN_DIR/final\""
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] step: 20/20 (100.0%)"
  assert_equal "$(last_line)" "✅ SUCCESS: training completed: step 20/20: adapter saved to $RUN_DIR/final"
}

@test "an interrupted run exits 75 and says to re-run from its checkpoint" {
  write_status state='"interrupted"' step=6 exit_code=75 last_checkpoint="\"$RUN_DIR/checkpoint-6\"" \
    message='"interrupted by SIGTERM: checkpoint saved at step 6"'
  run -75 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "❌ ERROR: training interrupted at step 6/20: interrupted by SIGTERM: checkpoint saved at step 6"
  assert_equal "$(last_line)" "  ↳ re-run the train command to resume from checkpoint-6"
}

@test "a crash loop exits 2 and says a human must look" {
  write_status state='"crash_loop"' exit_code=2 message='"Crash loop detected: resumed 3 times from step 10 without progress"'
  run -2 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "❌ ERROR: training stopped by the crash-loop guard at step 12/20: Crash loop detected: resumed 3 times from step 10 without progress"
  assert_line --partial "  ↳ stop: a human must look"
}

@test "a diverged run exits 3 and points at the learning rate" {
  write_status state='"diverged"' exit_code=3 loss=null message='"loss became nan at step 12: training diverged; last good state saved in checkpoint-11"'
  run -3 "$CHECK" --output-dir "$RUN_DIR"
  assert_line --partial "❌ ERROR: training diverged at step 12/20: loss became nan"
  assert_line --partial "lower learning_rate"
}

@test "a crashed run exits 70 and a run failed before training exits with its recorded 1" {
  write_status state='"failed"' exit_code=70 message='"training crashed: InjectedCrash: injected crash at step 3"'
  run -70 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "❌ ERROR: training crashed at step 12/20: training crashed: InjectedCrash: injected crash at step 3"
  write_status state='"failed"' step=0 exit_code=1 message='"no space left on device"'
  run -1 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "❌ ERROR: training failed before it started: no space left on device"
}

@test "a crash while the supervisor lives is a relaunch, not a failure" {
  write_status state='"failed"' exit_code=70 message='"training crashed: InjectedCrash: injected crash at step 3"'
  hold_lock $$ weatherman-training
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "⚠️ WARNING: train.py crashed at step 12/20: training crashed: InjectedCrash: injected crash at step 3"
  assert_equal "$(last_line)" "✅ SUCCESS: training relaunching after a crash (step 12/20)"
}

@test "a directory without status.json exits 1 with a hint" {
  run -1 "$CHECK" --output-dir "$TMPD/nowhere"
  assert_line "❌ ERROR: no training run found in $TMPD/nowhere (no status.json)"
  assert_line --partial "  ↳ launch training first"
}

@test "a live supervisor without status.json yet counts as launching" {
  hold_lock $$ weatherman-training "$ROOT/logs/none.log"
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] supervisor pid: $$ (alive)"
  assert_equal "$(last_line)" "✅ SUCCESS: training launching: supervisor pid $$ is starting train.py for $RUN_DIR (no status.json yet)"
}

@test "a running state whose trainer and supervisor are gone is dead at once and exits 75" {
  write_status pid="$DEAD_PID"
  run -75 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] state: dead (status.json says running)"
  assert_line "[STATUS] trainer pid: $DEAD_PID (not running)"
  assert_line "⚠️ WARNING: status.json says running but trainer pid $DEAD_PID and its supervisor are gone"
  assert_line "❌ ERROR: training is dead at step 12/20: it stopped without a verdict (killed outright?)"
  run -75 "$CHECK" --output-dir "$RUN_DIR" --json
  [[ "$output" == *'"state": "dead"'* && "$output" == *'"recorded_state": "running"'* ]]
}

@test "a dead run reports the supervisor's recorded exit code" {
  write_status pid="$DEAD_PID"
  echo 70 >"$RUN_DIR/.trainkit.exit"
  run -70 "$CHECK" --output-dir "$RUN_DIR"
}

@test "a trainer that is gone while its supervisor lives is restarting, not dead" {
  write_status pid="$DEAD_PID"
  hold_lock $$ weatherman-training
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line --regexp '^\[STATUS\] state: restarting'
  refute_output --partial "dead"
}

@test "the supervisor's backoff is reported as restarting with the attempt and the seconds left" {
  write_status state='"restarting"' pid="$DEAD_PID"
  in_a_minute="$(date -u -d @$(($(date +%s) + 60)) +%Y-%m-%dT%H:%M:%S+00:00 2>/dev/null || date -u -r $(($(date +%s) + 60)) +%Y-%m-%dT%H:%M:%S+00:00)"
  sed -i.bak -e "s/\"state\": \"restarting\",/\"state\": \"restarting\", \"attempt\": 2, \"restart_at\": \"$in_a_minute\",/" "$RUN_DIR/status.json"
  hold_lock $$ weatherman-training
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line --regexp '^\[STATUS\] state: restarting \(attempt 2, relaunch in [0-9]+ s\)$'
  assert_line --regexp '^✅ SUCCESS: training restarting \(attempt 2, relaunch in [0-9]+ s; step 12/20\)$'
  kill "$HOLDER"
  wait "$HOLDER" 2>/dev/null || true
  run -75 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] state: dead (status.json says restarting)"
}

@test "a live trainer without a step for stall_timeout_seconds is stalled and exits 4" {
  write_status
  sed -i.bak -e 's/"state": "running",/"state": "running", "last_progress_at": "2020-01-01T00:00:00+00:00", "stall_timeout_seconds": 60,/' \
    "$RUN_DIR/status.json"
  run -4 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] state: stalled (status.json says running)"
  assert_line --regexp "^❌ ERROR: training stalled at step 12/20: trainer pid $$ is alive but made no step for [0-9]+ s$"
  sed -i.bak -e 's/"stall_timeout_seconds": 60/"stall_timeout_seconds": 0/' "$RUN_DIR/status.json"
  run -0 "$CHECK" --output-dir "$RUN_DIR"
}

@test "GPU utilisation and memory come from nvidia-smi when it exists" {
  stub_nvidia_smi
  write_status
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] GPU 0: 87% utilisation, 40,000/81,559 MiB"
}

@test "without nvidia-smi the GPU line says so" {
  if PATH="${PATH#"$STUBS:"}" command -v nvidia-smi >/dev/null; then
    skip "this machine has a real nvidia-smi"
  fi
  write_status
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] GPU: n/a (no nvidia-smi)"
}

@test "a failing nvidia-smi is reported without failing the check" {
  stub_nvidia_smi fail
  write_status
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] GPU: nvidia-smi failed"
}

@test "the tmux session is alive only when has-session succeeds for its name" {
  write_status
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] tmux session weatherman-training: not running"
  TMUX_STUB_SESSIONS="weatherman-training" run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] tmux session weatherman-training: alive"
}

@test "the session comes from --session, else the lock, else TRAINKIT_SESSION" {
  write_status
  export TMUX_STUB_SESSIONS="from-lock from-env"
  TRAINKIT_SESSION=from-env run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] tmux session from-env: alive"
  printf 'pid=%s\nsession=from-lock\n' "$DEAD_PID" >"$RUN_DIR/.trainkit.lock"
  TRAINKIT_SESSION=from-env run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] tmux session from-lock: alive"
  run -0 "$CHECK" --output-dir "$RUN_DIR" --session other
  assert_line "[STATUS] tmux session other: not running"
}

@test "the newest checkpoint is the highest step, and trainkit/train/checkpoints.py says whether it is sound" {
  mkdir -p "$RUN_DIR"/checkpoint-{5,20,100} "$RUN_DIR/checkpoint-x"
  write_status
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] newest checkpoint: checkpoint-100 (step 100, incomplete: directory is empty) $RUN_DIR/checkpoint-100"
  touch "$RUN_DIR/checkpoint-100/checkpoint-is-incomplete.txt"
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line --partial "checkpoint-100 (step 100, incomplete: checkpoint-is-incomplete.txt present (killed while saving))"
  rm -r "$RUN_DIR"/checkpoint-*
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] newest checkpoint: none"
}

@test "the last log lines come indented from the log that names the run" {
  write_log training_cpu_20261123_195116.log
  write_status
  run -0 "$CHECK" --output-dir "$RUN_DIR" --lines 3
  assert_line "[STATUS] log: $ROOT/logs/training_cpu_20261123_195116.log (last 3 lines)"
  assert_line "    [TRAINING-CPU] step 15/20 | loss 5.9049 | lr 1.00e-03 | 1,242 tok/s | ETA 0:00:12"
  assert_line "    [TRAINING-CPU] step 13/20 | loss 5.9049 | lr 1.00e-03 | 1,242 tok/s | ETA 0:00:12"
  refute_line --partial "step 12/20 | loss"
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line --partial "(last 10 lines)"
  assert_line --partial "step 6/20 | loss"
  refute_line --partial "step 5/20 | loss"
}

@test "the log named in the lock wins, and a log naming another run is ignored" {
  write_log training_cpu_20261123_195116.log
  sed -i.bak "s#-> .*#-> $TMPD/other#" "$ROOT/logs/training_cpu_20261123_195116.log"
  write_status
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line --partial "[STATUS] log: none found"
  echo "from the lock" >"$TMPD/lock.log"
  printf 'pid=%s\nsession=s\nlog=%s\n' $$ "$TMPD/lock.log" >"$RUN_DIR/.trainkit.lock"
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] log: $TMPD/lock.log (last 10 lines)"
  assert_line "    from the lock"
}

@test "the W&B line shows the URL, offline, or off" {
  write_status wandb_url='"https://wandb.ai/me/weatherman/runs/abcd1234"'
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] W&B: https://wandb.ai/me/weatherman/runs/abcd1234"
  write_status
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] W&B: off (no W&B run for this output dir)"
  echo '{"run_id": "abcd1234", "project": "weatherman"}' >"$RUN_DIR/wandb_run.json"
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] W&B: offline"
}

@test "--wandb without a key warns and still reports the run" {
  write_status
  run -0 "$CHECK" --output-dir "$RUN_DIR" --wandb
  assert_line "⚠️ WARNING: --wandb: no W&B API key (WANDB_API_KEY or ~/.netrc): not querying the W&B API"
  assert_equal "$(last_line)" "✅ SUCCESS: training running (step 12/20)"
}

@test "--json prints only one JSON object: status.json plus the extra keys" {
  stub_nvidia_smi "87, 40000, 81559"
  write_log training_cpu_20261123_195116.log
  mkdir -p "$RUN_DIR/checkpoint-10"
  write_status
  TMUX_STUB_SESSIONS=weatherman-training run -0 --separate-stderr "$CHECK" --output-dir "$RUN_DIR" --json
  assert_equal "${#lines[@]}" 1
  check_json "$output"
  run -0 "$(schema_python)" -c '
import json, sys
d = json.loads(sys.argv[1])
assert d["state"] == "running" and d["step"] == 12, d
assert d["tmux_alive"] is True and d["stale"] is False and d["supervisor_alive"] is False
assert d["newest_checkpoint"] == sys.argv[2] + "/checkpoint-10", d["newest_checkpoint"]
assert d["log"] == sys.argv[3], d["log"]
assert d["gpu"]["utilization_percent"] == 87 and d["gpu"]["memory_used_mib"] == 40000
assert d["gpu"]["memory_total_mib"] == 81559 and d["gpu"]["count"] == 1
print("ok")' "$output" "$RUN_DIR" "$ROOT/logs/training_cpu_20261123_195116.log"
  assert_output "ok"
}

@test "--json validates against the schema in every state and keeps the exit code" {
  local spec state code
  for spec in running:null:0 starting:null:0 completed:0:0 failed:70:70 crash_loop:2:2 diverged:3:3 interrupted:75:75; do
    IFS=: read -r state code expected <<<"$spec"
    write_status state="\"$state\"" exit_code="$code"
    run --separate-stderr "$CHECK" --output-dir "$RUN_DIR" --json
    assert_equal "$status" "$expected"
    check_json "$output"
    assert_output --partial "\"state\": \"$state\""
    [[ "$stderr" == *"ERROR: "* || "$expected" -eq 0 ]]
  done
}

@test "--json without a run prints a JSON object with a null state and exits 1" {
  run -1 --separate-stderr "$CHECK" --output-dir "$TMPD/nowhere" --json
  run -0 "$(schema_python)" -c '
import json, sys
d = json.loads(sys.argv[1])
assert d["state"] is None and d["stale"] is False and d["gpu"] is None and d["log"] is None, d
print("ok")' "$output"
  assert_output ok
}

@test "--json --wandb without a key keeps stdout pure JSON and warns on stderr" {
  write_status
  run -0 --separate-stderr "$CHECK" --output-dir "$RUN_DIR" --json --wandb
  check_json "$output"
  [[ "$stderr" == *"⚠️ WARNING: --wandb: no W&B API key"* ]]
}

@test "--config finds the output dir relative to the repo root" {
  write_status
  printf 'platform: cpu\noutput_dir: outputs/smoke  # the run\n' >"$TMPD/c.yaml"
  run -0 "$CHECK" --config "$TMPD/c.yaml"
  assert_line "[STATUS] output dir: $RUN_DIR"
  run -1 "$CHECK" --config "$TMPD/missing.yaml"
  assert_line "❌ ERROR: config not found: $TMPD/missing.yaml"
}

@test "without --output-dir or --config the run comes from logs/latest.log, else the newest outputs/*/status.json" {
  run -1 "$CHECK"
  assert_line "❌ ERROR: no training run found (no logs/latest.log, no outputs/*/status.json)"
  write_status
  mkdir -p "$ROOT/outputs/older"
  cp "$RUN_DIR/status.json" "$ROOT/outputs/older/status.json"
  touch -t 202001010000 "$ROOT/outputs/older/status.json"
  mv "$RUN_DIR/status.json" "$TMPD/saved.json"
  run -0 "$CHECK"
  assert_line "[STATUS] output dir: $ROOT/outputs/older"
  mv "$TMPD/saved.json" "$RUN_DIR/status.json"
  touch "$RUN_DIR/status.json"
  run -0 "$CHECK"
  assert_line "[STATUS] output dir: $RUN_DIR"
  mkdir -p "$TMPD/elsewhere"
  cp "$RUN_DIR/status.json" "$TMPD/elsewhere/"
  RUN_DIR="$TMPD/elsewhere" write_log training_h100_20261124_000000.log
  run -0 "$CHECK"
  assert_line "[STATUS] output dir: $TMPD/elsewhere"
}

@test "bad arguments exit 1 with an ERROR and a hint" {
  run -1 "$CHECK" --bogus
  assert_line "❌ ERROR: unknown argument: --bogus"
  assert_line "  ↳ see scripts/check_training_status.sh --help"
  run -1 "$CHECK" --lines many
  assert_line "❌ ERROR: --lines wants a number, got 'many'"
  run -1 "$CHECK" --output-dir
  assert_line "❌ ERROR: --output-dir needs a value"
}

@test "--help prints the Usage header with the exit-code table and exits 0" {
  run -0 "$REPO_ROOT/scripts/check_training_status.sh" --help
  assert_line --index 0 --partial "Usage: scripts/check_training_status.sh [--output-dir DIR | --config FILE]"
  assert_line --partial "interrupted                      75"
  refute_output --partial "set -euo"
}

@test "--wait blocks while the supervisor lives, then reports the verdict the run reached" {
  write_status state='"running"' pid="$DEAD_PID"
  hold_lock $$ weatherman-training "" 3
  (sleep 1.5 && cat >"$RUN_DIR/status.json.new" <"$RUN_DIR/status.json" &&
    sed -i.bak -e 's/"state": "running"/"state": "completed"/' -e 's/"step": 12/"step": 20/' "$RUN_DIR/status.json.new" &&
    mv "$RUN_DIR/status.json.new" "$RUN_DIR/status.json") &
  started=$SECONDS
  TRAINKIT_WAIT_INTERVAL=0.2 run -0 "$CHECK" --output-dir "$RUN_DIR" --wait
  ((SECONDS - started >= 2))
  assert_line "[STATUS] state: completed"
  assert_equal "${lines[-1]}" "✅ SUCCESS: training completed: step 20/20"
}

@test "--wait --timeout gives up with a WARNING and reports the run as it is" {
  write_status state='"running"'
  hold_lock $$ weatherman-training "" 30
  TRAINKIT_WAIT_INTERVAL=0.2 run -0 "$CHECK" --output-dir "$RUN_DIR" --wait --timeout 1
  assert_line "⚠️ WARNING: gave up waiting after 1s: the run has no verdict yet"
  assert_equal "${lines[-1]}" "✅ SUCCESS: training running (step 12/20)"
}

@test "a launch refused before it touched the run leaves the run's state as the verdict; without any run it is the failure" {
  write_status state='"interrupted"' step=12 exit_code=75
  touch -t 200001010000 "$RUN_DIR/status.json"
  printf '1\n' >"$RUN_DIR/.trainkit.exit"
  run -75 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] state: interrupted"
  rm "$RUN_DIR/status.json"
  printf '{"time": "2026-12-06T10:00:00Z", "event": "refused", "step": 0, "message": "outputs/x holds a run started with a different config: learning_rate: 0.001 -> 0.0005"}\n' >"$RUN_DIR/events.jsonl"
  run -1 "$CHECK" --output-dir "$RUN_DIR"
  assert_equal "${lines[-2]}" "❌ ERROR: training failed before it started: outputs/x holds a run started with a different config: learning_rate: 0.001 -> 0.0005"
}

@test "an exit file older than status.json does not hide the state of the run after it" {
  printf '1\n' >"$RUN_DIR/.trainkit.exit"
  touch -t 200001010000 "$RUN_DIR/.trainkit.exit"
  write_status state='"completed"' step=20 exit_code=0
  run -0 "$CHECK" --output-dir "$RUN_DIR"
  assert_line "[STATUS] state: completed"
}
