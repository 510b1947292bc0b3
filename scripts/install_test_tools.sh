#!/usr/bin/env bash
# Usage: scripts/install_test_tools.sh
#
# Install what `make test` needs beyond Python: tmux, bats with bats-support,
# bats-assert and bats-file, GNU parallel (bats --jobs), and shellcheck. Skips what is already there; uses
# apt-get on Debian/Ubuntu and Homebrew on macOS.
set -euo pipefail
# shellcheck source=lib/protocol.sh
source "$(dirname "$0")/lib/protocol.sh"
# shellcheck source=lib/usage.sh
source "$(dirname "$0")/lib/usage.sh"
tk_maybe_help "$0" "$@"

bats_lib_present() {
  local dir
  for dir in ${BATS_LIB_PATH:-/usr/lib/bats} /usr/lib/bats /usr/local/lib /opt/homebrew/lib; do
    [[ -f "$dir/bats-assert/load.bash" && -f "$dir/bats-support/load.bash" && -f "$dir/bats-file/load.bash" ]] && return 0
  done
  return 1
}

if command -v tmux >/dev/null && command -v bats >/dev/null && command -v shellcheck >/dev/null &&
  command -v parallel >/dev/null && bats_lib_present; then
  tk_success "test tools present: tmux, bats (+ support, assert, file), GNU parallel, shellcheck"
  exit 0
fi

if command -v apt-get >/dev/null; then
  sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq tmux bats bats-support bats-assert bats-file parallel shellcheck >/dev/null
elif command -v brew >/dev/null; then
  brew install tmux bats-core parallel shellcheck
  brew tap bats-core/bats-core
  brew install bats-support bats-assert bats-file
else
  tk_die "$TK_EXIT_ERROR" "no apt-get or brew to install tmux, bats and shellcheck with" \
    "install them by hand: tmux, bats-core, bats-support, bats-assert, bats-file, GNU parallel, shellcheck"
fi
tk_success "test tools installed"
