"""Token lengths as the trainer sees them: every valid example tokenized through the training view.

    stats = check_token_lengths(view, [train_file, validation_file], report)
    stats.suggested_max_length          # a max_length that keeps the examples whole, when some are cut

ERROR for an example that trains no token, WARNING for examples longer than max_length, OK with the
share of tokens that carry loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from trainkit.core.report import Report
from trainkit.data.training_view import tokenized_file


@dataclass
class LengthStats:
    examples: int
    over: int
    longest: int | None  # tokens of the longest example, before truncation
    suggested_max_length: int | None
    tokens: int = 0  # after truncation
    trained: int = 0  # tokens that carry loss
    turns: int = 0  # assistant turns
    turns_cut: int = 0  # assistant turns not wholly within max_length
    untrained: list[tuple[str, int]] = field(default_factory=list)  # (path, line) of examples that train nothing


def check_token_lengths(view, paths: Iterable[str | Path | None], report: Report) -> LengthStats:
    """Tokenize every valid example as the trainer will (trainkit.data.training_view) and report on it.

    ERROR for an example that trains no token (every assistant turn cut by max_length, or
    a template that marks none): TRL would drop it without a word. WARNING for examples
    longer than max_length. OK with the share of tokens that carry loss.
    """
    max_length = view.max_length
    over: list[tuple[int, str, int]] = []  # (tokens, path, line) for each example over max_length
    longest: tuple[int, str, int] | None = None
    untrained: list[tuple[str, int, object]] = []
    total = unrendered = tokens = trained = turns = turns_cut = 0
    for path in (p for p in paths if p is not None and Path(p).is_file()):
        failures: list[tuple[int, Exception]] = []
        for number, _, result in tokenized_file(view, path):
            if isinstance(result, Exception):
                failures.append((number, result))
                continue
            total += 1
            tokens += result.tokens
            trained += result.trained
            turns += len(result.turns)
            turns_cut += result.turns_cut
            if not result.trained:
                untrained.append((str(path), number, result))
            if longest is None or result.length > longest[0]:
                longest = (result.length, str(path), number)
            if max_length is not None and result.length > max_length:
                over.append((result.length, str(path), number))
        report_render_failures(path, failures, report)
        unrendered += len(failures)
    report_untrained(untrained, view, report)
    if not unrendered:  # counts that leave examples out would mislead
        report_mask(view, tokens, trained, turns, turns_cut, report)
    if unrendered and not over:
        stats = LengthStats(total, 0, longest[0] if longest else None, None)  # "all fit" would be untrue
    else:
        stats = report_lengths(total, over, longest, max_length, report)
    stats.tokens, stats.trained, stats.turns, stats.turns_cut = tokens, trained, turns, turns_cut
    stats.untrained = [(path, number) for path, number, _ in untrained]
    return stats


def report_render_failures(path, failures: list[tuple[int, Exception]], report: Report) -> None:
    if not failures:
        return
    number, exc = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    report.error(f"{path}:{number}: the chat template cannot render this example: "
                 f"{type(exc).__name__}: {exc}".replace("\n", " ") + more,
                 "fix the example or the template; TRL would fail on it after loading the model")


def report_untrained(untrained: list, view, report: Report) -> None:
    """One ERROR for the examples no token of which carries loss (TRL would drop them without a word)."""
    if not untrained:
        return
    path, number, tokenized = untrained[0]
    more = f" (and {len(untrained) - 1} more)" if len(untrained) > 1 else ""
    count = len(tokenized.turns)
    if count and view.max_length is not None:
        turns = "its assistant turn is" if count == 1 else f"all {count} of its assistant turns are"
        report.error(f"{path}:{number}: no token carries loss: {turns} cut by max_length={view.max_length} "
                     f"(the example has {tokenized.length} tokens){more}",
                     "shorten what comes before the assistant's reply (system prompt, tools, earlier turns), raise "
                     "max_length, or drop the example; the trainer would drop it silently")
    else:
        report.error(f"{path}:{number}: no token carries loss: the chat template marks none of its assistant text "
                     f"with {{% generation %}}{more}",
                     "put {% generation %}…{% endgeneration %} around each assistant turn in the template")


def report_mask(view, tokens: int, trained: int, turns: int, turns_cut: int, report: Report) -> None:
    if not tokens:
        return
    share = f"{trained:,} of {tokens:,} tokens trained ({100 * trained / tokens:.1f}%)"
    if view.assistant_only_loss:
        what = f"loss mask: {share}, the assistant's turns only ({view.template_source})"
    else:
        what = f"loss mask: {share}: whole conversations (assistant_only_loss is false)"
    if view.max_length is not None and turns:
        what += f"; {turns_cut} of {turns} assistant turns cut by max_length={view.max_length}"
    report.ok(what)


def report_lengths(total: int, over: list[tuple[int, str, int]], longest: tuple[int, str, int] | None,
                   max_length: int | None, report: Report) -> LengthStats:
    if max_length is None:
        tokens = longest[0] if longest else 0
        report.ok(f"token lengths: longest {tokens} tokens over {total} examples (no max_length)")
        return LengthStats(total, 0, tokens, None)
    if not over:
        found = f" (longest {longest[0]} tokens)" if longest else ""
        report.ok(f"token lengths: all {total} examples fit max_length={max_length}{found}")
        return LengthStats(total, 0, longest[0] if longest else None, None)
    tokens, path, number = longest
    suggested, why = suggest_max_length(total, sorted(t for t, _, _ in over), max_length)
    report.warning(f"{len(over)} of {total} examples are longer than max_length={max_length} "
                   f"(longest {tokens} tokens, {path}:{number}); they will be truncated", why)
    return LengthStats(total, len(over), tokens, suggested)


def round_up(tokens: int, step: int = 64) -> int:
    return step * math.ceil(tokens / step)


def suggest_max_length(total: int, over: list[int], max_length: int) -> tuple[int, str]:
    """A max_length to propose, and the hint that says why. `over` is sorted and all > max_length."""
    longest = round_up(over[-1])
    tail = total - math.ceil(0.99 * total)  # the longest 1% may be left out as outliers
    if len(over) <= tail:
        return longest, (f"these few are outliers: shorten or drop them, or set max_length: {longest} "
                         "to keep them whole (more memory per step)")
    p99 = over[len(over) - tail - 1]  # every example longer than max_length is in `over`, so this is exact
    if over[-1] > 1.5 * p99:
        typical = round_up(p99)
        return typical, (f"set max_length: {typical} to fit 99% of examples, and shorten or drop the few "
                         f"longer ones (up to {over[-1]} tokens)")
    return longest, f"set max_length: {longest} (the next multiple of 64 above the longest), or shorten the examples"
