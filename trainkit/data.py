"""JSONL chat data through `datasets`: messages (with tool calls) and an optional tools column."""

from __future__ import annotations

from pathlib import Path

from trainkit.errors import DataError

# Columns TRL's SFTTrainer knows how to train on; anything else fails deep inside
# datasets.map with KeyError: 'text' after the model has loaded.
KNOWN_FORMATS = ({"messages"}, {"conversations"}, {"prompt", "completion"}, {"text"})


def check_file(path: str, key: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{key} not found: {path}", f"point {key} at a JSONL file (see data/sample/)")
    if file.stat().st_size == 0:
        raise DataError(f"{key} is empty: {path}", "fill it with one JSON chat example per line")
    return file


def load_chat_data(train_file: str, validation_file: str | None):
    """A DatasetDict with train (and validation) splits, checked for a trainable format."""
    import datasets

    files = {"train": str(check_file(train_file, "train_file"))}
    if validation_file:
        files["validation"] = str(check_file(validation_file, "validation_file"))
    try:
        loaded = datasets.load_dataset("json", data_files=files)
    except Exception as exc:  # datasets wraps parse errors in several exception types
        cause = exc.__cause__ or exc
        raise DataError(
            f"could not read the data as JSONL: {cause}".replace("\n", " ")[:400],
            "each line must be one JSON object such as {\"messages\": [...]}",
        ) from None
    for split, dataset in loaded.items():
        columns = set(dataset.column_names)
        if not any(fmt <= columns for fmt in KNOWN_FORMATS):
            raise DataError(
                f"{files[split]} has columns {sorted(columns)}, none of them a chat format",
                "each line needs a \"messages\" list of {\"role\", \"content\"} turns",
            )
    return loaded
