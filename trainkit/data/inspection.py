"""What the trainer sees: examples rendered and tokenized as they will train, with the trained text marked.

scripts/inspect_data.py is the command; this module holds its logic. Every example goes
through trainkit.data.training_view, the same path the preflight counts with, and the same
data checks run first, so an ERROR here is an ERROR before training.

    python scripts/inspect_data.py --config configs/smoke.yaml --n 2
    python scripts/inspect_data.py --config configs/smoke.yaml --line 3 --json
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from trainkit.core import protocol
from trainkit.core.report import Report

OPEN, CLOSE = "⟦", "⟧"
TRAINED_COLOUR, DIM, RESET = "\033[1;32m", "\033[2m", "\033[0m"
TAG = "INSPECT"


@dataclass
class Shown:
    """One example as inspect_data.py prints it."""

    file: str
    line: int
    text: str  # the rendered conversation, as far as truncation keeps it
    tokens: int
    trained_tokens: int
    truncated: bool
    dropped_tokens: int
    trained_spans: list[tuple[int, int]]  # [start, end) character spans of `text` that carry loss
    assistant_turns: int
    assistant_turns_cut: int

    def as_json(self) -> dict:
        return {"file": self.file, "line": self.line, "text": self.text, "tokens": self.tokens,
                "trained_tokens": self.trained_tokens, "truncated": self.truncated,
                "dropped_tokens": self.dropped_tokens, "trained_spans": [list(s) for s in self.trained_spans],
                "assistant_turns": self.assistant_turns, "assistant_turns_cut": self.assistant_turns_cut}


def shown(view, path: str, number: int, example: dict, tokenized) -> Shown:
    """Slice the rendered text to the tokens truncation keeps; spans relative to that slice."""
    rendered = view.render(example)
    out, index = tokenized.encoding
    start, end = tokenized.kept
    first = out.token_to_chars(index, start) if tokenized.tokens else None
    last = out.token_to_chars(index, end - 1) if tokenized.tokens else None
    begin = first.start if first else 0
    finish = last.end if last else len(rendered)
    if end == tokenized.length:
        finish = len(rendered)  # text after the last token (none, for byte-level BPE) stays
    if start == 0:
        begin = 0
    spans = [(max(s, begin) - begin, min(e, finish) - begin) for s, e in tokenized.spans() if e > begin and s < finish]
    return Shown(str(path), number, rendered[begin:finish], tokenized.tokens, tokenized.trained, tokenized.truncated,
                 tokenized.length - tokenized.tokens, spans, len(tokenized.turns), tokenized.turns_cut)


def marked(item: Shown, colour: bool) -> str:
    """The text with trained spans between ⟦ ⟧ (and in colour on a terminal)."""
    parts, at = [], 0
    for start, end in item.trained_spans:
        parts.append(item.text[at:start])
        inner = item.text[start:end]
        parts.append(f"{TRAINED_COLOUR}{OPEN}{inner}{CLOSE}{RESET}" if colour else f"{OPEN}{inner}{CLOSE}")
        at = end
    parts.append(item.text[at:])
    return "".join(parts)


def describe(item: Shown) -> str:
    share = f"{100 * item.trained_tokens / item.tokens:.1f}%" if item.tokens else "0%"
    cut = (f", truncated: {item.dropped_tokens} tokens past max_length dropped, "
           f"{item.assistant_turns_cut} of {item.assistant_turns} assistant turns cut") if item.truncated else ""
    return f"{item.file}:{item.line}: {item.tokens} tokens, {item.trained_tokens} trained ({share}){cut}"


def summary_of(stats, path: str) -> dict:
    share = round(100 * stats.trained / stats.tokens, 1) if stats.tokens else 0.0
    return {"file": str(path), "examples": stats.examples, "tokens": stats.tokens, "trained_tokens": stats.trained,
            "trained_share": share, "longest": stats.longest, "truncated": stats.over,
            "assistant_turns": stats.turns, "assistant_turns_cut": stats.turns_cut,
            "untrained_examples": [line for _, line in stats.untrained]}


def inspect(config, n: int, line: int | None, as_json: bool, out=None) -> int:
    """Check the train file as the preflight does, show examples; the protocol's exit code. With `as_json` the one
    JSON object goes to `out` (default stdout), which the caller keeps for it alone."""
    from trainkit.data.checks import check_chat_file, check_string_arguments
    from trainkit.data.token_checks import check_token_lengths
    from trainkit.data.training_view import load_view, tokenized_file

    report = Report(TAG)
    path = config.trainkit.train_file
    summary = check_chat_file(path, "train_file", report)
    view = load_view(config, report) if summary.valid else None
    items: list[Shown] = []
    stats = None
    if view is not None:
        check_string_arguments([path], report)
        stats = check_token_lengths(view, [path], report)
        wanted = {line} if line is not None else None
        for number, example, result in tokenized_file(view, path, wanted):
            if isinstance(result, Exception):
                continue
            items.append(shown(view, path, number, example, result))
            if line is None and len(items) >= n:
                break
        if line is not None and not items:
            report.error(f"{path}:{line} is not an example that renders (the file has {count_lines(path)} lines)",
                         "pick the line number of a valid example (see the findings above)")
    if as_json:
        print(json.dumps({
            "ok": not report.errors,
            "examples": [item.as_json() for item in items],
            "summary": summary_of(stats, path) if stats else None,
            "findings": [{"level": f.level, "message": f.message, "hint": f.hint} for f in report.findings],
        }, ensure_ascii=False, indent=1), file=out or sys.stdout)
        return protocol.ExitCode.ERROR if report.errors else protocol.ExitCode.OK
    colour = protocol.colour_enabled()
    for item in items:
        protocol.section(TAG, describe(item))
        sys.stdout.write(marked(item, colour).rstrip("\n") + "\n")
        if item.truncated:
            sys.stdout.write(f"✂ … {item.dropped_tokens} more tokens cut by max_length={view.max_length}\n")
        sys.stdout.write("\n")
    if stats:
        report.ok(f"{path}: {stats.examples} examples, {stats.tokens:,} tokens after truncation, longest "
                  f"{stats.longest}, {stats.over} truncated (trained text is shown between {OPEN} {CLOSE})")
    return report.finish(f"{path}: every example trains on the assistant's text" if view and view.assistant_only_loss
                         else f"{path}: every example trains")


def count_lines(path: str) -> int:
    with Path(path).open("rb") as fh:
        return sum(1 for _ in fh)
