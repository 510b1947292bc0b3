"""One config surface: a flat YAML with TRL's key names plus trainkit's own.

    python train.py --config configs/smoke.yaml --max_steps 20 --output_dir outputs/x

The schema is TRL's `SFTConfig` and `ModelConfig` plus `TrainkitArguments` below,
parsed by TRL's own parser (YAML as defaults, CLI flags override). trainkit adds
what the libraries leave out: unknown keys are refused with a did-you-mean instead
of a usage dump, and the device, precision and attention are chosen for the
machine unless the config names them.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from trainkit.core.credentials import is_secret_name, move_hub_token
from trainkit.core.errors import ConfigError
from trainkit.core.status import world_size

PLATFORM_OF_DEVICE = {"cuda": "h100", "mps": "m4", "cpu": "cpu"}


# distributed_strategy's values; trainkit.preflight.strategy decides what auto means.
STRATEGIES = ("auto", "ddp", "fsdp")
# What trains: trainkit.train.backend implements each.
BACKENDS = ("torch", "mlx")
# `activation_checkpointing: auto` lets the memory estimate decide (trainkit.preflight.speed).
AUTO = "auto"
KEY = "activation_checkpointing"
FLAG = "activation_checkpointing_auto"


@dataclass
class TrainkitArguments:
    """trainkit's own keys; everything else is TRL's."""

    train_file: str = field(
        default="data/processed/train.jsonl", metadata={"help": "JSONL chat data to train on."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "JSONL chat data to evaluate on (optional)."}
    )
    platform: str = field(
        default="auto",
        metadata={"help": "Tag for progress lines; auto picks from the device.",
                  "choices": ["auto", "h100", "m4", "cpu"]},
    )
    backend: str = field(
        default="torch",
        metadata={"help": "torch, or mlx on Apple Silicon.",
                  "choices": list(BACKENDS)},
    )
    crash_loop_limit: int = field(
        default=3, metadata={"help": "Resumes from the same step without progress before giving up (exit 2)."}
    )
    loss_spike_factor: float = field(
        default=0.0,
        metadata={"help": "Stop (exit 3) when a loss exceeds this multiple of its running average; 0 is off. "
                  "NaN/inf always stops."},
    )
    distributed_strategy: str = field(
        default="auto",
        metadata={"help": "Several GPUs: ddp (a model copy on each), fsdp (sharded over them), auto (fsdp only when "
                  "a copy does not fit).",
                  "choices": list(STRATEGIES)},
    )
    effective_batch_size: int | None = field(
        default=None,
        metadata={"help": "Sequences per optimizer step, whatever the GPU count: sets gradient_accumulation_steps "
                  "(unset: N GPUs train N times the batch)."},
    )
    memory_budget_gb: float | None = field(
        default=None,
        metadata={"help": "Accelerator memory the run may use (default: the Mac's GPU working set, h100 70)."},
    )
    estimate_after_steps: int = field(
        default=100,
        metadata={"help": "Print a time-to-finish estimate from the measured throughput after this many steps "
                  "(0 turns it off)."},
    )
    wandb_project: str = field(default="weatherman", metadata={"help": "W&B project when report_to has wandb."})
    wandb_timeout_seconds: float = field(
        default=30.0, metadata={"help": "Wait for W&B at start and end; then it logs offline."})
    tool_eval_samples: int = field(
        default=16,
        metadata={"help": "Validation conversations generated and scored for tool calls at each evaluation "
                  "(0: off)."},
    )
    tool_eval_max_new_tokens: int = field(
        default=128, metadata={"help": "Most tokens generated per assistant turn in the tool-call evaluation."}
    )
    notify_events: list[str] | None = field(
        default=None,
        metadata={"help": "Events posted to TRAINKIT_NOTIFY_URL (docs/AGENT_PROTOCOL.md lists them); unset: all "
                  "but eval."},
    )
    eval_max_examples: int | None = field(
        default=None,
        metadata={"help": "Validation examples in each eval loss, a fixed sample (unset: all)."},
    )
    oom_retry_with_checkpointing: bool = field(
        default=False,
        metadata={"help": "Out of memory without activation_checkpointing: relaunch with it on (exit 70), not "
                  "stop (exit 1)."},
    )
    more_steps: int = field(
        default=0,
        metadata={"help": "Continue a finished run N more steps (optimizer kept, a new warmup + cosine)."},
    )
    activation_checkpointing_auto: bool = field(
        default=False,
        metadata={"help": "Let the memory estimate decide activation_checkpointing (what "
                  "`activation_checkpointing: auto` in a config sets); the preflight says which it chose."},
    )
    save_every_minutes: float = field(
        default=15,
        metadata={"help": "Also save when this many minutes passed since the last save: a preemption loses at "
                  "most that (0: off)."},
    )
    stall_timeout_seconds: int = field(
        default=1800,
        metadata={"help": "No new step for this long is a stall: the supervisor kills and relaunches the trainer "
                  "(0: off)."},
    )
    stop_grace_seconds: int = field(
        default=20, metadata={"help": "A trainer alive this long after a stop is SIGKILLed."})
    first_step_timeout_seconds: int = field(
        default=3600,
        metadata={"help": "The stall allowance before each start's first step (0: off)."},
    )


@dataclass
class Config:
    trainkit: TrainkitArguments
    sft: object  # trl.SFTConfig
    model: object  # trl.ModelConfig
    device: str
    platform: str
    dry_run: str | None = None  # "meta" or "load" for train.py --dry-run[=load] (trainkit.train.dryrun)
    sources: dict = field(default_factory=dict)  # key -> where its value came from, for the preflight
    strategy: object = None  # trainkit.preflight.strategy.Strategy, decided by the preflight
    attention: object = None  # trainkit.config.attention.Choice, decided while parsing
    duration_seconds: float | None = None  # the preflight's estimate from FLOPs (trainkit.preflight.duration)
    config_path: str | None = None  # the YAML file read (trainkit.train.snapshot copies it at launch)
    overrides: list = field(default_factory=list)  # the command line beside --config (train.py sets it)
    hub_note: str | None = None  # "model … from the local cache; no Hub access during training" (hub_offline)
    model_snapshot: str | None = None  # the commit hash of the cached snapshot the run loads (hub_offline)
    memory_estimate: object = None  # the preflight's MemoryEstimate under the run's settings

    @property
    def tag(self) -> str:
        return f"TRAINING-{self.platform.upper()}"

    @property
    def output_dir(self) -> Path:
        return Path(self.sft.output_dir)


def take_auto_checkpointing(values: dict, argv: list[str]) -> bool:
    """Remove `activation_checkpointing: auto` (YAML or CLI) before TRL's parser sees it; True when it was there.

    The CLI wins over the YAML, as for every other key.
    """
    auto = None
    if str(values.get(KEY)).lower() == AUTO:
        values.pop(KEY)
        auto = True
    elif KEY in values:
        auto = False
    for i, arg in enumerate(argv):
        if arg == f"--{KEY}" and i + 1 < len(argv) and argv[i + 1].lower() == AUTO:
            del argv[i:i + 2]
            return True
        if arg == f"--{KEY}={AUTO}":
            del argv[i]
            return True
        if arg == f"--{KEY}" or arg.startswith(f"--{KEY}="):
            return False
    return bool(auto)


def refuse_secret_flags(argv: list[str]) -> None:
    """A credential given as a command-line flag is visible in `ps` to every user: refuse it."""
    for arg in argv:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0]
        if is_secret_name(name):
            raise ConfigError(
                f"--{name} on the command line: every user of this machine can read it in the process list",
                f"export HF_TOKEN=... instead, or put {name}: in a config file only you can read (chmod 600)",
            )


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def mps_available() -> bool:
    import torch

    return torch.backends.mps.is_available()


def cuda_bf16_supported() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def attention_facts(device: str):
    """What decides `attn_implementation: auto` on this machine (trainkit.config.attention.Facts)."""
    import dataclasses

    from trainkit.config.attention import probe

    return dataclasses.replace(probe(device), flash_attn=flash_attn_installed())


def detect_device() -> str:
    """cuda > mps > cpu."""
    if cuda_available():
        return "cuda"
    if mps_available():
        return "mps"
    return "cpu"


def device_defaults(device: str) -> dict:
    """Precision for the device, used only where the config does not say.

    TRL's SFTConfig defaults to bf16=True, which refuses to start on a CPU-only
    machine; on CPU we train in fp32 (exact, reproducible resumes) with use_cpu=True,
    which also keeps torchrun processes in one gloo group instead of training apart.
    """
    if device == "cuda":
        return {"bf16": cuda_bf16_supported(), "use_cpu": False}
    if device == "mps":
        return {"bf16": True, "use_cpu": False}
    return {"bf16": False, "fp16": False, "use_cpu": True}


def _dataclass_types():
    from trl import ModelConfig, SFTConfig

    return TrainkitArguments, SFTConfig, ModelConfig


def _parser():
    from trl import TrlParser

    class Parser(TrlParser):
        def error(self, message):  # argparse would print usage and exit 2, our crash-loop code
            raise ConfigError(f"invalid config value: {message}",
                              "fix it in the config file or on the command line (python train.py --help)")

    # allow_abbrev=False: argparse would otherwise take --learning_rat for --learning_rate.
    parser = Parser(_dataclass_types(), allow_abbrev=False)
    # For --help only: parse() takes --dry-run out of argv before the parser sees it.
    parser.add_argument("--dry-run", nargs="?", const="meta", default=argparse.SUPPRESS, metavar="load",
                        help="Run everything up to the first optimizer step, print the plan, write nothing; "
                             "--dry-run=load also loads the weights (trainkit.train.dryrun).")
    return parser


def known_keys() -> list[str]:
    return sorted(f.name for dc in _dataclass_types() for f in dataclasses.fields(dc))


# Names users bring from PEFT, axolotl, LLaMA-Factory and the like, mapped to trainkit's key.
# Checked before any spelling match: difflib would offer local_rank for lora_rank.
FOREIGN_KEYS = {
    "lora_rank": "lora_r",
    "rank": "lora_r",
    "r": "lora_r",
    "alpha": "lora_alpha",
    "lora_target": "lora_target_modules",
    "target_modules": "lora_target_modules",
    "lora_targets": "lora_target_modules",
    "lr": "learning_rate",
    "epochs": "num_train_epochs",
    "num_epochs": "num_train_epochs",
    "micro_batch_size": "per_device_train_batch_size",
    "batch_size": "per_device_train_batch_size",
    "train_batch_size": "per_device_train_batch_size",
    "per_device_batch_size": "per_device_train_batch_size",
    "gradient_accumulation": "gradient_accumulation_steps",
    "grad_accum": "gradient_accumulation_steps",
    "gradient_accumulation_step": "gradient_accumulation_steps",
    "cutoff_len": "max_length",
    "sequence_len": "max_length",
    "max_seq_length": "max_length",
    "max_seq_len": "max_length",
    "seq_len": "max_length",
    "base_model": "model_name_or_path",
    "model_name": "model_name_or_path",
    "model": "model_name_or_path",
    "model_id": "model_name_or_path",
    "dataset": "train_file",
    "datasets": "train_file",
    "train_data": "train_file",
    "eval_file": "validation_file",
    "warmup": "warmup_steps",
    "lr_scheduler": "lr_scheduler_type",
    "scheduler": "lr_scheduler_type",
    "optimizer": "optim",
    "max_grad": "max_grad_norm",
    "grad_clip": "max_grad_norm",
    "steps": "max_steps",
    "num_steps": "max_steps",
    "train_steps": "max_steps",
    "out_dir": "output_dir",
    "save_every": "save_steps",
    "logging_every": "logging_steps",
    "bf16_enabled": "bf16",
    "sample_packing": "packing",
}


def suggestion(key: str, names: list[str]) -> str | None:
    """trainkit's name for a key someone brought from another tool, or the closest spelling."""
    if key in FOREIGN_KEYS:
        return FOREIGN_KEYS[key]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return close[0] if close else None


