"""Tool calls in a model's reply: one parser per chat-template family, and the figures that score them.

    from trainkit.evaluate import toolcalls
    family, parse = toolcalls.parser_for(tokenizer.chat_template)      # ("hermes", parse_hermes)
    reply = parse('<tool_call>{"name": "get_forecast", "arguments": {"days": 2}}</tool_call>')
    score = toolcalls.score_turn(toolcalls.expected_calls(message), reply)
    figures = toolcalls.Figures(); figures.add(score); figures.rates()

A parser turns generated text into a ParsedReply: the well-formed calls, whether the reply
tried to call at all (the family's call markup is there), and why a call block did not parse.
Each family is one small function, chosen by what the chat template renders:

- hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen2.5, Qwen3, Hermes,
  and models/tiny-chat, whose template renders the same tags without the newlines);
- llama3: the reply is `{"name": ..., "parameters": {...}}` (Llama 3.1+, `<|python_tag|>` optional);
- mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}]` or `[TOOL_CALLS]name[ARGS]{...}`.

Arguments compare as JSON objects: expected arguments given as a JSON string in the data are
decoded first; generated arguments that came out as a string are the double-encoding failure,
counted by arguments_as_string_rate and never equal to an object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

FIGURES = (
    "tool_call_parse_rate",
    "tool_name_accuracy",
    "tool_args_exact",
    "tool_args_keys",
    "false_call_rate",
    "arguments_as_string_rate",
)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Any  # a dict when well made; a str when the model double-encoded it

    def as_json(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)


@dataclass(frozen=True)
class ParsedReply:
    calls: tuple[ToolCall, ...] = ()
    attempted: bool = False  # the family's call markup is in the reply, well-formed or not
    errors: tuple[str, ...] = ()  # one reason per call block that did not parse

    @property
    def well_formed(self) -> bool:
        return self.attempted and bool(self.calls) and not self.errors


def _call_from(obj, arguments_key: str = "arguments") -> ToolCall | str:
    """A ToolCall from a decoded JSON value, or the reason it is not one."""
    if not isinstance(obj, dict):
        return f"a call must be a JSON object, not {type(obj).__name__}"
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return 'no "name"'
    if arguments_key not in obj:
        return f'no "{arguments_key}"'
    return ToolCall(name, obj[arguments_key])


def _decode(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at column {exc.colno}"


def _reply(results: list[ToolCall | str], attempted: bool) -> ParsedReply:
    return ParsedReply(tuple(r for r in results if isinstance(r, ToolCall)), attempted,
                       tuple(r for r in results if isinstance(r, str)))


HERMES_BLOCK = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.S)


def parse_hermes(text: str) -> ParsedReply:
    """`<tool_call>{json}</tool_call>` blocks, anywhere in the reply (Qwen2.5, Qwen3, Hermes, tiny-chat)."""
    results: list[ToolCall | str] = []
    for body, closing in HERMES_BLOCK.findall(text):
        if not closing:
            results.append("no closing </tool_call>")
            continue
        value, error = _decode(body.strip())
        results.append(error or _call_from(value))
    return _reply(results, "<tool_call>" in text)


def parse_llama3(text: str) -> ParsedReply:
    """A reply that is a JSON call object `{"name": ..., "parameters": {...}}`, or several joined by `;`."""
    body = text.replace("<|python_tag|>", "").strip()
    if not body.startswith("{"):
        return ParsedReply()
    value, error = _decode(body)
    if error is None:
        return _reply([_call_from(value, "parameters")], True)
    parts = [_decode(part.strip()) for part in body.split(";")]
    if len(parts) > 1 and all(part_error is None for _, part_error in parts):
        return _reply([_call_from(part, "parameters") for part, _ in parts], True)
    return _reply([error], True)


def parse_mistral(text: str) -> ParsedReply:
    """`[TOOL_CALLS]` followed by a JSON list of calls, or by `name[ARGS]{json}` (newer templates)."""
    if "[TOOL_CALLS]" not in text:
        return ParsedReply()
    results: list[ToolCall | str] = []
    for part in text.split("[TOOL_CALLS]")[1:]:
        part = part.strip()
        if "[ARGS]" in part and not part.startswith("["):
            name, _, arguments = part.partition("[ARGS]")
            value, error = _decode(arguments.strip())
            results.append((error or ToolCall(name.strip(), value)) if name.strip() else 'no "name"')
            continue
        value, error = _decode(part)
        if error:
            results.append(error)
        else:
            results.extend(_call_from(v) for v in (value if isinstance(value, list) else [value]))
    return _reply(results, True)


Parser = Callable[[str], ParsedReply]
PARSERS: dict[str, Parser] = {"hermes": parse_hermes, "llama3": parse_llama3, "mistral": parse_mistral}


def parser_for(chat_template) -> tuple[str, Parser] | None:
    """The family whose call markup the chat template renders, or None when trainkit knows none of it."""
    if isinstance(chat_template, dict):  # named templates (default, tool_use, ...)
        chat_template = "\n".join(str(t) for t in chat_template.values())
    text = chat_template or ""
    if "<tool_call>" in text:
        return "hermes", parse_hermes
    if "[TOOL_CALLS]" in text:
        return "mistral", parse_mistral
    if "<|python_tag|>" in text or ("ipython" in text and "parameters" in text):
        return "llama3", parse_llama3
    return None


# --- what the data expects ------------------------------------------------------------------


def decoded_arguments(arguments):
    """Arguments as an object when the data gives them as a JSON string (OpenAI's format)."""
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
        return value if isinstance(value, dict) else arguments
    return arguments


def expected_calls(message: dict) -> tuple[ToolCall, ...]:
    """The calls an assistant message makes, in the OpenAI shape {"function": {"name", "arguments"}}."""
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function", call) if isinstance(call, dict) else {}
        calls.append(ToolCall(str(function.get("name", "")), decoded_arguments(function.get("arguments", {}))))
    return tuple(calls)


def json_equal(a, b) -> bool:
    """Equality of JSON values: 1 == 1.0, but true is not 1 and key order never matters."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# --- scoring --------------------------------------------------------------------------------


@dataclass
class TurnScore:
    """What one assistant turn contributes to the figures, and a one-word verdict for tables."""

    call_expected: bool
    parsed: bool = False  # call expected and a well-formed call came out
    expected_calls: int = 0
    name_matches: int = 0
    args_exact: int = 0
    args_keys: int = 0
    false_call: bool = False  # text expected and a call (even a malformed one) came out
    generated_calls: int = 0
    string_arguments: int = 0
    verdict: str = "ok"


def _match_quality(expected: ToolCall, generated: ToolCall) -> tuple[bool, bool, bool]:
    name = expected.name == generated.name
    both_objects = isinstance(expected.arguments, dict) and isinstance(generated.arguments, dict)
    keys = name and both_objects and expected.arguments.keys() == generated.arguments.keys()
    exact = keys and json_equal(expected.arguments, generated.arguments)
    return name, exact, keys


def score_turn(expected: tuple[ToolCall, ...], reply: ParsedReply) -> TurnScore:
    """Each expected call is paired with the best unused generated call (name, then exact arguments, then keys)."""
    score = TurnScore(call_expected=bool(expected), expected_calls=len(expected), generated_calls=len(reply.calls),
                      string_arguments=sum(isinstance(c.arguments, str) for c in reply.calls))
    if not expected:
        score.false_call = reply.attempted
        score.verdict = "false call" if reply.attempted else "text"
        return score
    score.parsed = reply.well_formed
    unused = list(reply.calls)
    for call in expected:
        if not unused:
            break
        qualities = [_match_quality(call, g) for g in unused]
        best = max(range(len(unused)), key=lambda i: (qualities[i][0], qualities[i][1], qualities[i][2], -i))
        name, exact, keys = qualities[best]
        score.name_matches += name
        score.args_exact += exact
        score.args_keys += keys
        unused.pop(best)
    if not reply.attempted:
        score.verdict = "no call"
    elif not reply.well_formed:
        score.verdict = "malformed call"
    elif score.name_matches < score.expected_calls:
        score.verdict = "wrong name"
    elif score.string_arguments:
        score.verdict = "arguments as string"
    elif score.args_exact < score.expected_calls:
        score.verdict = "wrong arguments"
    return score


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


@dataclass
class Figures:
    """Counts summed over turns; rates() gives the six figures (None where nothing was there to count)."""

    turns: int = 0
    call_turns: int = 0
    text_turns: int = 0
    parsed_call_turns: int = 0
    expected_calls: int = 0
    name_matches: int = 0
    args_exact: int = 0
    args_keys: int = 0
    false_call_turns: int = 0
    generated_calls: int = 0
    string_arguments: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)

    def add(self, score: TurnScore) -> None:
        self.turns += 1
        self.call_turns += score.call_expected
        self.text_turns += not score.call_expected
        self.parsed_call_turns += score.parsed
        self.expected_calls += score.expected_calls
        self.name_matches += score.name_matches
        self.args_exact += score.args_exact
        self.args_keys += score.args_keys
        self.false_call_turns += score.false_call
        self.generated_calls += score.generated_calls
        self.string_arguments += score.string_arguments
        self.verdicts[score.verdict] = self.verdicts.get(score.verdict, 0) + 1

    def rates(self) -> dict[str, float | None]:
        return {
            "tool_call_parse_rate": _rate(self.parsed_call_turns, self.call_turns),
            "tool_name_accuracy": _rate(self.name_matches, self.expected_calls),
            "tool_args_exact": _rate(self.args_exact, self.expected_calls),
            "tool_args_keys": _rate(self.args_keys, self.expected_calls),
            "false_call_rate": _rate(self.false_call_turns, self.text_turns),
            "arguments_as_string_rate": _rate(self.string_arguments, self.generated_calls),
        }

    def counts(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "verdicts"}
