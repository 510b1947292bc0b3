#!/usr/bin/env bats
# scripts/setup_runpod_h100.sh (scripts/setup.sh --platform h100): every decision's tag and exit code.
# The machine's facts come from PATH stubs (nvidia-smi, conda) and a stub Python ($TRAINKIT_PYTHON)
# that answers the import/pip calls and the checkers; STUB_REAL names checkers the real venv Python runs.
# Each test works in a copy of the repo, so links, stamps and logs never touch the checkout.

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  export REPO="$BATS_TEST_TMPDIR/repo" STUB_BIN="$BATS_TEST_TMPDIR/bin" STUB_STATE="$BATS_TEST_TMPDIR/state"
  export STUB_LOG="$BATS_TEST_TMPDIR/calls.log" STUB_CONDA_BASE="$BATS_TEST_TMPDIR/conda"
  export REAL_PYTHON="$REPO_ROOT/.venv-local/bin/python"
  mkdir -p "$STUB_STATE" "$STUB_CONDA_BASE/envs" "$BATS_TEST_TMPDIR/home"
  setup_repo_copy "$REPO" "$STUB_BIN"
  write_stubs
  export PATH="$STUB_BIN:$PATH" HOME="$BATS_TEST_TMPDIR/home" TRAINKIT_PYTHON="$STUB_BIN/python-stub"
  export RUNPOD_POD_ID=pod-test NO_COLOR=1
  # torch_build's index check reads the fixture pages, never a real index.
  export TRAINKIT_WHEEL_INDEX_ROOT="file://$REPO_ROOT/tests/fixtures/wheel-index"
  unset WANDB_API_KEY WANDB_MODE CONDA_EXE TRAINKIT_CONDA_ENV TRAINKIT_MIN_DISK_GB STUB_REAL STUB_FAIL STUB_FLASH_ATTN_FAILS
  unset STUB_TORCH_NO_GPU
  export STUB_GPU="NVIDIA H100 80GB HBM3, 81559" STUB_CUDA=13.0 STUB_DRIVER=580.82.07
}

