#!/usr/bin/env bash
# Usage: scripts/setup.sh --platform {h100,m4,cpu} [--yes] [--recreate] [--config FILE]
#
# Prepare this machine to train, then run the preflight checkers. Idempotent: a second run
# skips what is done and says so. Every decision prints a tagged line, each step its elapsed
# time ("step <name>: 1m05s (total 3m10s)") and the end the total; the last line is one
# verdict: "✅ SUCCESS: <platform> setup complete" (exit 0, warnings allowed) or "❌ ERROR: …"
# (exit 1). The platform wrappers are scripts/setup_runpod_h100.sh and scripts/setup_m4_local.sh.
#
#   h100  RunPod pod: RunPod variables, an H100 80GB (another GPU warns), the NVIDIA driver, which
#         picks the torch wheel before anything is built (>= 580.65.06: PyPI's, built for CUDA 13.0;
#         >= 530.30.02: +cu128 from PyTorch's index; older: refused; trainkit/preflight/torch_build.py), the
#         conda env from environment-remote.yml with that pin (created; updated when it changed;
#         else reused), torch checked on the GPU (CUDA build, cuda.is_available(), a bf16 matmul),
#         the attention kernel attn_implementation: auto picks (flash-attn 3/2 from the Hub through
#         the pinned `kernels`, fetched and checked on the GPU; never a source build), data links,
#         W&B key, then validate_environment, check_gpu, check_storage (50 GB free, outputs and
#         HF cache on /workspace) and validate_training_config.
#   m4    Apple-Silicon Mac: chip, unified memory (< 16 GB error), Python 3.10-3.12, .venv-local/
#         from requirements-local.txt (the pinned torch, mlx and mlx-lm), MPS and MLX on Metal
#         (check_gpu), data links, W&B key, the checkers (with the duration from FLOPs and the chip).
#   cpu   any machine: .venv-local/ and the tiny model (what `make setup` builds), the checkers on
#         configs/smoke.yaml. `make demo` runs this.
#
#   --config FILE  config to validate (default: configs/training_config_h100.yaml,
#                  configs/training_config_m4.yaml or configs/smoke.yaml)
#   --recreate     remove and rebuild the conda env (h100) or .venv-local/ (m4, cpu)
#   --yes          do not ask (the default answers are taken anyway when stdin is not a terminal)
#
# Data: data/processed/{train,validation}.jsonl are linked to data/synthetic/final_*.jsonl when
# those exist; without them the config is validated with --no-data and a WARNING gives the exact
# command that brings them (scp into data/synthetic/, which setup makes, or hf download).
# Environment: TRAINKIT_PYTHON runs the checkers (default: the conda env's python on h100,
# .venv-local/bin/python elsewhere); TRAINKIT_CONDA_ENV (default weatherman);
# TRAINKIT_MIN_DISK_GB free disk required (default: check_storage.py --platform's, 50 GB on h100,
# 30 on m4, 1 on cpu);
# PYTHON creates .venv-local/ (default: the first Python 3.10–3.12 from Homebrew, pyenv or PATH).
# conda and pip output: logs/setup_<platform>_*.log.
set -euo pipefail
# shellcheck source=lib/protocol.sh
source "$(dirname "$0")/lib/protocol.sh"
# shellcheck source=lib/usage.sh
source "$(dirname "$0")/lib/usage.sh"
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
# shellcheck source=lib/platform.sh
source "$(dirname "$0")/lib/platform.sh"
# shellcheck source=lib/steps.sh
source "$(dirname "$0")/lib/steps.sh"
tk_maybe_help "$0" "$@"
# Ctrl-C: once the command running now has ended, one ERROR line and the shell's 130, never a SUCCESS last.
trap 'tk_die 130 "setup interrupted (Ctrl-C)" "re-run $0 with the same arguments; finished steps are skipped"' INT

