#!/usr/bin/env bats
# scripts/setup_m4_local.sh (scripts/setup.sh --platform m4): every decision's tag and exit code.
# The Mac's facts come from PATH stubs (uname, system_profiler, sysctl) and a stub Python
# ($TRAINKIT_PYTHON and $PYTHON) that answers the version, venv and pip calls and the checkers.
# Each test works in a copy of the repo whose .venv-local/ is a stub, so the checkout is never touched.

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  export REPO="$BATS_TEST_TMPDIR/repo" STUB_BIN="$BATS_TEST_TMPDIR/bin" STUB_STATE="$BATS_TEST_TMPDIR/state"
  export STUB_LOG="$BATS_TEST_TMPDIR/calls.log" REAL_PYTHON="$REPO_ROOT/.venv-local/bin/python"
  mkdir -p "$STUB_STATE" "$BATS_TEST_TMPDIR/home"
  setup_repo_copy "$REPO" "$STUB_BIN"
  write_stubs
  mkdir -p "$REPO/.venv-local/bin"
  cp "$STUB_BIN/python-stub" "$REPO/.venv-local/bin/python"
  touch "$REPO/.venv-local/.trainkit-deps"
  export PATH="$STUB_BIN:$PATH" HOME="$BATS_TEST_TMPDIR/home" NO_COLOR=1
  export TRAINKIT_PYTHON="$STUB_BIN/python-stub" PYTHON="$STUB_BIN/python-stub"
  export STUB_UNAME_S=Darwin STUB_UNAME_M=arm64 STUB_CHIP="Apple M4 Pro" STUB_MEMSIZE=$((48 * 1073741824))
  unset WANDB_API_KEY WANDB_MODE TRAINKIT_MIN_DISK_GB STUB_REAL STUB_FAIL STUB_PY_VERSION STUB_INTEL
}

write_stubs() {
  cat >"$STUB_BIN/uname" <<'EOF'
#!/usr/bin/env bash
case "$1" in
  -s) echo "$STUB_UNAME_S" ;;
  -m) echo "$STUB_UNAME_M" ;;
  *) for real in /usr/bin/uname /bin/uname; do [[ -x "$real" ]] && exec "$real" "$@"; done ;;
esac
EOF
  cat >"$STUB_BIN/system_profiler" <<'EOF'
#!/usr/bin/env bash
printf 'Hardware:\n\n    Hardware Overview:\n\n      Model Name: MacBook Pro\n'
if [[ -n "${STUB_INTEL:-}" ]]; then
  printf '      Processor Name: %s\n      Processor Speed: 2,3 GHz\n' "$STUB_INTEL"
else
  printf '      Chip: %s\n      Total Number of Cores: 14 (10 performance and 4 efficiency)\n' "$STUB_CHIP"
fi
printf '      Memory: %s GB\n' "$((STUB_MEMSIZE / 1073741824))"
EOF
  cat >"$STUB_BIN/sysctl" <<'EOF'