def unknown_key_error(keys: list[str], where: str) -> ConfigError:
    names = known_keys()
    parts = []
    for key in keys:
        close = suggestion(key, names)
        parts.append(f"{key} (did you mean {close}?)" if close else key)
    return ConfigError(
        f"unknown config key(s) in {where}: {', '.join(parts)}",
        "fix the spelling; keys are TRL's SFTConfig/ModelConfig names plus trainkit's own (train.py --help)",
    )


def add_launch_secrets(config_path: str, values: dict) -> None:
    """A launch copy (output_dir/launch_config.yaml, trainkit.train.snapshot) holds no credentials: the ones its
    launched file had come from that file, as it is now. Credentials do not define a run."""
    import json

    path = Path(config_path)
    if path.name != "launch_config.yaml":
        return
    try:
        record = json.loads(path.with_name("launch_config.json").read_text(encoding="utf-8"))
        wanted = record.get("secrets_from_source") or []
        source = load_yaml(record["source"]) if wanted else {}
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        return
    for key in wanted:
        if key.startswith("env.") and isinstance(source.get("env"), dict) and key[4:] in source["env"]:
            values.setdefault("env", {})[key[4:]] = source["env"][key[4:]]
        elif key in source:
            values[key] = source[key]


def load_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}", "pass --config configs/<name>.yaml") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {path} is a directory, not a config file",
                          "pass one YAML file, e.g. --config configs/smoke.yaml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}",
                          "check the path and its permissions") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " "), "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping of key: value", "see configs/smoke.yaml")
    return data


