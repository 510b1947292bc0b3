# shellcheck shell=bash
# Watching the machine while a run trains: thermal throttling on a Mac.

# tk_cpu_speed_limit — print the CPU speed limit in percent from `pmset -g therm` (100 when unthrottled).
tk_cpu_speed_limit() {
  local limit
  limit="$(pmset -g therm 2>/dev/null | sed -n 's/.*CPU_Speed_Limit[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' | head -n 1)"
  printf '%s\n' "${limit:-100}"
}

# tk_thermal_check TAG — print a WARNING when the CPU speed limit is below 100%.
tk_thermal_check() {
  local limit
  limit="$(tk_cpu_speed_limit)"
  if ((limit < 100)); then
    tk_warning "thermal throttling: CPU speed limited to ${limit}% (pmset -g therm)" \
      "training slows down; keep the Mac on power, lid open, on a hard surface, with other heavy apps closed"
    return 1
  fi
}

# tk_thermal_watch TAG — check every $TRAINKIT_THERMAL_INTERVAL seconds (60), warning when throttling starts.
tk_thermal_watch() {
  local was_ok=1 warning
  while true; do
    if warning="$(tk_thermal_check "$1")"; then
      was_ok=1
    elif ((was_ok)); then
      printf '%s\n' "$warning"
      was_ok=0
    fi
    sleep "${TRAINKIT_THERMAL_INTERVAL:-60}"
  done
}
