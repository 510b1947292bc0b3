"""Generate from a base model + LoRA adapter, to see what training did.

    python scripts/sample.py --adapter outputs/smoke/final --prompt "Will it rain in Oslo tomorrow?"
    python scripts/sample.py --adapter outputs/weatherman-h100/checkpoint-500 --prompts-file prompts.txt \\
        --system "You are Weatherman, a friendly TV weather forecaster." --tools tools.json
    python scripts/sample.py --adapter outputs/smoke/final --prompt "Any snow?" --temperature 0 --device cpu

--adapter is a PEFT adapter directory: a run's output_dir/final or a checkpoint-N. The
base model is the one adapter_config.json records (a path relative to the repo is found
from any directory), unless --base names another. The tokenizer and its chat template
come from the adapter directory when training saved them there, else from the base.

Prompts go through the chat template with add_generation_prompt=True. --prompts-file
holds one prompt per line, or JSONL lines with "prompt" (text) or "messages" (a chat; a
training example is cut before its first assistant turn, and its own "tools" are used).
--system adds a system message to prompts without one; --tools is a JSON list of tool
schemas in OpenAI function format, passed to apply_chat_template(tools=...).
--temperature 0 is greedy; the seed is set before each prompt. --device auto picks
cuda > mps > cpu, in bf16 on cuda/mps and fp32 on cpu.

Prints a [SAMPLE] header, then per prompt a "[SAMPLE] prompt N: ..." line followed by
the completion as plain lines, then the verdict. Exit 0 when every prompt was answered,
1 on any error (one ERROR line with what to do).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit.core import protocol
from trainkit.core.errors import TrainkitError
from trainkit.core.protocol import ExitCode
from trainkit.core.report import CheckerArgumentParser
from trainkit.evaluate import adapters

TAG = "SAMPLE"


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def temperature(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (0 is greedy), not {text}")
    return value


def build_parser() -> CheckerArgumentParser:
    parser = CheckerArgumentParser(prog="sample.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, metavar="DIR",
                        help="PEFT adapter directory: <output_dir>/final or a checkpoint-N")
    parser.add_argument("--base", metavar="MODEL",
                        help="base model dir or hub id (default: base_model_name_or_path in adapter_config.json)")
    parser.add_argument("--prompt", action="append", metavar="TEXT", help="a user message to answer (repeatable)")
    parser.add_argument("--prompts-file", metavar="FILE",
                        help='one prompt per line, or JSONL lines with "prompt" or "messages"')
    parser.add_argument("--system", metavar="TEXT", help="system message for prompts that have none")
    parser.add_argument("--tools", metavar="FILE", help="JSON list of tool schemas (OpenAI function format)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=128, metavar="N",
                        help="most tokens to generate per prompt (default: 128)")
    parser.add_argument("--temperature", type=temperature, default=0.7, metavar="T",
                        help="sampling temperature; 0 is greedy (default: 0.7)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed, set per prompt (default: 0)")
    parser.add_argument("--device", choices=adapters.DEVICES, default="auto",
                        help="auto: cuda > mps > cpu (default: auto)")
    return parser


def sample(args: argparse.Namespace) -> int:
    # Everything that can be checked without torch first: a typo fails in a second.
    adapter = adapters.read_adapter(args.adapter)
    tools = adapters.read_tools(args.tools) if args.tools else None
    prompts = adapters.build_prompts(args.prompt, args.prompts_file, args.system, tools)
    base = adapters.resolve_base(args.base, adapter)
    device = adapters.choose_device(args.device)
    dtype = adapters.inference_dtype(device)
    protocol.section(TAG, f"base {base} + adapter {args.adapter} on {device} ({adapters.dtype_name(dtype)}), "
                          f"{len(prompts)} prompt(s), temperature {args.temperature:g}, seed {args.seed}")
    adapters.warn_if_other_base(args.base, base, adapter)
    adapters.quiet_libraries()
    tokenizer = adapters.load_tokenizer(adapter, base)
    model = adapters.load_model(adapter, base, device, dtype)
    for number, prompt in enumerate(prompts, 1):
        protocol.section(TAG, f"prompt {number}: {adapters.one_line(prompt.text)}")
        text = adapters.complete(model, tokenizer, prompt, device=device, max_new_tokens=args.max_new_tokens,
                                 temperature=args.temperature, seed=args.seed)
        if text:
            print("\n".join(adapters.safe_completion_lines(text)), flush=True)
        else:
            protocol.warning(f"prompt {number}: empty completion (the model ended its turn at once)",
                             "try --temperature 0.7 or another --seed; an adapter trained for very few steps "
                             "may not have learnt to answer yet")
    protocol.success(f"generated {len(prompts)} completion(s)")
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return sample(args)
    except TrainkitError as exc:
        protocol.error(exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        protocol.error("sampling interrupted", "re-run the same command")
        return ExitCode.INTERRUPTED
    except Exception as exc:  # the log keeps the traceback; the user gets one ERROR line
        return adapters.report_crash("sample", "sampling", exc)


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
