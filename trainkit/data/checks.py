"""Preflight checks of JSONL chat data: every line and duplicates (token lengths: trainkit.data.token_checks).

Left to TRL, a malformed row fails deep inside `datasets.map` (`KeyError: 'text'`, an
`IndexError`, a jinja `UndefinedError`) after the model has loaded. These checks read
the files line by line first and report each problem as `path:line: what is wrong`
with a hint, into a `trainkit.core.report.Report`:

    report = Report("PREFLIGHT")
    train = check_chat_file("data/processed/train.jsonl", "train_file", report)
    validation = check_chat_file("data/processed/validation.jsonl", "validation_file", report)
    if not report.errors:
        check_duplicates(train, validation, report)
        view = resolve_view(tokenizer, config.sft, report)   # trainkit.data.training_view
        check_token_lengths(view, [train.path, validation.path], report)  # trainkit.data.token_checks

A file gets at most one ERROR (its first bad line, plus how many more there are), so
one bad input is one ERROR line. Only `messages` chat data is accepted: it is what
trainkit trains on, and the only shape these checks can vouch for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from trainkit.core.report import Report

ROLES = ("system", "user", "assistant", "tool")
EXAMPLE_SHAPE = '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'
TOOL_CALL_SHAPE = '{"type": "function", "function": {"name": "...", "arguments": {...}}}'
TOOL_SHAPE = '{"type": "function", "function": {"name": "...", "parameters": {...}}}'

# Files that are not text at all; the usual way to get one is pointing train_file at
# the wrong thing, and "line 1 is not UTF-8" would not tell you what happened.
MAGIC = {
    b"\x1f\x8b": ("is gzip-compressed", "decompress it first: gunzip -k {path}"),
    b"PK\x03\x04": ("is a zip archive", "extract the .jsonl file from it and point the config at that"),
    b"PAR1": ("is a Parquet file", "{convert}"),
    b"\xff\xfe": ("is UTF-16 text (as Windows PowerShell writes it)", "save it as UTF-8, e.g. iconv -f utf-16 "
                  "-t utf-8 {path} > fixed.jsonl"),
    b"\xfe\xff": ("is UTF-16 text", "save it as UTF-8, e.g. iconv -f utf-16 -t utf-8 {path} > fixed.jsonl"),
}
UTF8_BOM = b"\xef\xbb\xbf"  # harmless: datasets reads it, so it is skipped rather than refused

# A hint per TRL data format that is not `messages`, keyed by the column that gives it away.
OTHER_FORMATS = {
    "text": "this is plain-text (language modelling) data; trainkit trains on chat examples",
    "prompt": "this is prompt/completion data; trainkit trains on chat examples",
}
# Formats scripts/convert_data.py converts: what the hint calls them (the command follows).
CONVERTIBLE = {
    "sharegpt": "this is ShareGPT data (conversations of from/value turns); convert it: ",
    "alpaca": "this is Alpaca data (instruction/input/output); convert it: ",
    "openai-functions": "this is OpenAI's legacy function calling (function_call, role \"function\"); convert it "
                        "to tool_calls: ",
}


@dataclass
class FileSummary:
    """What the later checks need from one data file, without keeping its examples in memory."""

    path: str
    key: str
    examples: int = 0  # valid examples
    with_tool_calls: int = 0
    bad_lines: int = 0
    shown_bad: list[tuple[int, str]] = field(default_factory=list)  # (line, what) of the first BAD_LINES_LISTED
    valid: bool = True  # False on any problem, including whole-file ones
    hashes: list[tuple[int, bytes]] = field(default_factory=list)  # (line, digest) per valid example, file order


class BadLine(Exception):
    """One problem with one line: what is wrong and how to fix it.

    `convert` names the convert_data.py format when the line is in one it converts;
    the hint then ends with the exact command for the file.
    """

    def __init__(self, what: str, hint: str, convert: str | None = None):
        super().__init__(what)
        self.what = what
        self.hint = hint
        self.convert = convert


# ---------------------------------------------------------------------------
# Per-example shape


def kind(value) -> str:
    """A JSON value's type, as a person who wrote the JSON would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def check_example(example) -> None:
    """Raise BadLine for the first thing about a parsed line that TRL or the chat template would trip on."""
    if not isinstance(example, dict):
        raise BadLine(f"is {kind(example)}, not a JSON object", f"each line must be one example: {EXAMPLE_SHAPE}")
    messages = example.get("messages")
    if "messages" not in example:
        keys = ", ".join(sorted(example)) or "none"
        fmt = "sharegpt" if "conversations" in example else "alpaca" if {"instruction", "output"} <= set(example) \
            else None
        if fmt:
            raise BadLine(f'has no "messages" list (keys: {keys})', CONVERTIBLE[fmt], fmt)
        hint = next((OTHER_FORMATS[k] + "; " for k in OTHER_FORMATS if k in example), "")
        raise BadLine(f'has no "messages" list (keys: {keys})', f"{hint}write each line as {EXAMPLE_SHAPE}")
    if not isinstance(messages, list):
        raise BadLine(f'"messages" is {kind(messages)}, not a list', f"write it as a list of turns: {EXAMPLE_SHAPE}")
    if not messages:
        raise BadLine('"messages" is an empty list', f"add the conversation, or drop the line: {EXAMPLE_SHAPE}")
    check_tools(example.get("tools"))
    called: set[str] | None = None  # functions the latest assistant turn called, while its results may follow
    for index, message in enumerate(messages):
        called = check_message(index, message, called)
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        raise BadLine("has no assistant turn", "add the assistant reply the model should learn to give")


