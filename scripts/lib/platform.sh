# shellcheck shell=bash
# Platform probes for the setup scripts: what GPU, CUDA, chip, memory and credentials this
# machine has, and small idempotent actions (data links, stamps). Each probe reads one
# command (nvidia-smi, nvcc, uname, system_profiler, sysctl, conda), so tests stub it on PATH.

# tk_gpu_name_and_memory — print "NAME, MEMORY_MIB" of the first NVIDIA GPU; fail when nvidia-smi cannot tell.
tk_gpu_name_and_memory() {
  local line
  line="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1)" || return 1
  [[ "$line" == *,* ]] || return 1
  printf '%s\n' "$line"
}

# tk_cuda_version — print the CUDA version the driver supports (nvidia-smi header), else nvcc's; fail when neither says.
tk_cuda_version() {
  local version=""
  if command -v nvidia-smi >/dev/null; then
    version="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -n 1)"
  fi
  if [[ -z "$version" ]] && command -v nvcc >/dev/null; then
    version="$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9.]*\),.*/\1/p' | head -n 1)"
  fi
  [[ -n "$version" ]] || return 1
  printf '%s\n' "$version"
}

# tk_version_ge A B — succeed when dotted version A is at least B (12.4 >= 12.1, 11.8 < 12.1).
tk_version_ge() {
  [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -t. -k1,1n -k2,2n -k3,3n | head -n 1)" == "$2" ]]
}

# tk_mib_to_gb MIB — print MIB as GB (2**30 bytes, as nvidia-smi counts) with one decimal.
tk_mib_to_gb() {
  awk -v mib="$1" 'BEGIN { printf "%.1f\n", mib / 1024 }'
}

# tk_is_h100_80gb NAME MEMORY_MIB — succeed when NAME is an H100 with about 80 GB (trainkit/preflight/gpu_models.py decides).
tk_is_h100_80gb() {
  tk_runctl is-h100-80gb "$1" "$2"
}

# tk_on_runpod — succeed inside a RunPod pod (RUNPOD_POD_ID is set).
tk_on_runpod() {
  [[ -n "${RUNPOD_POD_ID:-}" ]]
}

# tk_mac_chip — print the Mac's chip ("Apple M4 Pro") or Intel processor name from system_profiler; fail off macOS.
tk_mac_chip() {
  local chip
  [[ "$(uname -s)" == "Darwin" ]] || return 1
  chip="$(system_profiler SPHardwareDataType 2>/dev/null |
    sed -n -e 's/^[[:space:]]*Chip:[[:space:]]*//p' -e 's/^[[:space:]]*Processor Name:[[:space:]]*//p' | head -n 1)"
  [[ -n "$chip" ]] || return 1
  printf '%s\n' "$chip"
}

# tk_is_apple_silicon — succeed on a Mac with an Apple M-series chip (system_profiler's "Chip: Apple M…").
tk_is_apple_silicon() {
  local chip
  chip="$(tk_mac_chip)" && [[ "$chip" == "Apple M"* ]]
}

# tk_is_rosetta — succeed when this shell runs as x86_64 under Rosetta on Apple Silicon (uname -m says x86_64).
tk_is_rosetta() {
  [[ "$(uname -m)" == "x86_64" ]] && tk_is_apple_silicon
}

# tk_memsize_gb — print the Mac's unified memory in whole GB (sysctl -n hw.memsize, 2**30 bytes); fail when unknown.
tk_memsize_gb() {
  local bytes
  bytes="$(sysctl -n hw.memsize 2>/dev/null)" || return 1
  [[ "$bytes" =~ ^[0-9]+$ ]] || return 1
  printf '%s\n' "$((bytes / 1073741824))"
}

# tk_python_version PYTHON — print PYTHON's version as X.Y.Z; fail when it does not run.
tk_python_version() {
  "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null
}

# tk_wandb_key_present — print where the W&B key is (WANDB_API_KEY or ~/.netrc), never the key; fail when none.
tk_wandb_key_present() {
  if [[ -n "${WANDB_API_KEY:-}" ]]; then
    printf 'WANDB_API_KEY\n'
  elif grep -qs 'api\.wandb\.ai' "${HOME:-/nonexistent}/.netrc"; then
    printf '%s\n' "$HOME/.netrc"
  else
    return 1
  fi
}

