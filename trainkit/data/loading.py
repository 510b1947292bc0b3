"""JSONL chat data through `datasets`: messages (with tool calls) and an optional tools column.

Examples are normalised as they load, so every path that renders them (the trainer,
the preflight, inspect_data.py) sees the same thing: tool-call arguments written as a
JSON string (OpenAI's fine-tuning format) are parsed into the object they hold. Left
as a string, a chat template renders `"arguments": "{\\"city\\": \\"Oslo\\"}"` and the
model learns to emit arguments as a string, which tool-call parsers then hand on as one.
"""

from __future__ import annotations

from pathlib import Path

from trainkit.core.errors import DataError
from trainkit.data.tool_arguments import parse_arguments, string_arguments

# Columns TRL's SFTTrainer knows how to train on; anything else fails deep inside
# datasets.map with KeyError: 'text' after the model has loaded.
KNOWN_FORMATS = ({"messages"}, {"conversations"}, {"prompt", "completion"}, {"text"})


def normalize_example(example: dict) -> dict:
    """The example as trainkit trains on it: tool-call arguments as objects. Returns a new dict."""
    if not string_arguments(example):
        return example
    messages = []
    for message in example["messages"]:
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if calls:
            message = {**message, "tool_calls": [normalize_call(call) for call in calls]}
        messages.append(message)
    return {**example, "messages": messages}


def normalize_call(call):
    if isinstance(call, dict) and isinstance(call.get("function"), dict):
        function = call["function"]
        return {**call, "function": {**function, "arguments": parse_arguments(function.get("arguments"))}}
    return call


def normalize_messages(example: dict) -> dict:
    """datasets.map form of normalize_example: only the messages column changes."""
    return {"messages": normalize_example(example)["messages"]}


def check_file(path: str, key: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{key} not found: {path}", f"point {key} at a JSONL file (see data/sample/)")
    if file.stat().st_size == 0:
        raise DataError(f"{key} is empty: {path}", "fill it with one JSON chat example per line")
    return file


def load_chat_data(train_file: str, validation_file: str | None):
    """A DatasetDict with train (and validation) splits, read as the preflight reads them (trainkit.data.reader)
    and normalised."""
    import datasets

    from trainkit.data.reader import as_dataset, read_chat_file

    files = {"train": (train_file, "train_file")}
    if validation_file:
        files["validation"] = (validation_file, "validation_file")
    loaded = datasets.DatasetDict()
    for split, (path, key) in files.items():
        check_file(path, key)
        loaded[split] = as_dataset(read_chat_file(path, key))
    for split, dataset in loaded.items():
        columns = set(dataset.column_names)
        if not any(fmt <= columns for fmt in KNOWN_FORMATS):
            raise DataError(
                f"{files[split][0]} has columns {sorted(columns)}, none of them a chat format",
                "each line needs a \"messages\" list of {\"role\", \"content\"} turns",
            )
    for split, dataset in loaded.items():
        if "messages" in dataset.column_names:
            # features= keeps the Json feature: arguments with different keys per row stay intact.
            loaded[split] = dataset.map(normalize_messages, features=dataset.features,
                                        desc=f"Parsing tool-call arguments ({split})")
    return loaded

EVAL_SAMPLE_SEED = 0  # the same validation examples at every evaluation, on every backend


def eval_subset(count: int, cap: int | None) -> list[int] | None:
    """The validation rows (in file order) that an eval loss capped at `cap` examples covers; None: all of them."""
    import random

    if cap is None or count <= cap:
        return None
    return sorted(random.Random(EVAL_SAMPLE_SEED).sample(range(count), cap))
