"""Convert chat data from the formats people have into trainkit's `messages` format.

    python scripts/convert_data.py data/raw/glaive.jsonl data/processed/train.jsonl
    python scripts/convert_data.py alpaca.jsonl train.jsonl --from alpaca

Formats (autodetected from the first example; --from forces one):

- sharegpt: `conversations` of `from`/`value` turns (human, gpt, system), including
  LLaMA-Factory's `function_call` (a JSON call, or a list of them) and `observation`
  (the tool's result) turns, its `system` key and its `tools` JSON string.
- alpaca: `instruction`, `input`, `output`, optional `system` and `history` ([[q, a], ...]).
- openai-functions: OpenAI's legacy `function_call` / `role: function` turns and `functions` list.
- openai: OpenAI chat (`messages` with `tool_calls`), arguments given as JSON strings.

Every output line is the trainkit format with tool-call arguments as objects, and is
checked with trainkit.data.checks; a line that cannot be converted is skipped with its
line number and why, and written to OUT.skipped.jsonl, so nothing goes missing unseen.
Keys a format does not use (an "id", a "source") are kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainkit.data.checks import UTF8_BOM, BadLine, check_example, kind, read_lines
from trainkit.data.tool_arguments import parse_arguments

FORMATS = ("sharegpt", "alpaca", "openai-functions", "openai")
SHAREGPT_ROLES = {
    "system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "chatgpt": "assistant", "function_call": "assistant", "observation": "tool", "tool": "tool", "function": "tool",
}


class Skip(Exception):
    """This line cannot be converted; the message says why."""


def detect(example) -> str | None:
    """Which format one parsed line is in; None when it is none of them."""
    if not isinstance(example, dict):
        return None
    if "conversations" in example:
        return "sharegpt"
    if "instruction" in example and "output" in example:
        return "alpaca"
    messages = example.get("messages")
    if isinstance(messages, list):
        legacy = "functions" in example or any(
            isinstance(m, dict) and (m.get("function_call") or m.get("role") == "function") for m in messages)
        return "openai-functions" if legacy else "openai"
    return None


# ---------------------------------------------------------------------------
# One example per format


def text(value, where: str) -> str:
    if isinstance(value, str):
        return value
    raise Skip(f"{where} is {kind(value)}, not a string")


def wrap_tools(tools, where: str = '"tools"') -> list | None:
    """A tools list (or its JSON string) as [{"type": "function", "function": {...}}]."""
    if tools in (None, "", []):
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            raise Skip(f"{where} is a string that is not valid JSON") from None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list):
        raise Skip(f"{where} is {kind(tools)}, not a list of functions")
    wrapped = []
    for tool in tools:
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            wrapped.append({"type": "function", **tool})
        elif isinstance(tool, dict) and "name" in tool:
            wrapped.append({"type": "function", "function": tool})
        else:
            raise Skip(f"{where} holds {kind(tool)} that is not a function spec with a name")
    return wrapped


def tool_call(call, where: str) -> dict:
    """{"name", "arguments"} (arguments maybe a JSON string) as a trainkit tool call."""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise Skip(f"{where} is not a call with a name: {json.dumps(call, ensure_ascii=False)[:80]}")
    raw = call.get("arguments", call.get("parameters", {}))
    arguments = parse_arguments(raw)
    if not isinstance(arguments, dict):
        what = "a string that is not a JSON object" if isinstance(raw, str) else kind(raw)
        raise Skip(f"{where} arguments are {what}: {json.dumps(raw, ensure_ascii=False)[:80]}")
    return {"type": "function", "function": {"name": call["name"], "arguments": arguments}}


def from_sharegpt(example: dict) -> dict:
    turns = example.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise Skip(f'"conversations" is {kind(turns)}' + (" (empty)" if turns == [] else ", not a list of turns"))
    messages: list[dict] = []
    if example.get("system"):
        messages.append({"role": "system", "content": text(example["system"], '"system"')})
    called: list[str] = []
    for index, turn in enumerate(turns):
        where = f"conversations[{index}]"
        if not isinstance(turn, dict):
            raise Skip(f"{where} is {kind(turn)}, not a turn")
        speaker = turn.get("from", turn.get("role"))
        role = SHAREGPT_ROLES.get(speaker)
        if role is None:
            raise Skip(f"{where} has from {json.dumps(speaker)}; known: {', '.join(SHAREGPT_ROLES)}")
        value = turn.get("value", turn.get("content"))
        where = f"{where} ({speaker}) value"
        if speaker == "function_call":
            try:
                calls = json.loads(text(value, where))
            except ValueError:
                raise Skip(f"{where} is not valid JSON") from None
            calls = [tool_call(c, f"{where} call") for c in (calls if isinstance(calls, list) else [calls])]
            called = [c["function"]["name"] for c in calls]
            previous = messages[-1] if messages else None
            if previous and previous["role"] == "assistant" and not previous.get("tool_calls"):
                previous["tool_calls"] = calls  # the text that came with the call
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            continue
        message = {"role": role, "content": text(value, where)}
        if role == "tool" and len(called) == 1:
            message["name"] = called[0]
        if role == "system" and messages:
            raise Skip(f"{where} is a system turn after the conversation started")
        messages.append(message)
    converted = {"messages": messages}
    tools = wrap_tools(example.get("tools"))
    if tools:
        converted["tools"] = tools
    return converted


def from_alpaca(example: dict) -> dict:
    messages: list[dict] = []
    if example.get("system"):
        messages.append({"role": "system", "content": text(example["system"], '"system"')})
    for index, pair in enumerate(example.get("history") or []):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise Skip(f"history[{index}] is not a [question, answer] pair")
        messages += [{"role": "user", "content": text(pair[0], f"history[{index}][0]")},
                     {"role": "assistant", "content": text(pair[1], f"history[{index}][1]")}]
    instruction = text(example.get("instruction"), '"instruction"')
    extra = example.get("input")
    prompt = "\n\n".join(part for part in (instruction, text(extra, '"input"') if extra else "") if part)
    if not prompt.strip():
        raise Skip('"instruction" and "input" are both empty')
    messages += [{"role": "user", "content": prompt},
                 {"role": "assistant", "content": text(example.get("output"), '"output"')}]
    return {"messages": messages}


def from_openai(example: dict) -> dict:
    """OpenAI chat, legacy functions included: tool calls with object arguments, function turns as tool turns."""
    messages = example.get("messages")
    if not isinstance(messages, list):
        raise Skip(f'"messages" is {kind(messages)}, not a list')
    converted = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise Skip(f"messages[{index}] is {kind(message)}, not an object")
        message = dict(message)
        legacy = message.pop("function_call", None)
        if legacy:
            message["tool_calls"] = [tool_call(legacy, f"messages[{index}] function_call")]
        elif message.get("tool_calls"):
            calls = message["tool_calls"]
            if not isinstance(calls, list):
                raise Skip(f"messages[{index}] tool_calls is {kind(calls)}, not a list")
            message["tool_calls"] = [
                {**call, **tool_call(call.get("function"), f"messages[{index}] tool_calls[{n}]")}
                if isinstance(call, dict) else call for n, call in enumerate(calls)]
        if message.get("role") == "function":
            message["role"] = "tool"
        converted.append(message)
    result = {"messages": converted}
    tools = wrap_tools(example.get("tools"), '"tools"') or wrap_tools(example.get("functions"), '"functions"')
    if tools:
        result["tools"] = tools
    return result


CONVERTERS: dict[str, tuple[Callable[[dict], dict], tuple[str, ...]]] = {
    # format: (converter, the keys it consumes)
    "sharegpt": (from_sharegpt, ("conversations", "system", "tools")),
    "alpaca": (from_alpaca, ("instruction", "input", "output", "system", "history")),
    "openai-functions": (from_openai, ("messages", "tools", "functions")),
    "openai": (from_openai, ("messages", "tools", "functions")),
}


def convert_example(example, fmt: str) -> dict:
    """One parsed line in `fmt` as a checked trainkit example; Skip says why it cannot be."""
    if not isinstance(example, dict):
        raise Skip(f"is {kind(example)}, not a JSON object")
    found = detect(example)
    if found != fmt and not (fmt.startswith("openai") and found and found.startswith("openai")):
        raise Skip(f"is not {fmt} data (keys: {', '.join(sorted(example)) or 'none'})")
    converter, consumed = CONVERTERS[fmt]
    converted = converter(example)
    kept = {key: value for key, value in example.items() if key not in consumed and key != "messages"}
    converted.update({key: value for key, value in kept.items() if key not in converted})
    try:
        check_example(converted)
    except BadLine as bad:
        raise Skip(f"converts to an example trainkit would refuse: {bad.what}") from None
    return converted


# ---------------------------------------------------------------------------
# Whole files


@dataclass
class Conversion:
    source: str
    fmt: str | None = None
    converted: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, why)


TABLE_SUFFIXES = {".parquet": "parquet", ".csv": "csv"}


def records(source: Path):
    """(position, record or a Skip) for each example of the source, whatever its shape:
    - JSON Lines (the preflight's line rules: BOM, CRLF and trailing blank lines are fine), by line number;
    - a JSON array of objects (LLaMA-Factory's demo files, `hf download` JSON), by position in the array;
    - Parquet or CSV (a Hub dataset's files), and a directory a dataset was saved to, through `datasets`, by row.
    """
    if source.is_dir() or source.suffix.lower() in TABLE_SUFFIXES:
        yield from table_records(source)
        return
    with source.open("rb") as fh:
        head = fh.read(4096).removeprefix(UTF8_BOM).lstrip()
    if head.startswith(b"["):
        try:
            items = json.loads(source.read_bytes().removeprefix(UTF8_BOM))
        except ValueError as exc:
            yield 1, Skip(f"is a JSON array that does not parse ({exc})")
            return
        for number, item in enumerate(items, start=1):
            yield number, item
        return
    for number, raw in read_lines(source):
        if not raw:
            continue
        try:
            yield number, json.loads(raw)
        except ValueError as exc:
            yield number, Skip(f"is not valid JSON ({exc.msg} at column {exc.colno})")


def table_records(source: Path):
    import datasets

    if source.is_dir():
        loaded = datasets.load_from_disk(str(source))
        table = loaded[next(iter(loaded))] if isinstance(loaded, datasets.DatasetDict) else loaded
    else:
        table = datasets.load_dataset(TABLE_SUFFIXES[source.suffix.lower()], data_files=str(source), split="train")
    for number, row in enumerate(table, start=1):
        yield number, json_ready(row)


def json_ready(value):
    """A row from Arrow as plain JSON values: columns Arrow filled with None for a missing key are dropped."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def first_example(path: Path):
    for _, record in records(path):
        if not isinstance(record, Skip):
            return record
    return None


def convert_file(source: Path, target: Path, fmt: str | None = None) -> Conversion:
    """Convert every record into `target`; skipped ones (position and reason) go to target.skipped.jsonl. The
    output is written beside `target` and moved into place only when something converted: a failure leaves no
    empty file behind."""
    result = Conversion(str(source), fmt or detect(first_example(source)))
    if result.fmt is None:
        return result
    skipped_path = skipped_file(target)
    partial = target.with_name(target.name + ".partial")
    with partial.open("w", encoding="utf-8") as out, skipped_path.open("w", encoding="utf-8") as rejects:
        for number, record in records(source):
            try:
                if isinstance(record, Skip):
                    raise record
                converted = convert_example(record, result.fmt)
            except Skip as skip:
                result.skipped.append((number, str(skip)))
                rejects.write(json.dumps({"line": number, "reason": str(skip), "raw": record if not isinstance(
                    record, Skip) else None}, ensure_ascii=False, default=str) + "\n")
                continue
            out.write(json.dumps(converted, ensure_ascii=False) + "\n")
            result.converted += 1
    if result.converted:
        partial.replace(target)
    else:
        partial.unlink()
    if not result.skipped:
        skipped_path.unlink()
    return result


def skipped_file(target: Path) -> Path:
    return target.with_name(target.name + ".skipped.jsonl")