def check_message(index: int, message, called: set[str] | None) -> set[str] | None:
    """Check one turn; returns the functions a following tool message may answer."""
    # Most turns are plain text; settling those with a few lookups keeps a
    # 16,000-example file well under a second.
    if type(message) is dict and type(message.get("content")) is str and message.get("tool_calls") is None:
        role = message.get("role")
        if role == "user" or role == "assistant" or (role == "system" and index == 0):
            return None
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise BadLine(f"{where} is {kind(message)}, not an object", 'each turn is {"role": ..., "content": ...}')
    role = message.get("role")
    if message.get("function_call") is not None or role == "function":
        found = "has role \"function\"" if role == "function" else "has a function_call"
        raise BadLine(f"{where} {found}: OpenAI's legacy function calling, which chat templates do not render",
                      CONVERTIBLE["openai-functions"], "openai-functions")
    if role not in ROLES:
        found = "has no role" if role is None else f"has role {json.dumps(role)}"
        raise BadLine(f"{where} {found}; valid roles are {', '.join(ROLES)}",
                      "fix the role (models are trained with exactly these four)")
    where = f"{where} ({role})"
    if role == "system" and index > 0:
        raise BadLine(f"{where} is a system message after the first turn; only messages[0] may be system",
                      "merge it into the first system message, or make it a user turn")
    # Exported datasets write null for every absent key, so null counts as absent
    # throughout (apply_chat_template drops None values the same way).
    calls = message.get("tool_calls")
    if calls and role != "assistant":
        raise BadLine(f"{where} has tool_calls; only assistant turns call tools",
                      "move the calls to the assistant turn before it")
    if calls is not None:
        check_tool_calls(where, calls)
    check_content(where, role, message.get("content"), bool(calls))
    if role == "tool":
        check_tool_result(where, message.get("name"), called)
        return called
    return {c["function"]["name"] for c in calls} if calls else None


def check_content(where: str, role: str, content, has_calls: bool) -> None:
    if isinstance(content, str):
        return
    if content is None:
        if role == "assistant" and has_calls:
            return
        what = "has no content" + (" and no tool_calls" if role == "assistant" else "")
        raise BadLine(f"{where} {what}", 'give it a "content" string' + (
            " (content may be null only on an assistant turn with tool_calls)" if role == "assistant" else ""))
    hint = "write the text as one string"
    if role == "tool" and isinstance(content, (dict, list)):
        hint = "a tool result is text: serialise the object with json.dumps into the content string"
    elif isinstance(content, list):
        hint += " (lists of content parts are for vision models)"
    raise BadLine(f"{where} content is {kind(content)}, not a string", hint)