write_stubs() {
  cat >"$STUB_BIN/nvidia-smi" <<'EOF'
#!/usr/bin/env bash
if [[ "$*" == *--query-gpu=name,memory.total* ]]; then
  printf '%s\n' "$STUB_GPU"
elif [[ "$*" == *--query-gpu=driver_version* ]]; then
  printf '%s\n' "$STUB_DRIVER"
else
  printf '| NVIDIA-SMI %s    Driver Version: %s    CUDA Version: %s     |\n' "$STUB_DRIVER" "$STUB_DRIVER" "$STUB_CUDA"
fi
EOF
  cat >"$STUB_BIN/conda" <<'EOF'
#!/usr/bin/env bash
echo "conda $*" >>"$STUB_LOG"
name="$4"
case "$1 $2" in
  "info --base") echo "$STUB_CONDA_BASE" ;;
  "env list")
    printf '# conda environments:\n#\nbase                  *  %s\n' "$STUB_CONDA_BASE"
    for dir in "$STUB_CONDA_BASE"/envs/*/; do
      [[ -d "$dir" ]] && printf '%-22s   %s\n' "$(basename "$dir")" "${dir%/}"
    done ;;
  "env create") echo "Collecting package metadata"; mkdir -p "$STUB_CONDA_BASE/envs/$name/bin" ;;
  "env update") echo "Collecting package metadata" ;;
  "env remove") rm -rf "${STUB_CONDA_BASE:?}/envs/$name" ;;
esac
EOF
  chmod +x "$STUB_BIN"/*
}

add_final_data() {
  mkdir -p "$REPO/data/synthetic"
  cp "$REPO_ROOT/data/sample/train.jsonl" "$REPO/data/synthetic/final_train.jsonl"
  cp "$REPO_ROOT/data/sample/validation.jsonl" "$REPO/data/synthetic/final_validation.jsonl"
}

@test "on an H100 80GB pod with driver 580 setup picks the PyPI torch, builds the env, checks torch on the GPU, installs attention and succeeds" {
  run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  assert_line "[SETUP-H100] GPU: NVIDIA H100 80GB HBM3, 79.6 GB"
  assert_line "[SETUP-H100] CUDA 13.0"
  assert_line "[SETUP-H100] NVIDIA driver 580.82.07: torch 2.13.0 from PyPI (built for CUDA 13.0, needs driver >= 580.65.06)"
  assert_line --partial "[SETUP-H100] creating conda env weatherman from environment-remote.yml"
  assert_line "[SETUP-H100] torch 2.13.0 (CUDA 13.0) sees NVIDIA H100 80GB HBM3; bf16 matmul OK (stub)"
  assert_line "✅ SUCCESS: prefetch_attention.py passed (stub)"
  assert_line "[SETUP-H100] next: scripts/train_h100_runpod.sh"
  assert_equal "${lines[-1]}" "✅ SUCCESS: h100 setup complete"
  run grep -F "scripts/prefetch_attention.py --config configs/training_config_h100.yaml --tag SETUP-H100" "$STUB_LOG"
  assert_success
  run grep -c "^conda env create -n weatherman -f $REPO/logs/environment-remote.h100.yml$" "$STUB_LOG"
  assert_output 1
  run diff "$REPO/environment-remote.yml" "$REPO/logs/environment-remote.h100.yml"
  assert_success
  run grep -F "check_storage.py --path $REPO --platform h100 --output-dir $REPO/outputs/weatherman-h100" "$STUB_LOG"
  assert_success
  run grep -F "scripts/validate_environment.py --env=h100" "$STUB_LOG"
  assert_success
  run grep -F "scripts/validate_training_config.py --config configs/training_config_h100.yaml" "$STUB_LOG"
  assert_success
}

@test "a GPU that is not an H100 80GB is a WARNING naming it, and setup still succeeds" {
  STUB_GPU="NVIDIA A100-SXM4-40GB, 40960" run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  assert_line --partial "⚠️ WARNING: GPU is NVIDIA A100-SXM4-40GB with 40.0 GB, not an H100 80GB"
  assert_equal "${lines[-1]}" "✅ SUCCESS: h100 setup complete"
}

@test "an older driver (550, CUDA 12.4) gets torch built for CUDA 12.8 from PyTorch's index, decided before the env is built" {
  STUB_DRIVER=550.54.15 STUB_CUDA=12.4 run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  assert_line "[SETUP-H100] NVIDIA driver 550.54.15 is older than the 580.65.06 the PyPI wheel (CUDA 13.0) needs: installing 2.13.0+cu128 (CUDA 12.8) from https://download.pytorch.org/whl/cu128"
  run grep -n -e "torch_build choose" -e "^conda env create" "$STUB_LOG"
  assert_line --index 0 --partial "torch_build choose --driver 550.54.15"
  assert_line --index 1 --partial "conda env create -n weatherman -f $REPO/logs/environment-remote.h100.yml"
  run grep -c -e "- --extra-index-url https://download.pytorch.org/whl/cu128" -e "- torch==2.13.0+cu128" "$REPO/logs/environment-remote.h100.yml"
  assert_output 2
}

@test "a driver too old for any torch build (520, CUDA 11.8) is an ERROR naming the template, before conda is touched" {
  STUB_DRIVER=520.61.05 STUB_CUDA=11.8 run -1 "$REPO/scripts/setup_runpod_h100.sh"
  assert_equal "${lines[-2]}" "❌ ERROR: NVIDIA driver 520.61.05 is too old for torch 2.13.0: its CUDA builds need driver >= 530.30.02 (CUDA 12.1), the PyPI wheel >= 580.65.06"
  assert_line --partial "  ↳ deploy the pod from a RunPod PyTorch template whose \`nvidia-smi\` shows driver 580 or newer"
  run grep -c "^conda " "$STUB_LOG"
  assert_output 0
}

@test "torch that finds no GPU after the env build stops the setup before the attention step and the checkers" {
  STUB_TORCH_NO_GPU=1 run -1 "$REPO/scripts/setup_runpod_h100.sh"
  assert_equal "${lines[-2]}" "❌ ERROR: torch 2.13.0 (CUDA 13.0) finds no GPU"
  refute_line --partial "attention"
  run grep -c -e "prefetch_attention" -e "scripts/validate" "$STUB_LOG"
  assert_output 0
}

@test "each setup step prints its elapsed time and the setup its total" {
  printf '#!/usr/bin/env bash\nn=$(cat "$STUB_STATE/clock" 2>/dev/null || echo 1000)\necho "$n" && echo $((n + 75)) >"$STUB_STATE/clock"\n' >"$STUB_BIN/clock"
  chmod +x "$STUB_BIN/clock"
  TRAINKIT_CLOCK="$STUB_BIN/clock" run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  assert_line "[SETUP-H100] step GPU and driver: 1m15s (total 1m15s)"
  assert_line "[SETUP-H100] step conda env: 1m15s (total 2m30s)"
  assert_line --regexp '^\[SETUP-H100\] step (torch on the GPU|attention|data and W&B key|preflight checks): 1m15s \(total [0-9]+m[0-9]{2}s\)$'
  assert_line "[SETUP-H100] setup took 7m30s"
}

@test "without nvidia-smi setup stops with an ERROR and exit 1" {
  rm "$STUB_BIN/nvidia-smi"
  if command -v nvidia-smi >/dev/null; then skip "this machine has a real nvidia-smi"; fi
  run -1 "$REPO/scripts/setup_runpod_h100.sh"
  assert_equal "${lines[-2]}" "❌ ERROR: nvidia-smi not found: this machine has no NVIDIA driver"
}

@test "without conda setup stops with an ERROR that says how to install it" {
  rm "$STUB_BIN/conda"
  if command -v conda >/dev/null; then skip "this machine has a real conda"; fi
  run -1 "$REPO/scripts/setup_runpod_h100.sh"
  assert_equal "${lines[-2]}" "❌ ERROR: conda not found: the h100 setup builds its env from environment-remote.yml with conda"
  assert_line --partial "  ↳ install Miniforge on the volume"
}

@test "too little free disk fails check_storage and the ERROR verdict names it, after the other checks ran" {
  [[ -x "$REAL_PYTHON" ]] || skip "needs $REAL_PYTHON (make setup)"
  STUB_REAL="check_storage.py" TRAINKIT_MIN_DISK_GB=100000000 run -1 "$REPO/scripts/setup_runpod_h100.sh"
  assert_line --regexp "^❌ ERROR: only .* GB free of .* on $REPO; training needs at least"
  assert_line "✅ SUCCESS: validate_training_config.py passed (stub)"
  assert_equal "${lines[-2]}" "❌ ERROR: h100 setup incomplete: check_storage.py failed (see the ERROR lines above)"
  assert_equal "${lines[-1]}" "  ↳ fix them and re-run scripts/setup_runpod_h100.sh; finished steps are skipped"
}

@test "the attention step never builds flash-attn: off the GPU it says so, fetches nothing and setup goes on" {
  [[ -x "$REAL_PYTHON" ]] || skip "needs $REAL_PYTHON (make setup)"
  STUB_REAL="prefetch_attention.py" HF_HUB_OFFLINE=1 run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  # The test venv's torch is a CPU build: the real step says what the config resolves to here.
  assert_line "⚠️ WARNING: no CUDA here: attn_implementation resolves to sdpa; nothing to fetch"
  assert_line "✅ SUCCESS: attention ready: sdpa"
  assert_equal "${lines[-1]}" "✅ SUCCESS: h100 setup complete"
  run grep -e "pip install flash-attn" -e "install_attention" "$STUB_LOG"
  assert_failure
}

@test "no W&B key is a WARNING with setup instructions and offline logging" {
  run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  assert_line "⚠️ WARNING: no W&B API key: training will log offline to $REPO/outputs/weatherman-h100/wandb"
  assert_line --partial "↳ export WANDB_API_KEY=<key from https://wandb.ai/authorize> or run \`wandb login\`"
  WANDB_MODE=offline run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  assert_line "[SETUP-H100] W&B: WANDB_MODE=offline (no key needed)"
  refute_line --partial "no W&B API key"
}

@test "a W&B key in the environment or ~/.netrc is found and never printed" {
  WANDB_API_KEY=s3cr3t-key run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  assert_line "[SETUP-H100] W&B key found (WANDB_API_KEY)"
  refute_output --partial "s3cr3t-key"
  printf 'machine api.wandb.ai\n  login user\n  password n3trc-key\n' >"$HOME/.netrc"
  run "$REPO/scripts/setup_runpod_h100.sh"
  assert_line "[SETUP-H100] W&B key found ($HOME/.netrc)"
  refute_output --partial "n3trc-key"
}

@test "missing RunPod pod variables are a WARNING" {
  unset RUNPOD_POD_ID
  run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  assert_line "⚠️ WARNING: RunPod pod variables (RUNPOD_POD_ID) are not set: this does not look like a RunPod pod"
}

@test "missing data is a WARNING naming the file and the exact command that brings it, and the config is checked without data" {
  RUNPOD_PUBLIC_IP=203.0.113.7 RUNPOD_TCP_PORT_22=40022 run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  assert_line "⚠️ WARNING: the config's train_file data/processed/train.jsonl is missing: data/synthetic/final_train.jsonl, which setup links it to, does not exist"
  assert_line "  ↳ from your machine: scp -P 40022 data/synthetic/final_train.jsonl data/synthetic/final_validation.jsonl root@203.0.113.7:$REPO/data/synthetic/ (setup made that directory), or here, from a private HF dataset repo: hf download <user>/<dataset> --repo-type dataset --local-dir data/synthetic; then re-run scripts/setup_runpod_h100.sh"
  assert_dir_exists "$REPO/data/synthetic"
  assert_file_not_exists "$REPO/data/processed"
  run grep -E "validate_training_config.py --config configs/training_config_h100.yaml --output_dir [^ ]+ --no-data" "$STUB_LOG"
  assert_success
}

@test "a second run skips the conda env and the data links and says so" {
  add_final_data
  run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  assert_line "[SETUP-H100] linked data/processed/train.jsonl -> ../synthetic/final_train.jsonl"
  assert_equal "$(readlink "$REPO/data/processed/validation.jsonl")" "../synthetic/final_validation.jsonl"
  run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  assert_line "[SETUP-H100] conda env weatherman already matches environment-remote.yml: skipped"
  assert_line "[SETUP-H100] data/processed/train.jsonl already present: skipped"
  assert_line "[SETUP-H100] data/processed/validation.jsonl already present: skipped"
  refute_output --partial "WARNING: the config's"
  assert_equal "${lines[-1]}" "✅ SUCCESS: h100 setup complete"
  run grep -c "^conda env \(create\|update\)" "$STUB_LOG"
  assert_output 1
}

@test "a changed environment-remote.yml updates the env with --prune, and --recreate rebuilds it" {
  run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  echo "# changed" >>"$REPO/environment-remote.yml"
  run "$REPO/scripts/setup_runpod_h100.sh"
  assert_success
  assert_line --partial "[SETUP-H100] updating conda env weatherman from environment-remote.yml (--prune"
  run grep -c "^conda env update -n weatherman -f $REPO/logs/environment-remote.h100.yml --prune$" "$STUB_LOG"
  assert_output 1
  run "$REPO/scripts/setup_runpod_h100.sh" --recreate </dev/null
  assert_success
  assert_line "[SETUP-H100] removing conda env weatherman (--recreate)"
  run grep -c "^conda env \(remove -n weatherman -y\|create -n weatherman\)" "$STUB_LOG"
  assert_output 3
}

@test "setup_runpod_h100.sh --help prints its Usage header and exits 0" {
  run "$REPO_ROOT/scripts/setup_runpod_h100.sh" --help
  assert_success
  assert_line --index 0 "Usage: scripts/setup_runpod_h100.sh [--yes] [--recreate] [--config FILE]"
  run "$REPO_ROOT/scripts/setup.sh" --help
  assert_success
  assert_line --index 0 "Usage: scripts/setup.sh --platform {h100,m4,cpu} [--yes] [--recreate] [--config FILE]"
  refute_output --partial "set -euo"
}

@test "an unknown platform or argument is an ERROR with exit 1" {
  run -1 "$REPO/scripts/setup.sh" --platform tpu
  assert_output "$(printf '❌ ERROR: --platform must be h100, m4 or cpu\n  ↳ e.g. scripts/setup.sh --platform cpu')"
  run -1 "$REPO/scripts/setup_runpod_h100.sh" --frobnicate
  assert_line "❌ ERROR: unknown argument: --frobnicate"
}