def parse(argv: list[str] | None = None) -> Config:
    """Parse YAML + CLI into TRL's dataclasses, with machine-aware defaults."""
    from trainkit.core.library_warnings import silence_unactionable

    silence_unactionable()  # every command that reads a config: TRL's dataclasses warn about their own names
    argv = list(sys.argv[1:] if argv is None else argv)
    refuse_secret_flags(argv)
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file", "pass --config configs/smoke.yaml")
        config_path = argv.pop(i + 1)
        argv.pop(i)
    dry_run = pop_dry_run(argv)
    values = load_yaml(config_path) if config_path else {}
    if config_path:
        add_launch_secrets(config_path, values)
    for key, value in (values.pop("env", None) or {}).items():
        os.environ[key] = str(value)

    auto_checkpointing = take_auto_checkpointing(values, argv)

    device = detect_device()
    explicit = set(values) | {a[2:].split("=")[0] for a in argv if a.startswith("--")}
    parser = _parser()
    # PEFT leaves most parameters frozen; DDP's unused-parameter search would fail on them.
    # Loss on the assistant's turns only: system prompts, tool schemas and tool results are context.
    defaults = {"use_peft": True, "report_to": "none", "ddp_find_unused_parameters": False,
                "assistant_only_loss": True}
    defaults.update({k: v for k, v in device_defaults(device).items() if k not in explicit})
    parser.set_defaults(**defaults)
    leftover = parser.set_defaults_with_config(**values)
    if leftover:
        raise unknown_key_error([s[2:] for s in leftover[::2]], config_path)
    try:
        parsed = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        trainkit_args, sft, model, unknown = parsed
    except ValueError as exc:
        raise ConfigError(f"invalid config: {exc}", "fix the value in the config or on the command line") from None
    if unknown:
        flags = [s for s in unknown if s.startswith("--")] or unknown
        raise unknown_key_error([f.lstrip("-").split("=")[0] for f in flags], "the command line")

    trainkit_args.activation_checkpointing_auto = trainkit_args.activation_checkpointing_auto or auto_checkpointing
    attention = finish(trainkit_args, sft, model, device)
    keep_effective_batch(trainkit_args, sft, {a[2:].split("=")[0] for a in argv if a.startswith("--")})
    platform = PLATFORM_OF_DEVICE[device] if trainkit_args.platform == "auto" else trainkit_args.platform
    sources = {key: f"config {config_path}" for key in values}
    sources.update({a[2:].split("=")[0]: "command line" for a in argv if a.startswith("--")})
    sources.update({k: "machine default" for k in device_defaults(device) if k not in explicit})
    if trainkit_args.effective_batch_size:
        sources["gradient_accumulation_steps"] = "effective_batch_size"
    return Config(trainkit_args, sft, model, device, platform, dry_run=dry_run, sources=sources, attention=attention,
                  config_path=config_path)


