"""Show examples exactly as the trainer will receive them, with the trained text marked.

    python scripts/inspect_data.py --config configs/smoke.yaml             # the first 3 examples
    python scripts/inspect_data.py --config configs/smoke.yaml --n 10
    python scripts/inspect_data.py --config configs/smoke.yaml --line 3    # the example on line 3
    python scripts/inspect_data.py --config configs/smoke.yaml --json      # for scripts and agents

Takes the same config and overrides as train.py (e.g. --max_length 256). Each example
is rendered with the template the trainer uses (including the training template TRL
swaps in for assistant_only_loss, and chat_template_path), its tools, tool-call
arguments parsed into objects, and truncation at max_length; the tokens that carry
loss are shown between ⟦ ⟧ (green on a terminal). A summary of the whole train_file
follows: examples, tokens, share of tokens trained, longest, truncated. --json prints
one object: examples (text, tokens, trained_tokens, truncated, trained_spans, ...),
summary and findings. Exit 0 when every example trains, 1 on any ERROR (a bad line,
an example with no trained token, a template that cannot mask).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit.core import protocol
from trainkit.core.errors import ConfigError


def take(argv: list[str], flag: str, default=None, convert=int):
    if flag not in argv:
        return default
    i = argv.index(flag)
    if i + 1 >= len(argv):
        raise ConfigError(f"{flag} needs a value", f"e.g. {flag} 3")
    value = argv.pop(i + 1)
    argv.pop(i)
    try:
        number = convert(value)
    except ValueError:
        raise ConfigError(f"{flag} must be a whole number, not {value!r}", f"e.g. {flag} 3") from None
    if number < 1:
        raise ConfigError(f"{flag} must be 1 or more, not {number}", f"e.g. {flag} 3")
    return number


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    out = sys.stdout
    # With --json, stdout carries the JSON alone: what the libraries print on import (W&B's offline notice) and
    # the tagged lines go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        try:
            n = take(argv, "--n", 3)
            line = take(argv, "--line")
            from trainkit.config.settings import parse

            config = parse(argv)
        except ConfigError as exc:
            protocol.error(exc.message, exc.hint)
            if as_json:
                print(json.dumps({"ok": False, "examples": [], "summary": None, "findings": [
                    {"level": "error", "message": exc.message, "hint": exc.hint}]}, indent=1), file=out)
            return protocol.ExitCode.ERROR
        from trainkit.data.inspection import inspect

        return inspect(config, n, line, as_json, out=out)


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
