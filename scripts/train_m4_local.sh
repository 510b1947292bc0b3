#!/usr/bin/env bash
# Usage: scripts/train_m4_local.sh [--config FILE] [--no-wait] [--watch-steps N] [--session NAME] [-- TRAIN_ARGS...]
#
# scripts/train.sh --platform m4 with the same flags: preflight, launch in tmux
# (session weatherman-training), watch the first 100 steps, detach. See scripts/train.sh --help.
set -euo pipefail
# shellcheck source=lib/usage.sh
source "$(dirname "$0")/lib/usage.sh"
tk_maybe_help "$0" "$@"
exec "$(dirname "$0")/train.sh" --platform m4 "$@"
