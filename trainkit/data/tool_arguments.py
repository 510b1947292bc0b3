"""Tool-call arguments as files carry them: an object, or (OpenAI's fine-tuning format) a JSON string.

    parse_arguments('{"city": "Oslo"}')   # {"city": "Oslo"}: trainkit trains arguments as objects
    string_arguments(example)             # how many calls of an example give a string
"""

from __future__ import annotations

import json


def parse_arguments(arguments):
    """A tool call's arguments as an object: a JSON string holding an object is parsed, anything else is kept."""
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return arguments
        if isinstance(parsed, dict):
            return parsed
    return arguments


def string_arguments(example: dict) -> int:
    """How many tool calls in an example give their arguments as a JSON string."""
    count = 0
    for message in example.get("messages") or []:
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            function = call.get("function") if isinstance(call, dict) else None
            count += isinstance(function, dict) and isinstance(function.get("arguments"), str)
    return count