def keep_effective_batch(trainkit_args: TrainkitArguments, sft, command_line: set[str]) -> None:
    """gradient_accumulation_steps from effective_batch_size, for the number of processes about to train.

    It replaces the config file's gradient_accumulation_steps (a config written for one GPU keeps its batch on
    eight); one given on the command line that disagrees is refused rather than silently replaced."""

    wanted = trainkit_args.effective_batch_size
    if wanted is None:
        return
    per_device, processes = sft.per_device_train_batch_size, world_size()
    if wanted < 1 or not isinstance(per_device, int) or per_device < 1:
        raise ConfigError(f"effective_batch_size must be at least 1, not {wanted}",
                          "set the sequences per optimizer step, e.g. effective_batch_size: 64")
    per_step = per_device * processes
    if wanted % per_step:
        fits = [d for d in range(1, wanted // processes + 1) if wanted % (d * processes) == 0]
        hint = (f"set per_device_train_batch_size to one of {', '.join(map(str, fits[-4:]))}"
                if fits else f"pick an effective_batch_size that is a multiple of {processes}")
        raise ConfigError(f"effective_batch_size {wanted} is not a multiple of {per_device} per device x "
                          f"{processes} process{'es' if processes > 1 else ''} = {per_step}", hint)
    accumulation = wanted // per_step
    if "gradient_accumulation_steps" in command_line and sft.gradient_accumulation_steps != accumulation:
        raise ConfigError(f"gradient_accumulation_steps {sft.gradient_accumulation_steps} and effective_batch_size "
                          f"{wanted} disagree: with {per_step} sequences per micro-step it must be {accumulation}",
                          "drop --gradient_accumulation_steps: effective_batch_size sets it for the GPU count")
    sft.gradient_accumulation_steps = accumulation


def pop_dry_run(argv: list[str]) -> str | None:
    """--dry-run (model on the meta device) or --dry-run=load, taken out of argv; None without one."""
    found = None
    for arg in [a for a in argv if a.split("=")[0] in ("--dry-run", "--dry_run")]:
        argv.remove(arg)
        found = arg.partition("=")[2] or "meta"
        if found not in ("meta", "load"):
            raise ConfigError(f"--dry-run={found}: expected --dry-run or --dry-run=load",
                              "--dry-run builds the model on the meta device; --dry-run=load loads the weights")
    return found


def looks_local(name: str, *roots: Path) -> bool:
    """Whether a model name is clearly a path rather than a hub id (org/name): it starts like a
    path, has more than two parts, or its first part is a directory here or under one of `roots`."""
    parts = Path(name).parts
    if name.startswith(("/", ".", "~")) or len(parts) > 2:
        return True
    return len(parts) == 2 and any((root / parts[0]).is_dir() for root in (Path(), *roots))


def check_model_path(name: str) -> None:
    """A path that is clearly local must exist; anything else is left to the hub cache."""
    path = Path(name).expanduser()
    if path.exists():
        return
    if looks_local(name):
        raise ConfigError(
            f"model not found: {name}",
            "build the tiny local model with `make setup`, or set model_name_or_path to a model directory or hub id",
        )


def finish(trainkit_args: TrainkitArguments, sft, model, device: str):
    """Fill in what depends on the machine and refuse what cannot work; the attention chosen
    (trainkit.config.attention.Choice)."""
    if not model.model_name_or_path:
        raise ConfigError("model_name_or_path is not set",
                          "add model_name_or_path: <hub id or local dir> to the config")
    check_model_path(model.model_name_or_path)
    if not model.use_peft:
        raise ConfigError("use_peft is false, but trainkit trains LoRA adapters", "remove use_peft from the config")
    from trainkit.config.attention import choose

    chosen = choose(model.attn_implementation, attention_facts(device))
    model.attn_implementation = chosen.implementation
    if sft.bf16 and device == "cuda" and not cuda_bf16_supported():
        raise ConfigError("bf16 is on but this GPU has no bf16 support", "set bf16: false and fp16: true")
    model.dtype = "bfloat16" if sft.bf16 else "float16" if sft.fp16 else "float32"
    sft.model_init_kwargs = {
        **(sft.model_init_kwargs or {}),
        "dtype": model.dtype,
        "attn_implementation": model.attn_implementation,
        "revision": model.model_revision,
    }
    if trainkit_args.platform not in ("auto", *PLATFORM_OF_DEVICE.values()):
        # YAML values become argparse defaults, which argparse never checks against choices.
        raise ConfigError(f"platform must be one of auto, h100, m4, cpu, not {trainkit_args.platform!r}",
                          "set platform: auto to pick it from the device")
    if trainkit_args.backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {trainkit_args.backend!r}",
                          "set backend: torch (TRL) or backend: mlx (Apple Silicon)")
    if trainkit_args.distributed_strategy not in STRATEGIES:
        # As for platform: argparse does not check a YAML value against the choices.
        raise ConfigError(f"distributed_strategy must be one of {', '.join(STRATEGIES)}, "
                          f"not {trainkit_args.distributed_strategy!r}",
                          "set distributed_strategy: auto to let the memory estimate decide")
    if trainkit_args.loss_spike_factor and trainkit_args.loss_spike_factor <= 1:
        raise ConfigError(
            f"loss_spike_factor must be above 1 (or 0 to turn it off), not {trainkit_args.loss_spike_factor}",
            "try 3.0: stop when a loss is three times its running average",
        )
    if trainkit_args.estimate_after_steps < 0:
        raise ConfigError("estimate_after_steps must be 0 (off) or more", "use the default of 100")
    if trainkit_args.save_every_minutes < 0:
        raise ConfigError("save_every_minutes must be 0 (off) or more", "use the default of 15")
    if trainkit_args.crash_loop_limit < 1:
        raise ConfigError("crash_loop_limit must be at least 1", "use the default of 3")
    move_hub_token(sft)
    if trainkit_args.tool_eval_samples < 0 or trainkit_args.tool_eval_max_new_tokens < 1:
        raise ConfigError("tool_eval_samples must be 0 (off) or more, and tool_eval_max_new_tokens at least 1",
                          "use the defaults of 16 and 128")
    if trainkit_args.notify_events is not None:
        from trainkit.core.notify import EVENTS

        unknown = [e for e in trainkit_args.notify_events if e not in EVENTS or e == "test"]
        if unknown:
            raise ConfigError(f"notify_events: unknown event(s) {', '.join(unknown)}",
                              f"choose from {', '.join(e for e in EVENTS if e != 'test')}")
    if trainkit_args.eval_max_examples is not None and trainkit_args.eval_max_examples < 1:
        raise ConfigError(f"eval_max_examples must be at least 1, not {trainkit_args.eval_max_examples}",
                          "leave it unset to evaluate the whole validation_file, or set e.g. 200")
    # Trainer would resolve these relative to wherever it runs; pin them to the launch directory.
    sft.output_dir = str(Path(sft.output_dir or "outputs/run").resolve())
    return chosen
