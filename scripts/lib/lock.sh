# shellcheck shell=bash
# One trainer per output dir: OUTPUT_DIR/.trainkit.lock names the supervisor that owns it.

# tk_lock_file OUTPUT_DIR — print the lock file path of OUTPUT_DIR.
tk_lock_file() { printf '%s/.trainkit.lock\n' "$1"; }

# tk_exit_file OUTPUT_DIR — print the file where the supervisor leaves its final exit code.
tk_exit_file() { printf '%s/.trainkit.exit\n' "$1"; }

# tk_lock_get OUTPUT_DIR KEY — print KEY (pid, session, log) from the lock, or nothing.
tk_lock_get() {
  local file
  file="$(tk_lock_file "$1")"
  [[ -f "$file" ]] && sed -n "s/^$2=//p" "$file" | head -n 1
  return 0
}

# tk_lock_alive OUTPUT_DIR — succeed when the lock's supervisor process is still running.
tk_lock_alive() {
  local pid
  pid="$(tk_lock_get "$1" pid)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

# tk_lock_write OUTPUT_DIR PID SESSION LOG — claim OUTPUT_DIR for a supervisor.
tk_lock_write() {
  mkdir -p "$1"
  printf 'pid=%s\nsession=%s\nlog=%s\n' "$2" "$3" "$4" >"$(tk_lock_file "$1").tmp"
  mv -f "$(tk_lock_file "$1").tmp" "$(tk_lock_file "$1")"
}
