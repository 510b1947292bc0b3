#!/usr/bin/env bats
# An automation agent drives the whole CPU flow and decides from nothing but exit codes and the
# protocol's tagged lines (docs/AGENT_PROTOCOL.md): setup, a launch refused for a typo it then
# fixes from the ERROR's did-you-mean, a launch that trains in tmux, polling the JSON status until
# a verdict, and a re-launch that must be safe. Real tmux, real training of the tiny model.

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  use_private_training_env agent
  PY="$REPO_ROOT/.venv-local/bin/python"
  OUT="$BATS_TEST_TMPDIR/run"
  cd "$REPO_ROOT"
}

teardown() {
  kill_private_tmux
}

# agent_run CMD... — run CMD as an agent sees it: sets $code and $verdict (the last tagged line)
# and $tagged (every protocol line); anything else the command printed is ignored.
agent_run() {
  local output
  code=0
  output="$("$@" 2>&1)" || code=$?
  tagged="$(grep -E '^((✅|⚠️|❌) (SUCCESS|WARNING|ERROR|RESUME):|  ↳ |\[[A-Z0-9-]+\]( |$))' <<<"$output" || true)"
  verdict="$(grep -E '^(✅|⚠️|❌) (SUCCESS|WARNING|ERROR|RESUME):' <<<"$output" | tail -n 1 || true)"
  printf '%s\n--- exit %s, verdict: %s\n' "$output" "$code" "$verdict" >>"$BATS_TEST_TMPDIR/agent.log"
}

# json_field JSON KEY — KEY of a JSON object, as the agent's JSON parser reads it.
json_field() {
  "$PY" -c 'import json, sys; v = json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
}

@test "an agent takes a run from setup to a finished adapter using only exit codes and tagged lines" {
  [[ -x "$PY" ]] || skip "needs make setup"

  agent_run scripts/setup.sh --platform cpu --yes
  assert_equal "$code" 0
  assert_equal "$verdict" "✅ SUCCESS: cpu setup complete"

  # A config with a typo: the launch must stop before anything starts, and say how to fix it.
  config="$BATS_TEST_TMPDIR/agent.yaml"
  sed 's/^learning_rate:/lerning_rate:/' configs/smoke.yaml >"$config"
  agent_run scripts/train.sh --platform cpu --config "$config" --output-dir "$OUT" --session agent-run
  assert_equal "$code" 1
  [[ "$verdict" == "❌ ERROR: "* ]]
  assert_file_not_exists "$OUT/status.json"
  bad="$(sed -n 's/.*unknown config key(s) in [^:]*: \([a-z_]*\) (did you mean \([a-z_]*\)?).*/\1 \2/p' <<<"$tagged" | head -n 1)"
  assert_equal "$bad" "lerning_rate learning_rate"
  sed -i.bak "s/^${bad% *}:/${bad#* }:/" "$config"

  agent_run scripts/train.sh --platform cpu --config "$config" --output-dir "$OUT" --session agent-run --watch-steps 3
  assert_equal "$code" 0
  [[ "$verdict" == "✅ SUCCESS: training "* ]]
  log="$(launched_log "$tagged")"
  assert_file_exists "$log"
  grep -qxF "[TRAINING-CPU] reconnect: tmux attach -t agent-run   |   follow: tail -f $log" <<<"$tagged"

  # Poll the JSON twin until the run has a verdict and its supervisor is gone (until then the
  # output dir is still owned); the exit code must agree with the state.
  for _ in $(seq 1 240); do
    status_code=0
    status_json="$(scripts/check_training_status.sh --output-dir "$OUT" --session agent-run --json 2>/dev/null)" || status_code=$?
    state="$(json_field "$status_json" state)"
    if [[ "$state" != starting && "$state" != running && -n "$state" &&
      "$(json_field "$status_json" supervisor_alive)" == False ]]; then
      break
    fi
    sleep 0.5
  done
  assert_equal "$state" completed
  assert_equal "$status_code" 0
  assert_equal "$(json_field "$status_json" step)" 20
  assert_file_exists "$OUT/final/adapter_model.safetensors"

  # Re-running the one command must be safe: nothing is trained again.
  agent_run scripts/train.sh --platform cpu --config "$config" --output-dir "$OUT" --session agent-run
  assert_equal "$code" 0
  assert_equal "$verdict" "✅ SUCCESS: training already complete: step 20, adapter in $OUT/final"
  run -0 grep -F "✅ SUCCESS: training already complete: step 20" "$(launched_log "$tagged")"
}
