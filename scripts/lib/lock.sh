# shellcheck shell=bash
# One trainer per output dir: an flock on OUTPUT_DIR/.trainkit.lock (trainkit/core/lock.py), held by
# the supervisor for its whole life and checked by train.py; the file names its last holder.
# Needs lib/common.sh (tk_runctl).

# tk_lock_file OUTPUT_DIR [NODE] — print the lock file path of OUTPUT_DIR (for node NODE > 0 of a multi-node run, its own).
tk_lock_file() { tk_runctl lock-path --output-dir "$1" --node-rank "${2:-0}"; }

# tk_exit_file OUTPUT_DIR [NODE] — print the file where the supervisor leaves its final exit code (first line).
tk_exit_file() { tk_runctl lock-path --exit --output-dir "$1" --node-rank "${2:-0}"; }

# tk_lock_get OUTPUT_DIR KEY — print KEY (pid, session, log, launch_id) of the lock's last holder, or nothing.
tk_lock_get() {
  tk_runctl lock-info --output-dir "$1" "$2" 2>/dev/null || true
}
