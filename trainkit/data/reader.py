"""The one reader of JSONL chat files: the preflight, the trainer (train and validation), evaluate.py,
inspect_data.py and convert_data.py read a file the same way.

    examples = read_chat_file("data/processed/validation.jsonl", "validation_file")   # [(line, example)]

Accepted everywhere: a UTF-8 byte-order mark, CRLF line ends, blank lines at the end. Refused everywhere,
with one ERROR naming the file and line (and how many more bad lines there are): a blank line between
examples, a line that is not one JSON object in a chat format, a JSON array or a multi-line object, a
binary file. The rules are trainkit.data.checks' (check_chat_file, read_lines, parse_line).
"""

from __future__ import annotations

from pathlib import Path

from trainkit.core.errors import DataError
from trainkit.core.report import Report


def read_chat_file(path: str | Path, key: str) -> list[tuple[int, dict]]:
    """Every example of the file with its line number; DataError with the preflight's own ERROR when any line
    (or the file as a whole) is refused."""
    from trainkit.data.checks import check_chat_file, valid_examples

    report = Report("DATA")
    check_chat_file(path, key, report)
    if report.errors:
        finding = report.errors[0]
        raise DataError(finding.message, finding.hint)
    return list(valid_examples(path))


def as_dataset(examples: list[tuple[int, dict]]):
    """A datasets.Dataset of the examples with the types datasets' JSON reader gives a JSONL file (each message a
    Json value, so tool-call arguments keep their own keys), in memory."""
    import json
    import tempfile

    import datasets

    with tempfile.TemporaryDirectory(prefix="trainkit-data-") as tmp:
        clean = Path(tmp) / "data.jsonl"
        with clean.open("w", encoding="utf-8") as fh:
            for _, example in examples:
                fh.write(json.dumps(example, ensure_ascii=False) + "\n")
        return datasets.load_dataset("json", data_files=str(clean), split="train", cache_dir=str(Path(tmp) / "cache"),
                                     keep_in_memory=True)
