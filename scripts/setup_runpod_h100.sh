#!/usr/bin/env bash
# Usage: scripts/setup_runpod_h100.sh [--yes] [--recreate] [--config FILE]
#
# One command on a RunPod H100 pod: checks the H100 80GB and picks the torch wheel for the NVIDIA
# driver (refusing a driver older than 530), creates or updates the conda env from
# environment-remote.yml (--recreate rebuilds it), checks torch on the GPU, fetches and checks the
# attention kernel (flash-attn from the Hub, no wheel), links the data, finds the W&B key, and runs the checkers
# (50 GB free disk, outputs and HF cache on /workspace, configs/training_config_h100.yaml).
# Idempotent. Ends with "✅ SUCCESS: h100 setup complete" (exit 0) or "❌ ERROR: …" (exit 1).
# Same as scripts/setup.sh --platform h100; its --help lists the details and variables.
set -euo pipefail
# shellcheck source=lib/usage.sh
source "$(dirname "$0")/lib/usage.sh"
tk_maybe_help "$0" "$@"
exec "$(dirname "$0")/setup.sh" --platform h100 "$@"
