"""Tool-call figures for a trained adapter, or for the bare base model, on a chat JSONL file.

    python scripts/evaluate.py --adapter outputs/smoke/final --data data/sample/validation.jsonl
    python scripts/evaluate.py --adapter outputs/weatherman-h100/final --data data/processed/validation.jsonl --n 50
    python scripts/evaluate.py --adapter outputs/smoke/final --base-only --data data/sample/validation.jsonl --json
    python scripts/evaluate.py --base models/tiny-chat --base-only --data data/sample/validation.jsonl

The same evaluation train.py runs at each eval step (trainkit/evaluate/tool_eval.py): --n conversations
drawn with a fixed seed (the defaults pick the same ones as training's tool_eval_samples), every
assistant turn generated greedily from the conversation before it (with the row's tools) and
parsed in the tool-call format the chat template renders. --base-only evaluates the base model
without the adapter (the one adapter_config.json records, or --base), so the two runs side by
side show what training changed.

Figures (each a share from 0 to 1, n/a when there was nothing to count):
  tool_call_parse_rate      turns that should call a tool where a well-formed call came out
  tool_name_accuracy        expected calls answered by a call to the same function
  tool_args_exact           ... with arguments equal as JSON objects
  tool_args_keys            ... with the same argument names
  false_call_rate           turns that should answer in text where a call came out
  arguments_as_string_rate  generated calls whose arguments are a JSON string (double encoding)

Prints [EVALUATE] lines and the verdict; with --json, one JSON object on stdout (described by
docs/evaluate.schema.json) and the tagged lines on stderr. Exit 0 when the evaluation ran,
whatever the figures; 1 on any error (one ERROR line with what to do); 75 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainkit.core import protocol
from trainkit.core.errors import TrainkitError
from trainkit.core.protocol import ExitCode
from trainkit.core.report import CheckerArgumentParser
from trainkit.evaluate import adapters
from trainkit.evaluate.tool_eval import GENERATION_BATCH_SIZE, SAMPLE_SEED

TAG = "EVALUATE"
SCHEMA_VERSION = 1
DEFAULT_N = 16  # TrainkitArguments.tool_eval_samples
DEFAULT_MAX_NEW_TOKENS = 128  # TrainkitArguments.tool_eval_max_new_tokens
MEANINGS = {
    "tool_call_parse_rate": ("well-formed call where one was due", "call_turns", "turns"),
    "tool_name_accuracy": ("right function", "expected_calls", "expected calls"),
    "tool_args_exact": ("right function and arguments", "expected_calls", "expected calls"),
    "tool_args_keys": ("right function and argument names", "expected_calls", "expected calls"),
    "false_call_rate": ("call where text was due", "text_turns", "turns"),
    "arguments_as_string_rate": ("arguments double-encoded as a string", "generated_calls", "generated calls"),
}
NUMERATORS = {
    "tool_call_parse_rate": "parsed_call_turns", "tool_name_accuracy": "name_matches",
    "tool_args_exact": "args_exact", "tool_args_keys": "args_keys", "false_call_rate": "false_call_turns",
    "arguments_as_string_rate": "string_arguments",
}


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def build_parser() -> CheckerArgumentParser:
    parser = CheckerArgumentParser(prog="evaluate.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", metavar="DIR", help="PEFT adapter directory: <output_dir>/final or a checkpoint-N")
    parser.add_argument("--base", metavar="MODEL",
                        help="base model dir or hub id (default: base_model_name_or_path in adapter_config.json)")
    parser.add_argument("--base-only", action="store_true",
                        help="evaluate the base model without the adapter (needs --adapter or --base)")
    parser.add_argument("--data", required=True, metavar="FILE", help="JSONL chat data, e.g. the validation file")
    parser.add_argument("--n", type=positive_int, default=DEFAULT_N, metavar="N",
                        help=f"conversations to sample (default: {DEFAULT_N}, as tool_eval_samples)")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED, metavar="N",
                        help=f"seed of the sample (default: {SAMPLE_SEED}, the one training uses)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                        help=f"most tokens generated per turn (default: {DEFAULT_MAX_NEW_TOKENS})")
    parser.add_argument("--batch-size", type=positive_int, default=GENERATION_BATCH_SIZE, metavar="N",
                        help=f"turns generated together (default: {GENERATION_BATCH_SIZE})")
    parser.add_argument("--device", choices=adapters.DEVICES, default="auto",
                        help="auto: cuda > mps > cpu (default: auto)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout (docs/evaluate.schema.json); tagged lines go to stderr")
    return parser


def resolve_model(name: str) -> str:
    """--base without an adapter: a directory here or under the repo, else a hub id."""
    from trainkit.config.settings import looks_local

    found = adapters.local_model_dir(name)
    if found:
        return found
    if looks_local(name, ROOT):
        raise TrainkitError(f"base model not found: {name}",
                            "pass --base with a model directory or hub id (`make setup` builds models/tiny-chat)")
    return name


def load(args: argparse.Namespace):
    """(tokenizer, model, base, adapter path or None), with every input checked before the model loads."""
    if not args.adapter and not (args.base_only and args.base):
        raise TrainkitError("no model to evaluate: pass --adapter DIR, or --base-only with --base MODEL",
                            "e.g. --adapter outputs/smoke/final, or --base models/tiny-chat --base-only")
    adapter = adapters.read_adapter(args.adapter) if args.adapter else None
    base = adapters.resolve_base(args.base, adapter) if adapter else resolve_model(args.base)
    if adapter and not args.base_only:
        adapters.warn_if_other_base(args.base, base, adapter)
    return adapter, base


def load_tokenizer(adapter, base: str):
    if adapter:
        return adapters.load_tokenizer(adapter, base)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError) as exc:
        raise TrainkitError(f"could not load a tokenizer from {base}: {adapters.one_line(str(exc))[:300]}",
                            "check --base: a model directory with tokenizer files, or a hub id") from None
    if not tokenizer.chat_template:
        raise TrainkitError(f"the tokenizer from {base} has no chat template", "use a chat (instruct) base model")
    return tokenizer


def run(args: argparse.Namespace) -> dict:
    from trainkit.core.errors import DataError
    from trainkit.evaluate import tool_eval as evaluation

    adapter, base = load(args)
    every = evaluation.read_conversations(args.data)
    if not every:
        raise DataError(f"no chat conversations with an assistant turn in {args.data}",
                        'each line needs a "messages" list with at least one assistant turn')
    conversations = evaluation.sample(every, args.n, args.seed)
    device = adapters.choose_device(args.device)
    dtype = adapters.inference_dtype(device)
    adapters.quiet_libraries()
    tokenizer = load_tokenizer(adapter, base)
    parser = evaluation.parser_or_error(tokenizer)
    what = f"base {base}" + ("" if args.base_only else f" + adapter {args.adapter}")
    protocol.section(TAG, f"{what} on {device} ({adapters.dtype_name(dtype)}): {len(conversations)} of {len(every)} "
                          f"conversations in {args.data}, tool-call format {parser[0]}, greedy, at most "
                          f"{args.max_new_tokens} new tokens per turn")
    if args.base_only:
        model = adapters.load_base(base, dtype, device)
        model.eval()
    else:
        model = adapters.load_model(adapter, base, device, dtype)
    result = evaluation.evaluate(model, tokenizer, conversations, max_new_tokens=args.max_new_tokens,
                                 batch_size=args.batch_size, parser=parser)
    figures = result.figures
    return {
        "schema_version": SCHEMA_VERSION,
        "format": result.family,
        "base": base,
        "adapter": None if args.base_only else str(args.adapter),
        "base_only": bool(args.base_only),
        "data": str(args.data),
        "device": device,
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
        "seconds": round(result.seconds, 3),
        "figures": figures.rates(),
        "counts": {"conversations": len(conversations), "available_conversations": len(every),
                   "skipped_turns": result.skipped_turns, **figures.counts()},
        "verdicts": figures.verdicts,
        "turns": result.rows(),
    }


def report(document: dict) -> None:
    counts = document["counts"]
    for name, (meaning, denominator, unit) in MEANINGS.items():
        value = document["figures"][name]
        shown = "n/a " if value is None else f"{value:.2f}"
        protocol.section(TAG, f"{name:<25} {shown}  {meaning} "
                              f"({counts[NUMERATORS[name]]}/{counts[denominator]} {unit})")
    verdicts = ", ".join(f"{kind} {count}" for kind, count in sorted(document["verdicts"].items()))
    protocol.section(TAG, f"turns by verdict: {verdicts or 'none'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        try:
            document = run(args)
            report(document)
            counts = document["counts"]
            protocol.success(f"evaluated {counts['turns']} assistant turns of {counts['conversations']} conversations "
                             f"in {document['seconds']:.1f} s: tool_call_parse_rate "
                             f"{_shown(document['figures']['tool_call_parse_rate'])}, tool_args_exact "
                             f"{_shown(document['figures']['tool_args_exact'])}")
        except TrainkitError as exc:
            protocol.error(exc.message, exc.hint)
            return exc.exit_code
        except KeyboardInterrupt:
            protocol.error("evaluation interrupted", "re-run the same command")
            return ExitCode.INTERRUPTED
        except Exception as exc:  # the log keeps the traceback; the user gets one ERROR line
            return adapters.report_crash("evaluate", "evaluation", exc)
    if args.json:
        out.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
        out.flush()
    return ExitCode.OK


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
