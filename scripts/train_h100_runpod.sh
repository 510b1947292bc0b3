#!/usr/bin/env bash
# Usage: scripts/train_h100_runpod.sh [--config FILE] [--gpus N] [--no-wait] [--watch-steps N] [--session NAME] [-- TRAIN_ARGS...]
#
# scripts/train.sh --platform h100 with the same flags: preflight, launch in tmux
# (session weatherman-training), one process per visible GPU unless --gpus N says otherwise,
# watch the first 100 steps, detach. See scripts/train.sh --help.
set -euo pipefail
# shellcheck source=lib/usage.sh
source "$(dirname "$0")/lib/usage.sh"
tk_maybe_help "$0" "$@"
exec "$(dirname "$0")/train.sh" --platform h100 "$@"
