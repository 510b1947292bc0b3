"""Fetch the attention kernel `attn_implementation: auto` picks on this GPU into the HF cache, and check it
(setup.sh runs this on the pod), so a run never downloads it and a broken build fails at setup.

    python scripts/prefetch_attention.py --config configs/training_config_h100.yaml

flash-attn 3 from the Hub on an H100, else flash-attn 2, through the pinned `kernels` package (no
flash-attn wheel); the check loads it offline and compares its packed attention with SDPA on the GPU.
Exit 0 when ready (or nothing to fetch), 1 when the kernel cannot be fetched, loaded or trusted.
The logic is in trainkit/preflight/attention_fetch.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit.preflight.attention_fetch import main  # noqa: E402

if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