#!/usr/bin/env bash
[[ "$*" == "-n hw.memsize" ]] && echo "$STUB_MEMSIZE"
EOF
  chmod +x "$STUB_BIN"/*
}

@test "an M4 with 48 GB succeeds, runs the m4 checkers with MPS fallback on, and quotes no duration" {
  run "$REPO/scripts/setup_m4_local.sh"
  assert_success
  assert_line "[SETUP-M4] chip: Apple M4 Pro"
  assert_line "[SETUP-M4] unified memory: 48 GB (the preflight sizes the run to the GPU's working set)"
  assert_line "[SETUP-M4] Python 3.11.7 ($STUB_BIN/python-stub)"
  assert_line "[SETUP-M4] .venv-local/ is up to date with requirements-local.txt: skipped"
  assert_line "✅ SUCCESS: check_gpu.py passed (stub; PYTORCH_ENABLE_MPS_FALLBACK=1)"
  assert_line "[SETUP-M4] the duration estimate above is computed from FLOPs for this chip; keep the Mac on power and awake while it trains"
  refute_output --partial "12–18 h"
  assert_equal "${lines[-1]}" "✅ SUCCESS: m4 setup complete"
  run grep -F "scripts/validate_environment.py --env m4" "$STUB_LOG"
  assert_success
  run grep -F "scripts/validate_training_config.py --config configs/training_config_m4.yaml" "$STUB_LOG"
  assert_success
}

@test "a Mac with 8 GB of unified memory stops with an ERROR and exit 1" {
  STUB_MEMSIZE=$((8 * 1073741824)) run -1 "$REPO/scripts/setup_m4_local.sh"
  assert_equal "${lines[-2]}" "❌ ERROR: 8 GB unified memory is too little: a 7-8B LoRA needs at least 16 GB, even with a 4-bit base"
  assert_file_not_exists "$STUB_LOG"
}

@test "a Mac with 16 GB of unified memory sets up without a warning: the 4-bit base through MLX fits it" {
  STUB_MEMSIZE=$((16 * 1073741824)) run "$REPO/scripts/setup_m4_local.sh"
  assert_success
  assert_line "[SETUP-M4] unified memory: 16 GB (the preflight sizes the run to the GPU's working set)"
  refute_output --partial "unified memory is"
  assert_equal "${lines[-1]}" "✅ SUCCESS: m4 setup complete"
}

@test "an Intel Mac stops with an ERROR and exit 1" {
  STUB_INTEL="Quad-Core Intel Core i7" STUB_UNAME_M=x86_64 run -1 "$REPO/scripts/setup_m4_local.sh"
  assert_equal "${lines[-2]}" "❌ ERROR: this Mac has no Apple-Silicon chip (Quad-Core Intel Core i7): MPS training needs an M1–M4"
}

@test "a shell under Rosetta on Apple Silicon stops with an ERROR" {
  STUB_UNAME_M=x86_64 run -1 "$REPO/scripts/setup_m4_local.sh"
  assert_line --partial "❌ ERROR: this shell runs under Rosetta (x86_64) on Apple M4 Pro"
}

@test "a machine that is not a Mac stops with an ERROR pointing at the cpu or H100 setup" {
  STUB_UNAME_S=Linux run -1 "$REPO/scripts/setup_m4_local.sh"
  assert_equal "${lines[-2]}" "❌ ERROR: not a Mac (Linux): the m4 setup needs an Apple-Silicon Mac"
}

@test "Python older than 3.10 stops with an ERROR" {
  STUB_PY_VERSION=3.9.6 run -1 "$REPO/scripts/setup_m4_local.sh"
  assert_equal "${lines[-2]}" "❌ ERROR: Python 3.9.6 ($STUB_BIN/python-stub) is too old: trainkit needs Python >= 3.10"
}

@test "MPS missing fails the checkers and the ERROR verdict names them" {
  STUB_FAIL="validate_environment.py check_gpu.py" run -1 "$REPO/scripts/setup_m4_local.sh"
  assert_line "❌ ERROR: check_gpu.py found a problem (stub)"
  assert_equal "${lines[-2]}" "❌ ERROR: m4 setup incomplete: validate_environment.py, check_gpu.py failed (see the ERROR lines above)"
}

@test "no W&B key is a WARNING with setup instructions" {
  run "$REPO/scripts/setup_m4_local.sh"
  assert_line "⚠️ WARNING: no W&B API key: training will log offline to $REPO/outputs/weatherman-m4/wandb"
}

@test "a fresh checkout builds .venv-local/ and links the data; a second run skips both and says so" {
  rm -rf "$REPO/.venv-local"
  mkdir -p "$REPO/data/synthetic"
  touch "$REPO/data/synthetic/final_train.jsonl" "$REPO/data/synthetic/final_validation.jsonl"
  run "$REPO/scripts/setup_m4_local.sh"
  assert_success
  assert_line "[SETUP-M4] creating .venv-local/ with $STUB_BIN/python-stub"
  assert_line "[SETUP-M4] .venv-local/ ready"
  assert_line "[SETUP-M4] linked data/processed/train.jsonl -> ../synthetic/final_train.jsonl"
  assert_file_exists "$REPO/.venv-local/.trainkit-deps"
  run grep -c -e "-m pip install --quiet torch==2.13.0" -e "-m pip install --quiet -r requirements-dev.txt" "$STUB_LOG"
  assert_output 2
  run "$REPO/scripts/setup_m4_local.sh"
  assert_success
  assert_line "[SETUP-M4] .venv-local/ is up to date with requirements-local.txt: skipped"
  assert_line "[SETUP-M4] data/processed/validation.jsonl already present: skipped"
  run grep -c -e "-m pip install" "$STUB_LOG"
  assert_output 2
}

@test "setup_m4_local.sh --help prints its Usage header and exits 0" {
  run "$REPO_ROOT/scripts/setup_m4_local.sh" --help
  assert_success
  assert_line --index 0 "Usage: scripts/setup_m4_local.sh [--yes] [--recreate] [--config FILE]"
}

# fake_python PATH VERSION — a Python at PATH that reports VERSION (the stub Python behind it).
fake_python() {
  mkdir -p "$(dirname "$1")"
  printf '#!/usr/bin/env bash\nSTUB_PY_VERSION=%s exec "%s" "$@"\n' "$2" "$STUB_BIN/python-stub" >"$1"
  chmod +x "$1"
}

# without_a_python — no venv, no PYTHON or TRAINKIT_PYTHON, macOS's python3 3.9 first on PATH, no
# python3.1x on PATH, and empty Homebrew and pyenv directories.
without_a_python() {
  rm -rf "$REPO/.venv-local"
  unset TRAINKIT_PYTHON PYTHON
  export HOMEBREW_PREFIX="$BATS_TEST_TMPDIR/homebrew" PYENV_ROOT="$BATS_TEST_TMPDIR/pyenv"
  fake_python "$STUB_BIN/python3" 3.9.6
  for name in python3.10 python3.11 python3.12; do
    printf '#!/usr/bin/env bash\nexit 127\n' >"$STUB_BIN/$name"
    chmod +x "$STUB_BIN/$name"
  done
}

@test "without PYTHON, setup finds Homebrew's python3.11 itself (macOS's python3 is 3.9) and builds the venv with it" {
  without_a_python
  fake_python "$HOMEBREW_PREFIX/bin/python3.11" 3.11.9
  run "$REPO/scripts/setup_m4_local.sh"
  assert_success
  assert_line "[SETUP-M4] Python 3.11.9 ($HOMEBREW_PREFIX/bin/python3.11)"
  assert_line "[SETUP-M4] creating .venv-local/ with $HOMEBREW_PREFIX/bin/python3.11"
  assert_equal "${lines[-1]}" "✅ SUCCESS: m4 setup complete"
}

@test "without Homebrew's Python, setup takes a pyenv 3.10–3.12 and skips a 3.13" {
  without_a_python
  fake_python "$PYENV_ROOT/versions/3.13.1/bin/python" 3.13.1
  fake_python "$PYENV_ROOT/versions/3.12.4/bin/python" 3.12.4
  run "$REPO/scripts/setup_m4_local.sh"
  assert_success
  assert_line "[SETUP-M4] Python 3.12.4 ($PYENV_ROOT/versions/3.12.4/bin/python)"
}

@test "with no Python 3.10–3.12 anywhere, setup says exactly what to install" {
  without_a_python
  fake_python "$HOMEBREW_PREFIX/bin/python3.12" 3.13.0
  run -1 "$REPO/scripts/setup_m4_local.sh"
  assert_equal "${lines[-2]}" "❌ ERROR: no Python 3.10–3.12 found: looked in Homebrew, pyenv and PATH (python3.12, python3.11, python3.10, python3)"
  assert_equal "${lines[-1]}" "  ↳ install one: brew install python@3.11 on a Mac (setup finds it by itself), apt-get install python3.11-venv on Linux, or pyenv install 3.11; or set PYTHON=/path/to/python3.11"
}

@test "each Mac setup step prints its elapsed time" {
  run "$REPO/scripts/setup_m4_local.sh"
  assert_success
  assert_line --regexp '^\[SETUP-M4\] step chip and memory: [0-9]+m[0-9]{2}s \(total [0-9]+m[0-9]{2}s\)$'
  assert_line --regexp '^\[SETUP-M4\] step Python and \.venv-local/: [0-9]+m[0-9]{2}s'
  assert_line --regexp '^\[SETUP-M4\] setup took [0-9]+m[0-9]{2}s$'
}

@test "missing data on the Mac is a WARNING with the cp command into the directory setup made" {
  run "$REPO/scripts/setup_m4_local.sh"
  assert_success
  assert_line "⚠️ WARNING: the config's train_file data/processed/train.jsonl is missing: data/synthetic/final_train.jsonl, which setup links it to, does not exist"
  assert_line "  ↳ cp /path/to/final_train.jsonl /path/to/final_validation.jsonl $REPO/data/synthetic/ (setup made that directory), then re-run scripts/setup_m4_local.sh"
  assert_dir_exists "$REPO/data/synthetic"
}
