#!/usr/bin/env bats
# Thermal throttling on a Mac (scripts/lib/platform_watch.sh), with `pmset -g therm` and `notifyutil` stubbed on PATH.

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  STUBS="$BATS_TEST_TMPDIR/bin"
  mkdir -p "$STUBS"
  export PATH="$STUBS:$PATH" NO_COLOR=1
  # shellcheck source=../../scripts/lib/protocol.sh
  source "$REPO_ROOT/scripts/lib/protocol.sh"
  # shellcheck source=../../scripts/lib/platform_watch.sh
  source "$REPO_ROOT/scripts/lib/platform_watch.sh"
}

# stub_pmset LIMIT... — a pmset whose Nth call reports the Nth CPU speed limit (the last one repeats).
stub_pmset() {
  printf '%s\n' "$@" >"$BATS_TEST_TMPDIR/limits"
  cat >"$STUBS/pmset" <<STUB
#!/usr/bin/env bash
count_file="$BATS_TEST_TMPDIR/pmset-calls"
n=\$(( \$(cat "\$count_file" 2>/dev/null || echo 0) + 1 ))
echo "\$n" >"\$count_file"
limit=\$(sed -n "\${n}p" "$BATS_TEST_TMPDIR/limits")
[[ -n "\$limit" ]] || limit=\$(tail -n 1 "$BATS_TEST_TMPDIR/limits")
printf '%s\n' "Note: No thermal warning level has been recorded" \\
  "2026-11-24 10:00:00 +0000 CPU Power notify" \\
  "	CPU_Scheduler_Limit 	= 100" \\
  "	CPU_Available_CPUs 	= 10" \\
  "	CPU_Speed_Limit 	= \$limit"
STUB
  chmod +x "$STUBS/pmset"
}

@test "an unthrottled Mac (CPU_Speed_Limit 100) prints nothing" {
  stub_pmset 100
  run -0 tk_thermal_check TRAINING-M4
  assert_output ""
}

@test "a CPU speed limit below 100 is a WARNING with the limit and what to do" {
  stub_pmset 62
  run -1 tk_thermal_check TRAINING-M4
  assert_line --index 0 "⚠️ WARNING: thermal throttling: CPU speed limited to 62% (pmset -g therm)"
  assert_line --index 1 --partial "  ↳ training slows down; keep the Mac on power"
}

@test "without pmset (not a Mac) the limit reads as 100" {
  rm -f "$STUBS/pmset"
  command -v pmset >/dev/null && skip "this machine has a real pmset"
  run -0 tk_cpu_speed_limit
  assert_output 100
}

@test "the watch warns once when throttling starts and again only after it recovered" {
  stub_pmset 100 70 70 100 100 80 80
  TRAINKIT_THERMAL_INTERVAL=0.05 timeout 3 bash -c "
    source '$REPO_ROOT/scripts/lib/protocol.sh'; source '$REPO_ROOT/scripts/lib/platform_watch.sh'
    tk_thermal_watch TRAINING-M4" >"$BATS_TEST_TMPDIR/watch.log" || true
  run grep -c "^⚠️ WARNING: thermal throttling" "$BATS_TEST_TMPDIR/watch.log"
  assert_output 2
  run grep "^⚠️ WARNING: thermal throttling" "$BATS_TEST_TMPDIR/watch.log"
  assert_line --index 0 --partial "limited to 70%"
  assert_line --index 1 --partial "limited to 80%"
}

# stub_notifyutil LEVEL — Apple Silicon's thermal pressure level, as `notifyutil -g` prints it.
stub_notifyutil() {
  cat >"$STUBS/notifyutil" <<STUB
#!/usr/bin/env bash
[[ "\$*" == "-g com.apple.system.thermalpressurelevel" ]] || exit 1
echo "com.apple.system.thermalpressurelevel $1"
STUB
  chmod +x "$STUBS/notifyutil"
}

@test "an Apple-Silicon Mac under heavy thermal pressure gets the WARNING, though its pmset has no speed limit" {
  stub_pmset 100
  stub_notifyutil 2
  run -1 tk_thermal_check TRAINING-M4
  assert_line --index 0 "⚠️ WARNING: thermal throttling: thermal pressure level 2 (2 heavy, 3 trapping, 4 sleeping; notifyutil)"
  assert_line --index 1 --partial "  ↳ training slows down; keep the Mac on power"
}

@test "nominal or moderate thermal pressure, or no notifyutil, prints nothing" {
  stub_pmset 100
  stub_notifyutil 1
  run -0 tk_thermal_check TRAINING-M4
  assert_output ""
  rm -f "$STUBS/notifyutil"
  command -v notifyutil >/dev/null && skip "this machine has a real notifyutil"
  run -0 tk_thermal_pressure
  assert_output 0
}