platform="" config="" recreate=0 assume_yes=0
# need_value OPTION [VALUE] — fail unless OPTION was given a value.
need_value() {
  [[ $# -ge 2 && -n "$2" ]] || tk_die "$TK_EXIT_ERROR" "$1 needs a value" "see scripts/setup.sh --help"
}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --platform | --config)
      need_value "$@"
      if [[ "$1" == "--config" ]]; then
        config="$2"
      elif [[ -n "$platform" && "$platform" != "$2" ]]; then
        tk_die "$TK_EXIT_ERROR" "--platform given twice ($platform, $2)" "pass one platform: h100, m4 or cpu"
      else
        platform="$2"
      fi
      shift 2
      ;;
    --platform=*) platform="${1#*=}"; shift ;;
    --config=*) config="${1#*=}"; shift ;;
    --recreate) recreate=1; shift ;;
    --yes | -y) assume_yes=1; shift ;;
    *) tk_die "$TK_EXIT_ERROR" "unknown argument: $1" "see scripts/setup.sh --help" ;;
  esac
done

case "$platform" in
  h100) default_config=configs/training_config_h100.yaml rerun=scripts/setup_runpod_h100.sh next=scripts/train_h100_runpod.sh ;;
  m4) default_config=configs/training_config_m4.yaml rerun=scripts/setup_m4_local.sh next=scripts/train_m4_local.sh ;;
  cpu) default_config=configs/smoke.yaml rerun="scripts/setup.sh --platform cpu" next="scripts/train.sh --platform cpu" ;;
  *) tk_die "$TK_EXIT_ERROR" "--platform must be h100, m4 or cpu" "e.g. scripts/setup.sh --platform cpu" ;;
esac
# check_storage.py holds each platform's disk thresholds; TRAINKIT_MIN_DISK_GB overrides the required GB.
disk_flags=(--platform "$platform")
[[ -z "${TRAINKIT_MIN_DISK_GB:-}" ]] || disk_flags+=(--min-gb "$TRAINKIT_MIN_DISK_GB")
tag="SETUP-$(printf %s "$platform" | tr '[:lower:]' '[:upper:]')"

