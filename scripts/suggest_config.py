"""Write a training config that fits this machine (or a named one), with a reason on every key.

# Usage: scripts/suggest_config.py [--model ID_OR_DIR] [--platform auto|h100|m4|cpu] [--data FILE]
#                                  [--validation FILE] [--hours H] [--preset beginner|balanced|fast]
#                                  [--memory-gb N] [--tokens-per-second N] [--config FILE] [--set KEY=VALUE]...
#                                  [--output FILE] [--output-dir DIR] [--force | --next-free]

    python scripts/suggest_config.py --model Qwen/Qwen2.5-7B-Instruct --data data/processed/train.jsonl
    python scripts/suggest_config.py --model Qwen/Qwen2.5-7B-Instruct --platform h100 --memory-gb 24
    python scripts/suggest_config.py --platform cpu            # init-config: the template for this platform
    make init-config                                          # the same, for this machine

Reads the architecture on the meta device (no weights, nothing downloaded), the accelerator
memory (this machine's, the platform's typical one, or --memory-gb), and with --data the token
length of every example; chooses LoRA rank and targets, micro-batch and accumulation, max_length
(covering 99 % of the examples unless memory forbids), precision, activation checkpointing (off
when it fits without) and QLoRA (CUDA only, when bf16 weights and activations do not fit), then
max_steps, learning rate and warmup. Prints the memory estimate and the expected duration, and
writes a commented YAML that scripts/validate_training_config.py accepts.

  --model        hub id or local directory (default: Qwen/Qwen2.5-7B-Instruct; models/tiny-chat on cpu)
  --data         JSONL chat data to size max_length and max_steps by (default: data/processed/train.jsonl
                 when it exists; data/sample/train.jsonl on cpu)
  --validation   JSONL chat data to evaluate on (default: validation.jsonl next to --data, if present)
  --hours        size max_steps to this many hours at the estimated (or --tokens-per-second) throughput
  --preset       beginner (2 epochs, cautious), balanced (3 epochs; default), fast (1 epoch, rank 8)
  --memory-gb    accelerator memory to plan for, in GB as the card is sold (system memory on cpu)
  --config       a config whose keys are kept as they are (they win over the preset and the suggestion)
  --set          KEY=VALUE (YAML value) that wins over everything, e.g. --set max_length=1024
  --output       where to write (default configs/mine.yaml); an existing file needs --force, or --next-free
                 writes beside it (configs/mine-2.yaml, -3, ...) and says so (make init-config does)

Exit codes: 0 written, 1 input error or the model does not fit the machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainkit.config.presets import PRESETS
from trainkit.core import protocol
from trainkit.core.errors import ConfigError
from trainkit.core.protocol import ExitCode
from trainkit.core.report import CheckerArgumentParser

TAG = "SUGGEST"
DEFAULT_MODEL = "Qwen/Qwen2.5-7B-Instruct"
CPU_MODEL = "models/tiny-chat"


def parse_args(argv):
    parser = CheckerArgumentParser(prog="suggest_config.py", add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--model")
    parser.add_argument("--platform", default="auto", choices=["auto", "h100", "m4", "cpu"])
    parser.add_argument("--data")
    parser.add_argument("--validation")
    parser.add_argument("--hours", type=float)
    parser.add_argument("--preset", default="balanced", choices=sorted(PRESETS))
    parser.add_argument("--memory-gb", type=float)
    parser.add_argument("--tokens-per-second", type=float)
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--output", default="configs/mine.yaml")
    parser.add_argument("--output-dir")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--next-free", action="store_true")
    return parser.parse_args(argv)


def next_free(path: Path) -> Path:
    """`path`, or the first of path-2, path-3, ... that does not exist yet."""
    n = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate


def parse_sets(items: list[str]) -> dict:
    import yaml

    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected KEY=VALUE", "e.g. --set max_length=1024")
        values[key.strip()] = yaml.safe_load(raw)
    return values


def check_keys(values: dict, where: str) -> None:
    from trainkit.config.settings import known_keys, unknown_key_error

    unknown = [k for k in values if k not in known_keys() and k != "env"]
    if unknown:
        raise unknown_key_error(unknown, where)


def defaults(args, platform: str) -> None:
    """init-config: with nothing named, the model and data this platform trains."""
    if args.model is None:
        args.model = CPU_MODEL if platform == "cpu" else DEFAULT_MODEL
    if args.data is None:
        for candidate in (["data/sample/train.jsonl"] if platform == "cpu" else ["data/processed/train.jsonl"]):
            if (ROOT / candidate).is_file():
                args.data = candidate
    if args.data and args.validation is None:
        sibling = Path(args.data).with_name("validation.jsonl")
        if sibling.is_file() and sibling != Path(args.data):
            args.validation = str(sibling)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.help:
        print(__doc__.strip())
        return ExitCode.OK
    try:
        from trainkit.config.settings import load_yaml
        from trainkit.preflight.calibrate import DECODE_SLOWDOWN, Throughput
        from trainkit.preflight.suggest import machine_for, memory_line, plan_line, render_yaml, suggest

        output = Path(args.output)
        if output.exists() and args.next_free and not args.force:
            output = next_free(output)
            protocol.section("SUGGEST", f"{args.output} already exists and is kept: writing {output} "
                                        "(make init-config FORCE=1 overwrites it)")
        if output.exists() and not args.force:
            raise ConfigError(f"{output} already exists", "pass --force to overwrite it, or --output another file")
        config = load_yaml(args.config) if args.config else {}
        check_keys(config, args.config or "")
        cli = parse_sets(args.set)
        check_keys(cli, "--set")
        machine = machine_for(args.platform, args.memory_gb)
        defaults(args, machine.platform)
        protocol.section(TAG, f"machine: {machine.platform} ({machine.device}), {machine.memory_gb:g} GB "
                              f"({machine.memory_source}), budget {machine.budget_gb:g} GB")
        given = None
        if args.tokens_per_second:
            given = Throughput(args.tokens_per_second, args.tokens_per_second / DECODE_SLOWDOWN,
                               "given with --tokens-per-second")

        def plan(measured):
            return suggest(args.model, machine, data=args.data, validation=args.validation, hours=args.hours,
                           preset=args.preset, config=config, cli=cli, measured=measured, output_dir=args.output_dir)

        s = plan(given)
        if given is None and s.measurable and args.data:
            # On this CPU a FLOP count says little: time the suggested config, then plan again with that.
            from trainkit.bench import calibrate

            measured = calibrate(render_yaml(s), s.model_dir)
            if measured is not None:
                s = plan(measured)
    except ConfigError as exc:
        protocol.error(exc.message, exc.hint)
        return ExitCode.ERROR
    protocol.section(TAG, s.architecture_line)
    for note in s.notes:
        protocol.section(TAG, note)
    for key in sorted(s.values):
        if not s.sources[key].startswith("suggested"):
            protocol.section(TAG, f"{key}: {s.values[key]} (from the {s.sources[key]})")
    protocol.section(TAG, f"memory: {memory_line(s)}")
    protocol.section(TAG, f"plan: {plan_line(s)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_yaml(s), encoding="utf-8")
    protocol.success(f"wrote {output}; next: scripts/validate_training_config.py --config {output}, "
                     f"then python train.py --config {output} --dry-run")
    return ExitCode.OK


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