# tk_conda_bin — print the conda executable (on PATH, else $CONDA_EXE); fail when there is none.
tk_conda_bin() {
  if command -v conda >/dev/null; then
    command -v conda
  elif [[ -n "${CONDA_EXE:-}" && -x "$CONDA_EXE" ]]; then
    printf '%s\n' "$CONDA_EXE"
  else
    return 1
  fi
}

# tk_conda_env_prefix CONDA NAME — print the prefix of conda env NAME (from `conda env list`); fail when absent.
tk_conda_env_prefix() {
  local prefix
  prefix="$("$1" env list 2>/dev/null | awk -v name="$2" '$1 == name { print $NF; exit }')"
  [[ -n "$prefix" && -d "$prefix" ]] || return 1
  printf '%s\n' "$prefix"
}

# tk_file_hash FILE — print the SHA-256 of FILE (sha256sum on Linux, shasum on macOS).
tk_file_hash() {
  if command -v sha256sum >/dev/null; then
    sha256sum "$1" | awk '{ print $1 }'
  else
    shasum -a 256 "$1" | awk '{ print $1 }'
  fi
}

# tk_up_to_date TARGET DEPS... — succeed when TARGET exists and no DEP is newer (make's rule).
tk_up_to_date() {
  local target="$1" dep
  shift
  [[ -e "$target" ]] || return 1
  for dep in "$@"; do
    [[ "$dep" -nt "$target" ]] && return 1
  done
  return 0
}

# tk_link_data LINK TARGET — symlink LINK to TARGET (a path relative to LINK's dir) when LINK is missing
# and TARGET exists; print created, present or missing.
tk_link_data() {
  local link="$1" target="$2" dir made=0
  dir="$(dirname "$link")"
  if [[ -e "$link" ]]; then
    printf 'present\n'
    return 0
  fi
  [[ -d "$dir" ]] || { mkdir -p "$dir" && made=1; }
  if [[ -e "$dir/$target" ]]; then
    ln -sfn "$target" "$link"
    printf 'created\n'
  else
    if ((made)); then rmdir "$dir" 2>/dev/null || true; fi
    printf 'missing\n'
  fi
}

# tk_driver_version — print the NVIDIA driver version (nvidia-smi, e.g. 550.54.15); fail when nvidia-smi cannot tell.
tk_driver_version() {
  local version
  version="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ')" || return 1
  [[ -n "$version" ]] || return 1
  printf '%s\n' "$version"
}

# tk_host_python [CONDA] — print a Python that runs before the conda env exists: $TRAINKIT_PYTHON, conda's base
# Python, else python3.
tk_host_python() {
  local base
  if [[ -n "${TRAINKIT_PYTHON:-}" ]]; then
    printf '%s\n' "$TRAINKIT_PYTHON"
  elif [[ -n "${1:-}" ]] && base="$("$1" info --base 2>/dev/null)" && [[ -x "$base/bin/python" ]]; then
    printf '%s\n' "$base/bin/python"
  else
    command -v python3
  fi
}

# tk_find_python — print the first Python 3.10–3.12 among python3 on PATH, Homebrew's ($HOMEBREW_PREFIX, else
# /opt/homebrew and /usr/local), pyenv's ($PYENV_ROOT/versions, default ~/.pyenv), then python3.12, python3.11
# and python3.10 on PATH; fail when there is none (macOS's own python3 is 3.9).
tk_find_python() {
  local prefix minor dir name candidate version
  local -a candidates=()
  candidate="$(command -v python3)" && candidates+=("$candidate")
  for prefix in ${HOMEBREW_PREFIX:-/opt/homebrew /usr/local}; do
    candidates+=("$prefix/bin/python3.12" "$prefix/bin/python3.11" "$prefix/bin/python3.10")
  done
  for minor in 12 11 10; do
    for dir in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3."$minor".*/bin; do
      candidates+=("$dir/python")
    done
  done
  for name in python3.12 python3.11 python3.10; do
    candidate="$(command -v "$name")" && candidates+=("$candidate")
  done
  for candidate in "${candidates[@]}"; do
    [[ -x "$candidate" ]] || continue
    version="$(tk_python_version "$candidate")" || continue
    if tk_version_ge "$version" 3.10 && ! tk_version_ge "$version" 3.13; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}
