# shellcheck shell=bash
# What scripts/check_training_status.sh finds out in the shell about a run: its output dir,
# log, GPU and W&B run; the report itself is trainkit.supervise.runctl's (trainkit/supervise/status_report.py).
# Needs lib/common.sh (tk_repo_root, tk_python, tk_runctl), lib/lock.sh (tk_lock_get)
# and lib/protocol.sh (tk_section).

# tk_abs_path PATH [BASE] — print PATH made absolute against BASE (default: the current directory).
tk_abs_path() {
  local path="$1" base="${2:-$PWD}"
  [[ "$path" == /* ]] || path="$base/$path"
  if [[ -d "$path" ]]; then
    (cd "$path" && pwd -P)
  else
    printf '%s\n' "${path%/}"
  fi
}

# tk_log_output_dir LOG — print the output dir named by the first train.py header in LOG, or nothing.
tk_log_output_dir() {
  [[ -f "$1" ]] || return 0
  awk 'NR > 200 { exit } /^\[TRAINING-[A-Z0-9]+\] trainkit [^:]*: .* -> / { sub(/^.* -> /, ""); print; exit }' "$1"
}

# tk_status_default_output_dir ROOT — print the newest run's output dir (logs/latest.log, else outputs/*/status.json).
tk_status_default_output_dir() {
  local root="$1" dir newest
  dir="$(tk_log_output_dir "$(tk_log_dir "$root")/latest.log")"
  if [[ -n "$dir" ]]; then
    tk_abs_path "$dir" "$root"
    return 0
  fi
  # shellcheck disable=SC2012  # names come from a glob we control; ls -t is the portable mtime sort
  newest="$(ls -t "$root"/outputs/*/status.json 2>/dev/null | head -n 1 || true)"
  [[ -z "$newest" ]] || dirname "$newest"
}

# tk_status_log OUTPUT_DIR ROOT — print the run's log: the lock's log=, else the newest logs/*.log naming OUTPUT_DIR.
tk_status_log() {
  local dir="$1" root="$2" log file named
  log="$(tk_lock_get "$dir" log)"
  if [[ -n "$log" && -f "$log" ]]; then
    printf '%s\n' "$log"
    return 0
  fi
  # shellcheck disable=SC2012  # see above
  while IFS= read -r file; do
    [[ -f "$file" && ! -L "$file" ]] || continue
    named="$(tk_log_output_dir "$file")"
    if [[ -n "$named" && "$(tk_abs_path "$named" "$root")" == "$dir" ]]; then
      printf '%s\n' "$file"
      return 0
    fi
  done < <(ls -t "$(tk_log_dir "$root")"/*.log 2>/dev/null)
}

# tk_status_field OUTPUT_DIR KEY — print top-level KEY of OUTPUT_DIR/status.json; nothing when absent or null.
tk_status_field() {
  tk_runctl field --output-dir "$1" "$2" 2>/dev/null || true
}

# tk_status_undecided OUTPUT_DIR — succeed while the run can still change: a process holds its lock, or its trainer lives.
tk_status_undecided() {
  tk_runctl undecided --output-dir "$1"
}

# tk_status_wait OUTPUT_DIR TIMEOUT — block until tk_status_undecided fails (TIMEOUT seconds, 0 for none); fail on timeout.
tk_status_wait() {
  local dir="$1" timeout="$2" started now last_report
  started="$(date +%s)"
  last_report="$started"
  while tk_status_undecided "$dir"; do
    now="$(date +%s)"
    if ((timeout > 0 && now - started >= timeout)); then
      return 1
    fi
    if ((now - last_report >= ${TRAINKIT_WAIT_REPORT_SECONDS:-30})); then
      tk_section STATUS "waiting: $(tk_status_field "$dir" state) at step $(tk_status_field "$dir" step)/$(tk_status_field "$dir" max_steps)"
      last_report="$now"
    fi
    sleep "${TRAINKIT_WAIT_INTERVAL:-1}"
  done
}

# tk_gpu_csv — print "utilization, memory.used, memory.total" per GPU from nvidia-smi; fails without one.
tk_gpu_csv() {
  command -v nvidia-smi >/dev/null || return 1
  local query=(nvidia-smi "--query-gpu=utilization.gpu,memory.used,memory.total" "--format=csv,noheader,nounits")
  if command -v timeout >/dev/null; then
    timeout 10 "${query[@]}" 2>/dev/null
  else
    "${query[@]}" 2>/dev/null
  fi
}

# tk_wandb_summary PYTHON OUTPUT_DIR — print {"path","state","url","summary"} of the run's W&B run as JSON (trainkit/supervise/wandb_summary.py); on failure print why and fail.
tk_wandb_summary() {
  local python="$1" dir="$2" out code=0
  local cmd=("$python" -m trainkit.supervise.wandb_summary "$dir")
  command -v timeout >/dev/null && cmd=(timeout 45 "${cmd[@]}")
  out="$(PYTHONPATH="$(tk_repo_root)${PYTHONPATH:+:$PYTHONPATH}" WANDB_SILENT=true "${cmd[@]}" 2>/dev/null)" || code=$?
  if ((code == 124)); then
    out="W&B API query timed out after 45 s"
  fi
  printf '%s\n' "$(printf '%s\n' "$out" | tail -n 1)"
  return "$code"
}
