# shellcheck shell=bash
# Watching the machine while a run trains: thermal throttling on a Mac.

# tk_cpu_speed_limit — print the CPU speed limit in percent from `pmset -g therm` (100 when unthrottled).
tk_cpu_speed_limit() {
  local limit
  limit="$(pmset -g therm 2>/dev/null | sed -n 's/.*CPU_Speed_Limit[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' | head -n 1)"
  printf '%s\n' "${limit:-100}"
}

# tk_thermal_pressure — print Apple Silicon's thermal pressure level from notifyutil (0 nominal, 1 moderate,
# 2 heavy, 3 trapping, 4 sleeping; 0 when notifyutil cannot say). Apple Silicon has no CPU_Speed_Limit.
tk_thermal_pressure() {
  local level
  level="$(notifyutil -g com.apple.system.thermalpressurelevel 2>/dev/null | sed -n 's/^com\.apple\.system\.thermalpressurelevel[[:space:]]*\([0-9]*\)$/\1/p' | head -n 1)"
  printf '%s\n' "${level:-0}"
}

# tk_thermal_check TAG — print a WARNING when the CPU speed limit is below 100% (Intel) or the thermal
# pressure is heavy or worse (Apple Silicon).
tk_thermal_check() {
  local limit level
  local hint="training slows down; keep the Mac on power, lid open, on a hard surface, with other heavy apps closed"
  limit="$(tk_cpu_speed_limit)"
  if ((limit < 100)); then
    tk_warning "thermal throttling: CPU speed limited to ${limit}% (pmset -g therm)" "$hint"
    return 1
  fi
  level="$(tk_thermal_pressure)"
  if ((level >= 2)); then
    tk_warning "thermal throttling: thermal pressure level ${level} (2 heavy, 3 trapping, 4 sleeping; notifyutil)" "$hint"
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