def check_tool_calls(where: str, calls) -> None:
    # An empty list with text content means "no calls" and renders fine; check_content
    # still refuses an empty list when the content is null.
    if not isinstance(calls, list):
        raise BadLine(f"{where} tool_calls is {kind(calls)}, not a list", f"write it as [{TOOL_CALL_SHAPE}]")
    for number, call in enumerate(calls):
        here = f"{where} tool_calls[{number}]"
        if not isinstance(call, dict):
            raise BadLine(f"{here} is {kind(call)}, not an object", f"write each call as {TOOL_CALL_SHAPE}")
        # "type" is optional: chat templates read only "function".
        if call.get("type", "function") != "function":
            raise BadLine(f'{here} has type {json.dumps(call.get("type"))}, not "function"',
                          f"write each call as {TOOL_CALL_SHAPE}")
        function = call.get("function")
        if not isinstance(function, dict):
            flat = " (name and arguments go inside \"function\")" if "name" in call else ""
            raise BadLine(f'{here} has no "function" object{flat}', f"write each call as {TOOL_CALL_SHAPE}")
        name = function.get("name")
        if not isinstance(name, str) or not name.strip():
            raise BadLine(f"{here} function has no name", "give the called function's name as a non-empty string")
        check_arguments(here, function.get("arguments"))


def check_arguments(here: str, arguments) -> None:
    if isinstance(arguments, dict):
        return
    hint = 'write arguments as a JSON object, e.g. {"location": "Oslo, Norway"} (or that object as a string)'
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            raise BadLine(f"{here} arguments is a string that is not valid JSON", hint) from None
        if isinstance(parsed, dict):
            return
        raise BadLine(f"{here} arguments is a JSON string holding {kind(parsed)}, not an object", hint)
    raise BadLine(f"{here} arguments is {kind(arguments)}, not an object", hint)


def check_tool_result(where: str, name, called: set[str] | None) -> None:
    if called is None:
        raise BadLine(f"{where} is a tool result with no tool call before it",
                      "put the assistant turn with the matching tool_calls right before it")
    if name is not None and (not isinstance(name, str) or name not in called):
        raise BadLine(f"{where} answers {json.dumps(name)}, but the call before it was to "
                      f"{', '.join(sorted(called))}", "make the tool message's name match the function called")


def check_tools(tools) -> None:
    if tools is None:
        return
    if isinstance(tools, str):  # TRL json.loads a string tools column, so a string holding a list is fine
        try:
            tools = json.loads(tools)
        except ValueError:
            raise BadLine('"tools" is a string that is not valid JSON', f"write it as [{TOOL_SHAPE}]") from None
    if not isinstance(tools, list):
        raise BadLine(f'"tools" is {kind(tools)}, not a list', f"write it as [{TOOL_SHAPE}]")
    for number, tool in enumerate(tools):
        here = f"tools[{number}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            raise BadLine(f'{here} is not a {{"type": "function", "function": {{...}}}} object',
                          f"write each tool as {TOOL_SHAPE}")
        name = function.get("name")
        if not isinstance(name, str) or not name.strip():
            raise BadLine(f"{here} function has no name", "give each tool a non-empty name")
        if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
            raise BadLine(f"{here} parameters is {kind(function['parameters'])}, not an object",
                          "describe the parameters as a JSON Schema object")


def has_tool_calls(example: dict) -> bool:
    return any(isinstance(m, dict) and m.get("tool_calls") for m in example["messages"])


# ---------------------------------------------------------------------------
# Reading a file


def whole_file_problem(path: Path, key: str) -> tuple[str, str] | None:
    """(what, hint) when the file as a whole cannot be JSON Lines; None to go on line by line."""
    if not path.exists():
        return f"{key} does not exist", f"point {key} at a JSONL file with one chat example per line"
    if not path.is_file():
        return f"{key} is not a file", f"point {key} at a JSONL file with one chat example per line"
    if path.stat().st_size == 0:
        return f"{key} is empty (0 bytes)", f"fill it with one chat example per line: {EXAMPLE_SHAPE}"
    with path.open("rb") as fh:
        head = fh.read(4096)
    lines = path.with_name(f"{path.stem}.lines.jsonl")
    convert = (f"convert it to JSON Lines (its format is detected from the records): python scripts/convert_data.py "
               f"{path} {lines}, and point {key} at {lines}")
    for magic, (what, hint) in MAGIC.items():
        if head.startswith(magic):
            return what, hint.format(path=path, convert=convert)
    if head.removeprefix(UTF8_BOM).lstrip().startswith(b"[") and parses_as(path, list):
        return "is a JSON array, not JSON Lines", convert
    return None


