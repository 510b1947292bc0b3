#!/usr/bin/env bash
# Usage: scripts/setup_m4_local.sh [--yes] [--recreate] [--config FILE]
#
# One command on an Apple-Silicon Mac: checks the chip, unified memory (< 16 GB error) and
# Python >= 3.10, builds .venv-local/ from requirements-local.txt (torch, mlx and mlx-lm, pinned;
# --recreate rebuilds it), checks MPS and MLX on Metal, links the data, finds the W&B key and
# validates configs/training_config_m4.yaml (backend: mlx). Idempotent. Ends with "✅ SUCCESS: m4 setup complete"
# (exit 0) or "❌ ERROR: …" (exit 1).
# Same as scripts/setup.sh --platform m4; its --help lists the details and variables.
set -euo pipefail
# shellcheck source=lib/usage.sh
source "$(dirname "$0")/lib/usage.sh"
tk_maybe_help "$0" "$@"
exec "$(dirname "$0")/setup.sh" --platform m4 "$@"
