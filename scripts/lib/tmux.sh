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

# tk_forwarded_env — write the variables a trainer needs (NAME=value, NUL-separated) to a new file
# only the user can read, in a directory only the user can enter, and print the file's path. tmux
# keeps the arguments of the command that started its server for the server's whole life, where
# every user of the machine can read them (ps), so values such as WANDB_API_KEY or HF_TOKEN go
# through this file; the supervisor exports them and deletes it (tk_load_forwarded_env).
tk_forwarded_env() {
  local dir name
  dir="$(umask 077 && mktemp -d "${TMPDIR:-/tmp}/trainkit-env.XXXXXX")"
  (
    umask 077
    while IFS= read -r name; do
      printf '%s=%s\0' "$name" "${!name}"
    done < <(compgen -e | grep -E '^(TRAINKIT_|WANDB_|HF_|HUGGING_FACE_|PYTORCH_|CUDA_|NCCL_|TOKENIZERS_|OMP_|TRANSFORMERS_|PATH$|HOME$|VIRTUAL_ENV$|CONDA_)' || true) >"$dir/env"
  )
  printf '%s\n' "$dir/env"
}

# tk_load_forwarded_env FILE — export the variables tk_forwarded_env wrote to FILE, then delete FILE
# and its directory. A FILE that is not the user's own is refused.
tk_load_forwarded_env() {
  local file="$1" pair
  [[ -f "$file" && -O "$file" && -z "$(find "$file" -perm -040 -o -perm -004)" ]] ||
    tk_die "$TK_EXIT_ERROR" "the forwarded environment $file is missing or readable by others" \
      "launch through scripts/train.sh, which writes it with mode 600"
  while IFS= read -r -d '' pair; do
    export "${pair%%=*}=${pair#*=}"
  done <"$file"
  rm -f "$file"
  rmdir "$(dirname "$file")" 2>/dev/null || true
}