def parses_as(path: Path, expected: type) -> bool:
    """Whether the whole file is one JSON document of this type. Only called on the error path."""
    try:
        return isinstance(json.loads(path.read_bytes().removeprefix(UTF8_BOM)), expected)
    except (ValueError, UnicodeDecodeError):
        return False


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, stripped bytes) for every line, blank ones included; streamed."""
    # Bytes, not text: a str iterator would also split on \u2028 and friends, which
    # JSON allows inside strings, and would fail on bad UTF-8 before we know the line.
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1:
                raw = raw.removeprefix(UTF8_BOM)
            yield number, raw.strip()


def parse_line(raw: bytes) -> dict:
    """The example on one non-blank line, or BadLine for why it is not one."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise BadLine(f"contains binary data (a NUL byte at column {nul + 1})",
                      "this is not a text file: check that the path names the JSONL data")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine(f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                      "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8 in.jsonl > out.jsonl") from None
    try:
        example = json.loads(text)
    except ValueError as exc:
        if exc.msg == "Extra data":
            raise BadLine(f"holds more than one JSON value (the second starts at column {exc.colno})",
                          "put each example on its own line") from None
        reason = exc.msg[:1].lower() + exc.msg[1:].removesuffix(" starting at")
        raise BadLine(f"is not valid JSON (column {exc.colno}: {reason})",
                      "each line must hold one complete JSON object; a line break inside a string must be "
                      "written as \\n (was an example split across lines, or cut short?)") from None
    check_example(example)
    return example


# Built once: json.dumps with options builds a new encoder on every call.
CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), check_circular=False)


def digest(example: dict) -> bytes:
    """Equal for the same example however its keys were ordered or spaced on the line."""
    return hashlib.blake2b(CANONICAL.encode(example).encode(), digest_size=16).digest()


def check_chat_file(path: str | Path, key: str, report: Report) -> FileSummary:
    """Check every line of one JSONL chat file; one finding (OK or ERROR) goes into `report`."""
    file = Path(path)
    summary = FileSummary(str(path), key)
    first = None
    try:
        problem = whole_file_problem(file, key)
        if not problem:
            first = scan(file, summary)
    except OSError as exc:
        problem = (f"{key} cannot be read ({exc.strerror or exc})", f"make {key} a readable file")
    if problem:
        summary.valid = False
        report.error(f"{path}: {problem[0]}", problem[1])
        return summary
    if summary.examples == 0 and summary.bad_lines == 0:
        summary.valid = False
        report.error(f"{path}: {key} has only blank lines", f"fill it with one chat example per line: {EXAMPLE_SHAPE}")
        return summary
    if first:
        summary.valid = False
        report_bad_line(summary, *first, report)
        return summary
    report.ok(f"{key} {path}: {summary.examples} examples ({summary.with_tool_calls} with tool calls)")
    return summary


BAD_LINES_LISTED = 10  # in the one ERROR, so that one fix pass mends them all


def scan(file: Path, summary: FileSummary) -> tuple[int, BadLine] | None:
    """Read every line into `summary` (the first BAD_LINES_LISTED bad ones listed); the first bad line and why."""
    first: tuple[int, BadLine] | None = None
    blank_run: list[int] = []
    for number, raw in read_lines(file):
        if not raw:
            blank_run.append(number)
            continue
        # A blank line that has an example after it is in the middle of the data.
        # datasets would skip it, but we refuse it: this file is counted and sliced by
        # line (wc -l, head, the line numbers in these very messages), and a blank
        # line usually marks an example a generator failed to write. Blank lines at
        # the very end are only trailing newlines and are fine.
        for blank in blank_run:
            first = first or (blank, BadLine("is blank", f"delete blank lines: sed -i '/^[[:space:]]*$/d' {file}"))
            summary.bad_lines += 1
            if len(summary.shown_bad) < BAD_LINES_LISTED:
                summary.shown_bad.append((blank, "is blank"))
        blank_run.clear()
        try:
            example = parse_line(raw)
        except BadLine as bad:
            first = first or (number, bad)
            summary.bad_lines += 1
            if len(summary.shown_bad) < BAD_LINES_LISTED:
                summary.shown_bad.append((number, bad.what))
            continue
        summary.examples += 1
        summary.with_tool_calls += has_tool_calls(example)
        summary.hashes.append((number, digest(example)))
    return first


