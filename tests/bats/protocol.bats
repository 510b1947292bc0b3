#!/usr/bin/env bats
# scripts/lib/protocol.sh: the tagged lines and exit codes every script prints.

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  unset NO_COLOR
}

@test "tk_success prints the success verdict without colour when stdout is not a terminal" {
  run bash -c "source '$REPO_ROOT/scripts/lib/protocol.sh'; tk_success 'setup done'"
  assert_success
  assert_output "✅ SUCCESS: setup done"
}

@test "tk_warning prints the warning and its hint on the next line" {
  run bash -c "source '$REPO_ROOT/scripts/lib/protocol.sh'; tk_warning 'low disk' 'free 10 GB'"
  assert_success
  assert_line --index 0 "⚠️ WARNING: low disk"
  assert_line --index 1 "  ↳ free 10 GB"
}

@test "tk_die prints one error line and exits with the code it is given" {
  run -75 bash -c "source '$REPO_ROOT/scripts/lib/protocol.sh'; tk_die \"\$TK_EXIT_INTERRUPTED\" 'stopped' 're-run'"
  assert_output "$(printf '❌ ERROR: stopped\n  ↳ re-run')"
}

@test "tk_resume prints the resume line agents look for" {
  run bash -c "source '$REPO_ROOT/scripts/lib/protocol.sh'; tk_resume 500"
  assert_output "⚠️ RESUME: Found checkpoint at step 500. Resuming training."
}

@test "tk_section prints a bare tag when there is no message" {
  run bash -c "source '$REPO_ROOT/scripts/lib/protocol.sh'; tk_section PREFLIGHT; tk_section TRAINING-CPU 'step 1/20'"
  assert_line --index 0 "[PREFLIGHT]"
  assert_line --index 1 "[TRAINING-CPU] step 1/20"
}

@test "the exit codes are the documented ones" {
  run bash -c "source '$REPO_ROOT/scripts/lib/protocol.sh'; echo \$TK_EXIT_OK \$TK_EXIT_ERROR \$TK_EXIT_CRASH_LOOP \$TK_EXIT_DIVERGED \$TK_EXIT_CRASHED \$TK_EXIT_INTERRUPTED"
  assert_output "0 1 2 3 70 75"
}

@test "colour appears on a terminal and disappears with NO_COLOR" {
  command -v script >/dev/null || skip "script(1) not installed"
  run script -qec "bash -c \"source '$REPO_ROOT/scripts/lib/protocol.sh'; tk_error boom\"" /dev/null
  assert_output --partial $'\e[31m❌ ERROR: boom\e[0m'
  run env NO_COLOR=1 script -qec "bash -c \"source '$REPO_ROOT/scripts/lib/protocol.sh'; tk_error boom\"" /dev/null
  refute_output --partial $'\e['
  assert_output --partial "❌ ERROR: boom"
}

@test "install_test_tools.sh --help prints its Usage header and exits 0" {
  run "$REPO_ROOT/scripts/install_test_tools.sh" --help
  assert_success
  assert_line --index 0 "Usage: scripts/install_test_tools.sh"
  refute_output --partial "set -euo"
}
