"""Merge a LoRA adapter into its base model: a standalone model for llama.cpp / Ollama.

    python scripts/merge_adapter.py --adapter outputs/smoke/final --output models/weatherman-merged
    python scripts/merge_adapter.py --adapter outputs/weatherman-h100/final --output models/weatherman-merged \\
        --dtype bfloat16 --force

Loads the base (the one adapter_config.json records, unless --base names another) on
the CPU in --dtype (auto: the dtype the base's config.json declares, float32 when it
declares none), puts the adapter on it, folds it into the weights with PEFT's
merge_and_unload(safe_merge=True), and saves the model (safetensors), its generation
config and the tokenizer with its chat template with save_pretrained. The result loads
with AutoModelForCausalLM alone, no PEFT, and is what llama.cpp's convert_hf_to_gguf.py
takes.

Everything is written to a temporary directory next to --output and moved into place
at the end, so a failure or Ctrl-C never leaves a half-written model at --output. An
existing non-empty --output is refused unless --force: then files of the same name are
replaced, old weight files (*.safetensors, pytorch_model*.bin and their indexes) are
removed so no stale shard gets mixed in, and other files are kept.

Needs about the base model's size in RAM and on disk. Exit 0 when saved, 1 on any error
(one ERROR line with what to do).
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

TAG = "MERGE"


def build_parser() -> CheckerArgumentParser:
    parser = CheckerArgumentParser(prog="merge_adapter.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, metavar="DIR",
                        help="PEFT adapter directory: <output_dir>/final or a checkpoint-N")
    parser.add_argument("--output", required=True, metavar="DIR", help="where to save the merged model")
    parser.add_argument("--base", metavar="MODEL",
                        help="base model dir or hub id (default: base_model_name_or_path in adapter_config.json)")
    parser.add_argument("--dtype", choices=adapters.MERGE_DTYPES, default="auto",
                        help="dtype of the merged weights (default: auto, the base's own)")
    parser.add_argument("--force", action="store_true", help="write into an existing non-empty --output")
    return parser


def merge(args: argparse.Namespace) -> int:
    adapter = adapters.read_adapter(args.adapter)
    base = adapters.resolve_base(args.base, adapter)
    output = adapters.check_output(args.output, args.force, adapter, base)
    dtype = adapters.merge_dtype(args.dtype, base)
    protocol.section(TAG, f"base {base} + adapter {args.adapter} -> {output} ({adapters.dtype_name(dtype)}, on cpu)")
    adapters.warn_if_other_base(args.base, base, adapter)
    adapters.quiet_libraries()
    tokenizer = adapters.load_tokenizer(adapter, base)
    model = adapters.load_model(adapter, base, "cpu", dtype)
    layers = adapters.lora_layer_count(model)
    protocol.section(TAG, f"adapter loaded: {layers} LoRA layer(s) on {type(model.get_base_model()).__name__}")
    merged = adapters.merge(model)
    params = sum(p.numel() for p in merged.parameters())
    protocol.section(TAG, f"merged: {params / 1e6:,.1f}M parameters, no PEFT layers left")
    written = adapters.save_merged(merged, tokenizer, output, force=args.force)
    size = sum(p.stat().st_size for p in written if p.is_file())
    protocol.section(TAG, f"saved {', '.join(p.name for p in written)} ({size / 2**20:,.1f} MiB) to {output}")
    protocol.section(TAG, f"next: convert to GGUF for llama.cpp/Ollama: {adapters.gguf_command(output)}")
    protocol.success(f"merged model saved to {output}")
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return merge(args)
    except TrainkitError as exc:
        protocol.error(exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        protocol.error(f"merge interrupted: nothing was written to {args.output}", "re-run the same command")
        return ExitCode.INTERRUPTED
    except Exception as exc:  # the log keeps the traceback; the user gets one ERROR line
        return adapters.report_crash("merge_adapter", "merge", exc, f"; nothing was written to {args.output}")


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