def convert_command(path, fmt: str | None = None) -> str:
    """The exact command that converts `path`, as the validator's hints name it."""
    source = Path(path)
    target = source.with_name(f"{source.stem}.messages.jsonl")
    return f"python scripts/convert_data.py {source} {target}" + (f" --from {fmt}" if fmt else "")


def report_bad_line(summary: FileSummary, number: int, bad: BadLine, report: Report) -> None:
    file = Path(summary.path)
    # A pretty-printed single example fails on its first line ("{"); say what it really is.
    if number == 1 and bad.what.startswith("is not valid JSON") and parses_as(file, dict):
        report.error(f"{summary.path}: is one multi-line JSON object, not JSON Lines",
                     f"put each example on one line: jq -c . {file} > {file.with_name(file.stem + '.lines.jsonl')}")
        return
    more = summary.bad_lines - 1
    suffix = ""
    if more:
        listed = [f"line {n}: {what}" for n, what in summary.shown_bad[1:]]
        unlisted = more - len(listed)
        suffix = (f" (and {more} more bad line{'s' if more > 1 else ''}: {'; '.join(listed)}"
                  + (f"; {unlisted} more not listed" if unlisted else "") + ")")
    hint = bad.hint
    if bad.convert:
        hint += convert_command(summary.path, bad.convert)
    report.error(f"{summary.path}:{number}: {bad.what}{suffix}", hint)


def valid_examples(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line, example) for each line that passes check_chat_file; bad lines are skipped silently."""
    for number, raw in read_lines(Path(path)):
        if raw:
            try:
                yield number, parse_line(raw)
            except BadLine:
                continue


def check_string_arguments(paths: Iterable[str | Path | None], report: Report) -> None:
    from trainkit.data.tool_arguments import string_arguments

    """OK line saying how many tool calls give their arguments as a JSON string (they train as objects)."""

    count = examples = 0
    for path in (p for p in paths if p is not None and Path(p).is_file()):
        for _, example in valid_examples(path):
            found = string_arguments(example)
            count += found
            examples += bool(found)
    if count:
        report.ok(f"{count} tool call(s) in {examples} example(s) give arguments as a JSON string: "
                  "parsed into objects, so the model learns to emit objects")


# ---------------------------------------------------------------------------
# Duplicates


def check_duplicates(train: FileSummary, validation: FileSummary | None, report: Report) -> None:
    """WARN about examples repeated within a file, and validation examples that are also in train."""
    clean = True
    for summary in (train, validation):
        if summary is not None:
            clean &= check_repeats(summary, report)
    if validation is not None:
        clean &= check_overlap(train, validation, report)
    if clean:
        report.ok("no duplicate examples" + (" and no train/validation overlap" if validation else ""))


def check_repeats(summary: FileSummary, report: Report) -> bool:
    seen: dict[bytes, int] = {}
    repeats, example = 0, None
    for number, key in summary.hashes:
        if key in seen:
            repeats += 1
            example = example or (seen[key], number)
        else:
            seen[key] = number
    if repeats:
        report.warning(f"{summary.path}: {repeats} example{'s are' if repeats > 1 else ' is'} an exact duplicate "
                       f"of an earlier one (first: line {example[1]} repeats line {example[0]})",
                       "drop the repeats; each copy makes the model learn that example once more")
    return not repeats


def check_overlap(train: FileSummary, validation: FileSummary, report: Report) -> bool:
    in_train = {key: number for number, key in reversed(train.hashes)}  # reversed: the first line wins
    shared = [(number, in_train[key]) for number, key in validation.hashes if key in in_train]
    if shared:
        (number, train_line) = shared[0]
        report.warning(f"{validation.path}: {len(shared)} of {validation.examples} validation examples also appear "
                       f"in {train.path} (first: line {number}, train line {train_line})",
                       "remove them from one of the files, so the validation loss measures unseen examples")
    return not shared
