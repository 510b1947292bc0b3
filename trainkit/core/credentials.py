"""Which names hold credentials, and keeping their values off command lines and out of checkpoints.

    is_secret_name("WANDB_API_KEY")        # True: environment variables named *_TOKEN, *_KEY, ...
    is_secret_name("hub_token")            # True: the one config key that holds a credential
    move_hub_token(sft)                    # config's hub_token -> $HF_TOKEN; the args keep None
    redact(text)                           # each secret variable's value in text -> <NAME>
    redact_strings(record)                 # the same for every string in a JSON-like record
    wandb_key_present()                    # where the W&B key is (variable or ~/.netrc), never the key

A value on a command line is readable by every user of the machine (`ps`) for as long as
the process lives; Trainer pickles its whole TrainingArguments into each checkpoint's
training_args.bin. The environment of a process is readable only by its user, so that is
where a credential travels (scripts/train.sh hands it to the tmux session in a file only
the user can read, which the supervisor deletes once read).
"""

from __future__ import annotations

import netrc
import os

# Environment variables are upper case; these are matched on the whole name or its end.
SECRET_ENV_NAMES = frozenset({"WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TOKEN", "KEY", "SECRET",
                              "TRAINKIT_NOTIFY_URL"})
SECRET_ENV_SUFFIXES = ("_TOKEN", "_KEY", "_SECRET")
# Config keys are lower case; pad_token/eos_token are text, not credentials, so the keys are listed.
SECRET_CONFIG_KEYS = frozenset({"hub_token"})
WANDB_HOST = "api.wandb.ai"
# Shorter values are not credentials ("1", "true") and replacing them would garble the text.
MIN_REDACTED_LENGTH = 8


def is_secret_name(name: str) -> bool:
    """An environment variable or config key whose value is a credential (its name, never its value, may be shown)."""
    if name in SECRET_CONFIG_KEYS:
        return True
    if name != name.upper():
        return False
    return name in SECRET_ENV_NAMES or name.endswith(SECRET_ENV_SUFFIXES) or "PASSWORD" in name


def redact(text: str, environ=None) -> str:
    """`text` with the value of each secret-named variable of `environ` (default os.environ) as <NAME>.

    The last guard for what trainkit itself writes (tagged lines, status.json, events.jsonl):
    a library's exception message may quote a URL or a header that carries a token.
    """
    environ = os.environ if environ is None else environ
    secrets = {}
    for name, value in environ.items():
        if is_secret_name(name):
            # A variable may hold several secrets separated by spaces (TRAINKIT_NOTIFY_URL's webhooks).
            for part in {value, *value.split()}:
                if len(part) >= MIN_REDACTED_LENGTH:
                    secrets[part] = name
    for value in sorted(secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, f"<{secrets[value]}>")
    return text


def redact_strings(data):
    """`data` (dicts, lists, strings, numbers) with redact() applied to every string in it."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {key: redact_strings(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_strings(value) for value in data]
    return data


def move_hub_token(sft) -> None:
    """The config's hub_token becomes $HF_TOKEN for this process; the training args keep None.

    huggingface_hub reads $HF_TOKEN for downloads and for a push, so nothing changes for
    the run, but Trainer's training_args.bin (a pickle of the args) no longer holds it.
    """
    token = getattr(sft, "hub_token", None)
    if token:
        os.environ["HF_TOKEN"] = token
        sft.hub_token = None


def wandb_key_present() -> str | None:
    """Where the W&B key is ("WANDB_API_KEY" or "~/.netrc"), or None; the key itself is never read out."""
    if os.environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    try:
        return "~/.netrc" if netrc.netrc().authenticators(WANDB_HOST) is not None else None
    except (OSError, netrc.NetrcParseError):
        return None
