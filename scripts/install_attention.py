"""Install fast attention on the GPU pod without a compile: the prebuilt flash-attn wheel for this
torch/CUDA/Python when one exists, otherwise SDPA with a WARNING (setup.sh runs this).

    python scripts/install_attention.py --log logs/setup_h100.log

Never starts a flash-attn source build (up to ~2 h on a pod); the WARNING says how long one would
take and how to start it on purpose. Exit 0 whichever attention it leaves in place.
The logic is in trainkit/preflight/attention_install.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit.preflight.attention_install import main  # noqa: E402

if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
