"""Library warnings a user cannot act on, silenced in one place, each listed by its message.

    from trainkit.core.library_warnings import silence_unactionable
    silence_unactionable()    # once, before the libraries run
    quiet_progress_bars()     # no tqdm carriage returns in a log file

A warning belongs here only when nothing in a trainkit config or command would make it go
away: it comes from one library calling another (TRL reading a deprecated transformers
attribute), not from a setting. Every other warning still reaches stdout/stderr and the
log. Each entry is (category, the start of the message as printed, why it is noise).
"""

from __future__ import annotations

import re
import sys
import warnings

UNACTIONABLE: tuple[tuple[type[Warning], str, str], ...] = (
    (FutureWarning, "`is_gradient_checkpointing` is deprecated",
     "TRL 1.16 reads transformers 5.23's deprecated alias when gradient checkpointing is on"),
    (FutureWarning, "`gradient_checkpointing` is deprecated",
     "TRL 1.16's SFTConfig passes transformers 5.23 the old name; a config says activation_checkpointing"),
)


def silence_unactionable() -> None:
    """Ignore exactly the warnings in UNACTIONABLE (matched from the start of the message)."""
    for category, message, _why in UNACTIONABLE:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)


def quiet_progress_bars() -> None:
    """tqdm bars write carriage returns (and cursor escapes when nested) into log files."""
    if sys.stderr.isatty():
        return
    import datasets
    import huggingface_hub
    import transformers

    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
