# shellcheck shell=bash
# tmux for the launch scripts; $TRAINKIT_TMUX_SOCKET selects a private server (tests use one).

# tk_tmux ARGS... — run tmux on trainkit's server.
tk_tmux() {
  if [[ -n "${TRAINKIT_TMUX_SOCKET:-}" ]]; then
    tmux -L "$TRAINKIT_TMUX_SOCKET" "$@"
  else
    tmux "$@"
  fi
}

# tk_session_alive NAME — succeed when tmux session NAME exists.
tk_session_alive() {
  tk_tmux has-session -t "=$1" 2>/dev/null
}

# tk_forwarded_env — print -e VAR=value arguments for the variables a trainer needs, NUL-separated.
tk_forwarded_env() {
  local name
  while IFS= read -r name; do
    printf -- '-e\0%s=%s\0' "$name" "${!name}"
  done < <(compgen -e | grep -E '^(TRAINKIT_|WANDB_|HF_|HUGGING_FACE_|PYTORCH_|CUDA_|NCCL_|TOKENIZERS_|OMP_|TRANSFORMERS_|PATH$|HOME$|VIRTUAL_ENV$|CONDA_)' || true)
}
