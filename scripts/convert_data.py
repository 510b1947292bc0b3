"""Convert chat data from ShareGPT, Alpaca or OpenAI formats into trainkit's messages format.

    python scripts/convert_data.py IN OUT [--from FORMAT]
    python scripts/convert_data.py data/raw/glaive_toolcall.jsonl data/processed/train.jsonl
    python scripts/convert_data.py alpaca_data.jsonl data/processed/train.jsonl --from alpaca

IN may be JSON Lines, a JSON array of examples (LLaMA-Factory's demo files), Parquet or CSV (a Hub
dataset's files, read through `datasets`), or a directory a dataset was saved to.
FORMAT is one of sharegpt (conversations of from/value turns, with LLaMA-Factory's
function_call/observation turns and tools string), alpaca (instruction/input/output),
openai-functions (legacy function_call and functions) or openai (chat whose tool-call
arguments are JSON strings); without --from it is detected from the first example that parses.
Every line written is checked like train_file; an example that cannot be converted is
reported with its line (or row) number and reason (one WARNING) and kept in OUT.skipped.jsonl.
OUT is written only when something converted. Exit 0 when at least one example converted, 1 when
none did or the input cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit.core import protocol
from trainkit.core.report import CheckerArgumentParser
from trainkit.data.convert import FORMATS, convert_file, skipped_file

SHOWN = 10  # skipped lines listed one by one; the rest are in OUT.skipped.jsonl


def main(argv: list[str] | None = None) -> int:
    parser = CheckerArgumentParser(prog="convert_data.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, metavar="IN")
    parser.add_argument("target", type=Path, metavar="OUT")
    parser.add_argument("--from", dest="fmt", choices=FORMATS, help="the input format (default: detect it)")
    args = parser.parse_args(argv)
    if not args.source.exists():
        protocol.error(f"{args.source} does not exist", "give the file to convert as IN (JSONL, a JSON array, "
                       "Parquet, CSV, or a directory a dataset was saved to)")
        return protocol.ExitCode.ERROR
    if args.source.resolve() == args.target.resolve():
        protocol.error("IN and OUT are the same file", "write the converted data to a new file")
        return protocol.ExitCode.ERROR
    args.target.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = convert_file(args.source, args.target, args.fmt)
    except (OSError, ValueError) as exc:  # datasets could not read the Parquet/CSV/saved dataset
        protocol.error(f"{args.source} cannot be read: {exc.__class__.__name__}: {exc}".splitlines()[0][:300],
                       "give JSON Lines, a JSON array of examples, Parquet, CSV, or a directory a dataset was saved to")
        return protocol.ExitCode.ERROR
    if result.fmt is None:
        protocol.error(f"{args.source}: the first example is in none of the formats this converts",
                       f"pass --from with one of {', '.join(FORMATS)}, or see the data format in README.md")
        return protocol.ExitCode.ERROR
    protocol.section("CONVERT", f"{args.source} ({result.fmt}) -> {args.target}: {result.converted} converted, "
                                f"{len(result.skipped)} skipped")
    for number, why in result.skipped[:SHOWN]:
        print(f"  {args.source}:{number}: skipped: {why}")
    if len(result.skipped) > SHOWN:
        print(f"  … and {len(result.skipped) - SHOWN} more")
    if not result.converted:
        protocol.error(f"{args.source}: no line could be converted from {result.fmt}",
                       f"check the format (--from {'/'.join(FORMATS)}); every line and why is in "
                       f"{skipped_file(args.target)}")
        return protocol.ExitCode.ERROR
    if result.skipped:
        protocol.warning(f"{args.source}: {len(result.skipped)} of {result.converted + len(result.skipped)} lines "
                         f"could not be converted and are not in {args.target}",
                         f"each line, its reason and its text are in {skipped_file(args.target)}: fix them and "
                         "convert again, or train without them")
    protocol.success(f"{args.target}: {result.converted} examples in trainkit's messages format; check them with "
                     "python scripts/inspect_data.py --config <your config>")
    return protocol.ExitCode.OK


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