# A relative --config is taken from the caller's directory when it is there, else from the repo.
root="$(tk_repo_root)"
if [[ -n "$config" && "$config" != /* && -f "$config" ]]; then
  config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"
fi
cd "$root"
config="${config:-$default_config}"
[[ -f "$config" ]] || tk_die "$TK_EXIT_ERROR" "config file not found: $config" "pass --config configs/<name>.yaml"
output_dir="$(tk_config_value "$config" output_dir outputs/run)"
[[ "$output_dir" == /* ]] || output_dir="$root/$output_dir"
log="$root/logs/setup_${platform}_$(tk_timestamp).log"
failed=()      # checkers that reported an error
data_flag=()   # --no-data when the config's data files are missing

# say MESSAGE — print a "[SETUP-<PLATFORM>] MESSAGE" line.
say() { tk_section "$tag" "$1"; }

# step NAME — print how long the previous step took, and start step NAME.
step() { tk_step_begin "$tag" "$1"; }

# confirm QUESTION — ask on a terminal unless --yes; succeed on yes (the default).
confirm() {
  local answer=""
  ((assume_yes)) && return 0
  [[ -t 0 ]] || return 0
  read -r -p "$1 [Y/n] " answer || return 0
  [[ -z "$answer" || "$answer" == [Yy]* ]]
}

# logged CMD... — run CMD with its output appended to the setup log.
logged() {
  mkdir -p "$(dirname "$log")"
  "$@" >>"$log" 2>&1
}

# die_with_log MESSAGE HINT — show the end of the setup log, then exit 1 with MESSAGE.
die_with_log() {
  if [[ -s "$log" ]]; then
    say "last lines of $log:"
    tail -n 20 "$log" | sed 's/^/    /'
  fi
  tk_die "$TK_EXIT_ERROR" "$1" "$2"
}

# run_check SCRIPT ARGS... — run a Python checker; remember it when it fails (the verdict names it).
run_check() {
  if ! "$py" "scripts/$1" "${@:2}"; then
    failed+=("$1")
  fi
}

# check_python — Python >= 3.10 for the venv: TRAINKIT_PYTHON, the existing venv, $PYTHON, else the first
# Python 3.10–3.12 tk_find_python finds (Homebrew, pyenv, PATH); those two become base_python, which builds the venv.
check_python() {
  local python version
  if [[ -n "${TRAINKIT_PYTHON:-}" ]]; then
    python="$TRAINKIT_PYTHON"
  elif [[ -x "$root/.venv-local/bin/python" ]] && ((!recreate)); then
    python="$root/.venv-local/bin/python"
  elif [[ -n "${PYTHON:-}" ]]; then
    python="$PYTHON" base_python="$PYTHON"
  else
    python="$(tk_find_python)" ||
      tk_die "$TK_EXIT_ERROR" "no Python 3.10–3.12 found: looked in Homebrew, pyenv and PATH (python3.12, python3.11, python3.10, python3)" \
        "install one: brew install python@3.11 on a Mac (setup finds it by itself), apt-get install python3.11-venv on Linux, or pyenv install 3.11; or set PYTHON=/path/to/python3.11"
    base_python="$python"
  fi
  version="$(tk_python_version "$python")" ||
    tk_die "$TK_EXIT_ERROR" "no working Python at $python: trainkit needs Python >= 3.10" \
      "install Python 3.11 (brew install python@3.11 on a Mac, apt-get install python3.11-venv on Linux) or set PYTHON=/path/to/python3.11"
  tk_version_ge "$version" 3.10 ||
    tk_die "$TK_EXIT_ERROR" "Python $version ($python) is too old: trainkit needs Python >= 3.10" \
      "install Python 3.11 (brew install python@3.11) and re-run; setup finds it by itself, or set PYTHON=python3.11"
  say "Python $version ($python)"
}

# ensure_venv — .venv-local/ with requirements-local.txt (+ dev tools), as `make setup` builds it;
# skipped when its stamp is newer than the requirements.
ensure_venv() {
  local venv="$root/.venv-local" base="${base_python:-${PYTHON:-python3}}" stamp torch_pin
  stamp="$venv/.trainkit-deps"
  if ((recreate)) && [[ -e "$venv" ]]; then
    confirm "Remove .venv-local/ and rebuild it?" ||
      tk_die "$TK_EXIT_ERROR" "cancelled: .venv-local/ left as it is" "re-run without --recreate, or answer y"
    say "removing .venv-local/ (--recreate)"
    rm -rf "$venv"
  fi
  if tk_up_to_date "$stamp" requirements-local.txt requirements-dev.txt; then
    say ".venv-local/ is up to date with requirements-local.txt: skipped"
    return 0
  fi
  if [[ ! -x "$venv/bin/python" ]]; then
    say "creating .venv-local/ with $base"
    logged "$base" -m venv "$venv" ||
      die_with_log "could not create .venv-local/ with $base" \
        "install Python's venv module (apt-get install python3-venv) or set PYTHON=/path/to/python3.11"
  fi
  torch_pin="$(grep -E '^torch==' requirements-local.txt | head -n 1)"
  say "installing requirements-local.txt into .venv-local/ (a few minutes; output in $log)"
  if ! { logged "$venv/bin/python" -m pip install --quiet "${torch_pin:-torch}" &&
    logged "$venv/bin/python" -m pip install --quiet -r requirements-dev.txt; }; then
    die_with_log "pip could not install requirements-local.txt into .venv-local/" \
      "check the network and the log above, then re-run (--recreate starts from a clean venv)"
  fi
  touch "$stamp"
  say ".venv-local/ ready"
}

# data_command — the exact command that puts data/synthetic/final_{train,validation}.jsonl on this machine.
data_command() {
  local dest="$root/data/synthetic/"
  if [[ "$platform" == h100 ]]; then
    printf 'from your machine: scp -P %s data/synthetic/final_train.jsonl data/synthetic/final_validation.jsonl root@%s:%s (setup made that directory), or here, from a private HF dataset repo: hf download <user>/<dataset> --repo-type dataset --local-dir data/synthetic; then re-run %s' \
      "${RUNPOD_TCP_PORT_22:-<ssh port>}" "${RUNPOD_PUBLIC_IP:-<pod ip>}" "$dest" "$rerun"
  else
    printf 'cp /path/to/final_train.jsonl /path/to/final_validation.jsonl %s (setup made that directory), then re-run %s' "$dest" "$rerun"
  fi
}

# link_data — link data/processed/*.jsonl to data/synthetic/final_*.jsonl; warn when the config's data is missing,
# naming the file and the command that brings it.
link_data() {
  local name state key value
  mkdir -p data/synthetic
  for name in train validation; do
    state="$(tk_link_data "data/processed/$name.jsonl" "../synthetic/final_$name.jsonl")"
    case "$state" in
      created) say "linked data/processed/$name.jsonl -> ../synthetic/final_$name.jsonl" ;;
      present) say "data/processed/$name.jsonl already present: skipped" ;;
    esac
  done
  for key in train_file validation_file; do
    value="$(tk_config_value "$config" "$key")"
    [[ -n "$value" ]] || continue
    if [[ ! -e "$value" ]]; then
      name="${key%_file}"
      if [[ "$value" == "data/processed/$name.jsonl" ]]; then
        tk_warning "the config's $key $value is missing: data/synthetic/final_$name.jsonl, which setup links it to, does not exist" \
          "$(data_command)"
      else
        tk_warning "the config's $key $value is missing" \
          "create it or point $key in $config at your data; until then the config is checked without data"
      fi
      data_flag=(--no-data)
    fi
  done
}

# wandb_check — say where the W&B key is (never the key), or warn that training logs offline.
wandb_check() {
  local where
  if where="$(tk_wandb_key_present)"; then
    say "W&B key found ($where)"
  elif [[ "${WANDB_MODE:-}" == offline || "${WANDB_MODE:-}" == disabled ]]; then
    say "W&B: WANDB_MODE=$WANDB_MODE (no key needed)"
  else
    tk_warning "no W&B API key: training will log offline to $output_dir/wandb" \
      "export WANDB_API_KEY=<key from https://wandb.ai/authorize> or run \`wandb login\`; sync offline runs later with \`wandb sync\`"
  fi
}

# setup_h100 — RunPod checks, GPU and CUDA, conda env, attention kernels, data, W&B, checkers.
setup_h100() {
  local gpu name mib gb cuda driver conda env_name spec want prefix="" action=""
  say "RunPod H100 setup in $root"
  step "GPU and driver"
  if tk_on_runpod; then
    say "RunPod pod $RUNPOD_POD_ID"
  else
    tk_warning "RunPod pod variables (RUNPOD_POD_ID) are not set: this does not look like a RunPod pod" \
      "fine on another CUDA machine; on RunPod run this inside the pod, with the repo on the /workspace volume"
  fi

  command -v nvidia-smi >/dev/null ||
    tk_die "$TK_EXIT_ERROR" "nvidia-smi not found: this machine has no NVIDIA driver" \
      "start a RunPod pod with an H100 GPU, or use scripts/setup.sh --platform cpu on a machine without one"
  gpu="$(tk_gpu_name_and_memory)" ||
    tk_die "$TK_EXIT_ERROR" "nvidia-smi cannot query the GPU" "run nvidia-smi to see why (driver not loaded, no GPU attached to the pod)"
  name="$(printf %s "${gpu%,*}" | sed 's/^ *//; s/ *$//')"
  mib="$(printf %s "${gpu##*,}" | tr -d ' ')"
  [[ "$mib" =~ ^[0-9]+$ ]] || mib=0
  gb="$(tk_mib_to_gb "$mib")"
  if tk_is_h100_80gb "$name" "$mib"; then
    say "GPU: $name, $gb GB"
  else
    tk_warning "GPU is $name with $gb GB, not an H100 80GB: $config may not fit or will run slower" \
      "check_gpu.py below recommends a config for this GPU; or start an H100 80GB pod"
  fi
  cuda="$(tk_cuda_version)" ||
    tk_die "$TK_EXIT_ERROR" "cannot read the CUDA version from nvidia-smi or nvcc" "check the NVIDIA driver: nvidia-smi should show 'CUDA Version'"
  say "CUDA $cuda"
  # The torch wheel this driver runs, or a refusal, before anything is built (trainkit/preflight/torch_build.py).
  driver="$(tk_driver_version)" ||
    tk_die "$TK_EXIT_ERROR" "nvidia-smi does not report the NVIDIA driver version" "run nvidia-smi to see why (driver not loaded, no GPU attached to the pod)"
  spec="$root/logs/environment-remote.h100.yml"
  "$(tk_host_python "$(tk_conda_bin || true)")" -m trainkit.preflight.torch_build choose --driver "$driver" \
    --spec "$root/environment-remote.yml" --write "$spec" --tag "$tag" || exit "$TK_EXIT_ERROR"

  conda="$(tk_conda_bin)" ||
    tk_die "$TK_EXIT_ERROR" "conda not found: the h100 setup builds its env from environment-remote.yml with conda" \
      "install Miniforge on the volume: curl -fsSLo /tmp/miniforge.sh https://github.com/conda-forge/miniforge/releases/latest/download/Miniforge3-Linux-x86_64.sh && bash /tmp/miniforge.sh -b -p /workspace/miniforge3 && export PATH=/workspace/miniforge3/bin:\$PATH, then re-run"
  env_name="${TRAINKIT_CONDA_ENV:-weatherman}"
  want="$(tk_file_hash "$spec")"
  prefix="$(tk_conda_env_prefix "$conda" "$env_name")" || prefix=""
  if [[ -n "$prefix" ]] && ((recreate)); then
    confirm "Remove conda env $env_name ($prefix) and rebuild it?" ||
      tk_die "$TK_EXIT_ERROR" "cancelled: conda env $env_name left as it is" "re-run without --recreate, or answer y"
    say "removing conda env $env_name (--recreate)"
    logged "$conda" env remove -n "$env_name" -y ||
      die_with_log "conda could not remove env $env_name" "remove it by hand: conda env remove -n $env_name, then re-run"
    prefix=""
  fi
  step "conda env"
  if [[ -z "$prefix" ]]; then
    say "creating conda env $env_name from environment-remote.yml (several minutes; output in $log)"
    logged "$conda" env create -n "$env_name" -f "$spec" ||
      die_with_log "conda could not create env $env_name from environment-remote.yml" \
        "check the network and the log above, then re-run (a half-built env is updated, or use --recreate)"
    prefix="$(tk_conda_env_prefix "$conda" "$env_name")" ||
      tk_die "$TK_EXIT_ERROR" "conda created env $env_name but \`conda env list\` does not show it" "check \`conda env list\` and re-run"
    action=created
  elif [[ "$(cat "$prefix/.trainkit-env" 2>/dev/null)" == "$want" ]]; then
    say "conda env $env_name already matches environment-remote.yml: skipped"
  else
    say "updating conda env $env_name from environment-remote.yml (--prune; output in $log)"
    logged "$conda" env update -n "$env_name" -f "$spec" --prune ||
      die_with_log "conda could not update env $env_name from environment-remote.yml" \
        "check the log above; re-run with --recreate to rebuild the env from scratch"
    action=updated
  fi
  if [[ -n "$action" ]]; then
    printf '%s\n' "$want" >"$prefix/.trainkit-env"
    say "conda env $env_name $action ($prefix)"
  fi
  py="${TRAINKIT_PYTHON:-$prefix/bin/python}"
  [[ -x "$py" ]] || command -v "$py" >/dev/null ||
    tk_die "$TK_EXIT_ERROR" "conda env $env_name has no Python at $py" "rebuild it: $rerun --recreate"
  step "torch on the GPU"
  "$py" -m trainkit.preflight.torch_build verify --tag "$tag" || exit "$TK_EXIT_ERROR"

  step "attention"
  # The Hub flash-attn kernel attn_implementation: auto picks (kernels, pinned in the env), fetched into the HF
  # cache and checked on the GPU now, so no run downloads it; never a flash-attn source build.
  run_check prefetch_attention.py --config "$config" --tag "$tag"

  step "data and W&B key"
  link_data
  wandb_check
  step "preflight checks"
  run_check validate_environment.py --env=h100
  run_check check_gpu.py --env h100
  run_check check_storage.py --path "$root" "${disk_flags[@]}" --output-dir "$output_dir"
  run_check validate_training_config.py --config "$config" --output_dir "$output_dir" ${data_flag[@]+"${data_flag[@]}"} \
    --remember "$(tk_preflight_dir "$root")"
}

# setup_m4 — chip, unified memory, Python, .venv-local/, data, W&B, checkers (MPS and Metal through check_gpu).
setup_m4() {
  local chip mem
  say "Apple-Silicon Mac setup in $root"
  step "chip and memory"
  [[ "$(uname -s)" == "Darwin" ]] ||
    tk_die "$TK_EXIT_ERROR" "not a Mac ($(uname -s)): the m4 setup needs an Apple-Silicon Mac" \
      "on Linux use scripts/setup.sh --platform cpu, or scripts/setup_runpod_h100.sh on an H100 pod"
  chip="$(tk_mac_chip)" || chip="unknown chip"
  tk_is_apple_silicon ||
    tk_die "$TK_EXIT_ERROR" "this Mac has no Apple-Silicon chip ($chip): MPS training needs an M1–M4" \
      "train on a RunPod H100 instead: scripts/setup_runpod_h100.sh"
  if tk_is_rosetta; then
    tk_die "$TK_EXIT_ERROR" "this shell runs under Rosetta (x86_64) on $chip: Python would not see the GPU" \
      "open a native arm64 terminal (arch -arm64 /bin/zsh) and re-run"
  fi
  say "chip: $chip"
  mem="$(tk_memsize_gb)" ||
    tk_die "$TK_EXIT_ERROR" "cannot read the unified memory size (sysctl -n hw.memsize)" "run sysctl -n hw.memsize to see why"
  if ((mem < 16)); then
    tk_die "$TK_EXIT_ERROR" "$mem GB unified memory is too little: a 7-8B LoRA needs at least 16 GB, even with a 4-bit base" \
      "train on a RunPod H100 instead: scripts/setup_runpod_h100.sh"
  fi
  say "unified memory: $mem GB (the preflight sizes the run to the GPU's working set)"

  step "Python and .venv-local/"
  check_python
  ensure_venv
  py="$(tk_python m4)"
  export PYTORCH_ENABLE_MPS_FALLBACK=1
  step "data and W&B key"
  link_data
  wandb_check
  step "preflight checks"
  run_check validate_environment.py --env m4
  run_check check_gpu.py --env m4
  run_check check_storage.py --path "$root" "${disk_flags[@]}" --output-dir "$output_dir"
  run_check validate_training_config.py --config "$config" --output_dir "$output_dir" ${data_flag[@]+"${data_flag[@]}"} \
    --remember "$(tk_preflight_dir "$root")"
  say "the duration estimate above is computed from FLOPs for this chip; keep the Mac on power and awake while it trains"
}

# setup_cpu — Python, .venv-local/ and the tiny model (as `make setup`), checkers on the smoke config.
setup_cpu() {
  say "CPU setup in $root: the tiny local model, no GPU and no network needed"
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
  step "Python and .venv-local/"
  check_python
  ensure_venv
  py="$(tk_python cpu)"
  step "tiny model"
  if tk_up_to_date models/tiny-chat/config.json .venv-local/.trainkit-deps scripts/make_tiny_model.py \
    data/sample/train.jsonl data/sample/validation.jsonl; then
    say "tiny model models/tiny-chat/ is up to date: skipped"
  else
    say "building the tiny model models/tiny-chat/"
    "$py" scripts/make_tiny_model.py ||
      tk_die "$TK_EXIT_ERROR" "could not build the tiny model models/tiny-chat/" "see the output above; re-run with --recreate for a clean .venv-local/"
  fi
  step "preflight checks"
  run_check validate_environment.py --env cpu
  run_check check_storage.py --path "$root" "${disk_flags[@]}" --output-dir "$output_dir"
  run_check validate_training_config.py --config "$config" --output_dir "$output_dir" --remember "$(tk_preflight_dir "$root")"
}

py="" base_python=""
"setup_$platform"
tk_step_end "$tag"

if ((${#failed[@]})); then
  names="$(printf '%s, ' "${failed[@]}")"
  tk_die "$TK_EXIT_ERROR" "$platform setup incomplete: ${names%, } failed (see the ERROR lines above)" \
    "fix them and re-run $rerun; finished steps are skipped"
fi
say "next: $next"
tk_success "$platform setup complete"
