"""Send one test event to every webhook in TRAINKIT_NOTIFY_URL and say which answered, before a long run.

    TRAINKIT_NOTIFY_URL="https://ntfy.sh/<topic>" python scripts/notify_test.py

Each URL gets the same request a run would send (JSON; Discord's and ntfy's own shapes by host), with the
run's timeout and retry. Only the URL's scheme and host are printed: the rest carries the token.
Exit 0 when every URL answered with a 2xx status, 1 otherwise (or when no URL is set).
The logic is in trainkit/core/notify.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit.core.notify import test_main  # noqa: E402

if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(test_main))
