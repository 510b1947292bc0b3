#!/usr/bin/env bats
# scripts/setup.sh --platform cpu: what `make demo` runs first. One test runs the real checkers
# with the real .venv-local/ Python on the tiny model; the others use a stub Python
# (tests/bats/stubs/python-stub as $TRAINKIT_PYTHON and $PYTHON) that answers the venv/pip calls, the
# tiny-model build and the checkers.
# Each test works in a copy of the repo, so the checkout's venv and model are never touched.

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  export REPO="$BATS_TEST_TMPDIR/repo" STUB_BIN="$BATS_TEST_TMPDIR/bin"
  export STUB_LOG="$BATS_TEST_TMPDIR/calls.log" REAL_PYTHON="$REPO_ROOT/.venv-local/bin/python"
  mkdir -p "$BATS_TEST_TMPDIR/home"
  setup_repo_copy "$REPO" "$STUB_BIN"
  export PATH="$STUB_BIN:$PATH" HOME="$BATS_TEST_TMPDIR/home" NO_COLOR=1
  export TRAINKIT_PYTHON="$STUB_BIN/python-stub" PYTHON="$STUB_BIN/python-stub"
  unset WANDB_API_KEY WANDB_MODE TRAINKIT_MIN_DISK_GB STUB_FAIL
}

@test "with the venv and tiny model built, the real checkers pass on the smoke config, with the demo's disk thresholds" {
  [[ -x "$REAL_PYTHON" && -f "$REPO_ROOT/models/tiny-chat/config.json" ]] || skip "needs make setup"
  mkdir -p "$REPO/.venv-local"
  touch "$REPO/.venv-local/.trainkit-deps"
  cp -Rp "$REPO_ROOT/models/tiny-chat" "$REPO/models/tiny-chat"
  touch "$REPO/models/tiny-chat/config.json"
  TRAINKIT_PYTHON="$REAL_PYTHON" run "$REPO/scripts/setup.sh" --platform cpu
  assert_success
  assert_line "[SETUP-CPU] .venv-local/ is up to date with requirements-local.txt: skipped"
  assert_line "[SETUP-CPU] tiny model models/tiny-chat/ is up to date: skipped"
  assert_line "✅ SUCCESS: environment ready for cpu"
  assert_line "✅ SUCCESS: training config is valid"
  refute_output --partial "below the recommended"
  assert_line "[SETUP-CPU] next: scripts/train.sh --platform cpu"
  assert_equal "${lines[-1]}" "✅ SUCCESS: cpu setup complete"
}

@test "a fresh checkout creates .venv-local/ and the tiny model like make setup; a second run skips both" {
  run "$REPO/scripts/setup.sh" --platform cpu
  assert_success
  assert_line "[SETUP-CPU] creating .venv-local/ with $STUB_BIN/python-stub"
  assert_line "[SETUP-CPU] building the tiny model models/tiny-chat/"
  assert_line --regexp '^\[SETUP-CPU\] step Python and \.venv-local/: [0-9]+m[0-9]{2}s \(total [0-9]+m[0-9]{2}s\)$'
  assert_line --regexp '^\[SETUP-CPU\] step tiny model: [0-9]+m[0-9]{2}s'
  assert_line --regexp '^\[SETUP-CPU\] setup took [0-9]+m[0-9]{2}s$'
  run grep -c -e "-m venv $REPO/.venv-local" -e "-m pip install --quiet torch==2.13.0" \
    -e "-m pip install --quiet -r requirements-dev.txt" -e "scripts/make_tiny_model.py" "$STUB_LOG"
  assert_output 4
  run grep -F "scripts/validate_training_config.py --config configs/smoke.yaml" "$STUB_LOG"
  assert_success
  run "$REPO/scripts/setup.sh" --platform cpu
  assert_success
  assert_line "[SETUP-CPU] .venv-local/ is up to date with requirements-local.txt: skipped"
  assert_line "[SETUP-CPU] tiny model models/tiny-chat/ is up to date: skipped"
  assert_equal "${lines[-1]}" "✅ SUCCESS: cpu setup complete"
}

@test "newer requirements reinstall into the venv, and --recreate rebuilds it from scratch" {
  run "$REPO/scripts/setup.sh" --platform cpu
  assert_success
  touch -t 200001010000 "$REPO/.venv-local/.trainkit-deps"
  run "$REPO/scripts/setup.sh" --platform cpu
  assert_success
  assert_line --partial "[SETUP-CPU] installing requirements-local.txt into .venv-local/"
  refute_line --partial "creating .venv-local/"
  run "$REPO/scripts/setup.sh" --platform cpu --recreate --yes
  assert_success
  assert_line "[SETUP-CPU] removing .venv-local/ (--recreate)"
  assert_line "[SETUP-CPU] creating .venv-local/ with $STUB_BIN/python-stub"
}

@test "a failing config check ends with one ERROR verdict naming it and exit 1" {
  STUB_FAIL=validate_training_config.py run -1 "$REPO/scripts/setup.sh" --platform cpu
  assert_line "❌ ERROR: validate_training_config.py found a problem (stub)"
  assert_equal "${lines[-2]}" "❌ ERROR: cpu setup incomplete: validate_training_config.py failed (see the ERROR lines above)"
  assert_equal "${lines[-1]}" "  ↳ fix them and re-run scripts/setup.sh --platform cpu; finished steps are skipped"
  refute_line --partial "✅ SUCCESS: cpu setup complete"
}

@test "a config that does not exist is an ERROR with exit 1" {
  run -1 "$REPO/scripts/setup.sh" --platform cpu --config configs/nope.yaml
  assert_line "❌ ERROR: config file not found: configs/nope.yaml"
}

@test "Ctrl-C during setup ends it with one ERROR line and 130 after the running check, never a SUCCESS last" {
  mkdir -p "$REPO/.venv-local" "$REPO/models/tiny-chat"
  touch "$REPO/.venv-local/.trainkit-deps" "$REPO/models/tiny-chat/config.json"
  STUB_SLEEP=2 run timeout --preserve-status -s INT 1 "$REPO/scripts/setup.sh" --platform cpu
  assert_equal "$status" 130
  assert_equal "${lines[-2]}" "❌ ERROR: setup interrupted (Ctrl-C)"
  refute_line --partial "Traceback"
}

