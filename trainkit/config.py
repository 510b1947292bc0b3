"""One config surface: a flat YAML with TRL's key names plus trainkit's own.

    python train.py --config configs/smoke.yaml --max_steps 20 --output_dir outputs/x

The schema is TRL's `SFTConfig` and `ModelConfig` plus `TrainkitArguments` below,
parsed by TRL's own parser (YAML as defaults, CLI flags override). trainkit adds
what the libraries leave out: unknown keys are refused with a did-you-mean instead
of a usage dump, and the device, precision and attention are chosen for the
machine unless the config names them.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from trainkit.errors import ConfigError

PLATFORM_OF_DEVICE = {"cuda": "h100", "mps": "m4", "cpu": "cpu"}


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
    crash_loop_limit: int = field(
        default=3, metadata={"help": "Resumes from the same step without progress before giving up (exit 2)."}
    )
    loss_spike_factor: float = field(
        default=0.0,
        metadata={"help": "Stop (exit 3) when a loss exceeds this multiple of its running average; 0 is off. "
                  "NaN/inf always stops."},
    )
    memory_budget_gb: float | None = field(
        default=None,
        metadata={"help": "Accelerator memory the run may use; default per platform (h100 70, m4 28, cpu none)."},
    )
    estimate_after_steps: int = field(
        default=100,
        metadata={"help": "Print a time-to-finish estimate from the measured throughput after this many steps "
                  "(0 turns it off)."},
    )
    wandb_project: str = field(default="weatherman", metadata={"help": "W&B project when report_to has wandb."})
    stall_timeout_seconds: int = field(
        default=1800,
        metadata={"help": "A live trainer without a new step for this long is stalled: the supervisor kills and "
                  "relaunches it (counts as a crash); 0 is off."},
    )
    first_step_timeout_seconds: int = field(
        default=3600,
        metadata={"help": "The stall allowance before the first step of each start (model loading, data); 0 is off."},
    )


@dataclass
class Config:
    trainkit: TrainkitArguments
    sft: object  # trl.SFTConfig
    model: object  # trl.ModelConfig
    device: str
    platform: str

    @property
    def tag(self) -> str:
        return f"TRAINING-{self.platform.upper()}"

    @property
    def output_dir(self) -> Path:
        return Path(self.sft.output_dir)


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

    return Parser(_dataclass_types())


def known_keys() -> list[str]:
    return sorted(f.name for dc in _dataclass_types() for f in dataclasses.fields(dc))


def unknown_key_error(keys: list[str], where: str) -> ConfigError:
    names = known_keys()
    parts = []
    for key in keys:
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
        parts.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return ConfigError(
        f"unknown config key(s) in {where}: {', '.join(parts)}",
        "fix the spelling; keys are TRL's SFTConfig/ModelConfig names plus trainkit's own (train.py --help)",
    )


def load_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}", "pass --config configs/<name>.yaml") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " "), "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping of key: value", "see configs/smoke.yaml")
    return data


def parse(argv: list[str] | None = None) -> Config:
    """Parse YAML + CLI into TRL's dataclasses, with machine-aware defaults."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file", "pass --config configs/smoke.yaml")
        config_path = argv.pop(i + 1)
        argv.pop(i)
    values = load_yaml(config_path) if config_path else {}
    for key, value in (values.pop("env", None) or {}).items():
        os.environ[key] = str(value)

    device = detect_device()
    explicit = set(values) | {a[2:].split("=")[0] for a in argv if a.startswith("--")}
    parser = _parser()
    # PEFT leaves most parameters frozen; DDP's unused-parameter search would fail on them.
    defaults = {"use_peft": True, "report_to": "none", "ddp_find_unused_parameters": False}
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

    finish(trainkit_args, sft, model, device)
    platform = PLATFORM_OF_DEVICE[device] if trainkit_args.platform == "auto" else trainkit_args.platform
    return Config(trainkit_args, sft, model, device, platform)


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


def finish(trainkit_args: TrainkitArguments, sft, model, device: str) -> None:
    """Fill in what depends on the machine and refuse what cannot work."""
    if not model.model_name_or_path:
        raise ConfigError("model_name_or_path is not set",
                          "add model_name_or_path: <hub id or local dir> to the config")
    check_model_path(model.model_name_or_path)
    if not model.use_peft:
        raise ConfigError("use_peft is false, but trainkit trains LoRA adapters", "remove use_peft from the config")
    if model.attn_implementation is None:
        model.attn_implementation = (
            "flash_attention_2" if device == "cuda" and flash_attn_installed() else "sdpa"
        )
    elif model.attn_implementation.startswith("flash_attention") and not (device == "cuda" and flash_attn_installed()):
        raise ConfigError(
            f"attn_implementation={model.attn_implementation} needs CUDA and the flash-attn package",
            "remove attn_implementation to use sdpa, or install flash-attn on the GPU machine",
        )
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
    if trainkit_args.loss_spike_factor and trainkit_args.loss_spike_factor <= 1:
        raise ConfigError(
            f"loss_spike_factor must be above 1 (or 0 to turn it off), not {trainkit_args.loss_spike_factor}",
            "try 3.0: stop when a loss is three times its running average",
        )
    if trainkit_args.estimate_after_steps < 0:
        raise ConfigError("estimate_after_steps must be 0 (off) or more", "use the default of 100")
    if trainkit_args.crash_loop_limit < 1:
        raise ConfigError("crash_loop_limit must be at least 1", "use the default of 3")
    # Trainer would resolve these relative to wherever it runs; pin them to the launch directory.
    sft.output_dir = str(Path(sft.output_dir or "outputs/run").resolve())
