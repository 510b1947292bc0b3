"""A trained LoRA adapter and its base model: find them, load them, prompt them, merge them.

scripts/sample.py and scripts/merge_adapter.py are thin CLIs over this module.

    from trainkit.evaluate import adapters
    adapter = adapters.read_adapter("outputs/smoke/final")   # checks adapter_config.json + weights
    base = adapters.resolve_base(None, adapter)                # the base it was trained on
    device = adapters.choose_device("auto")                    # cuda > mps > cpu
    tokenizer = adapters.load_tokenizer(adapter, base)
    model = adapters.load_model(adapter, base, device, adapters.inference_dtype(device))
    adapters.complete(model, tokenizer, adapters.Prompt.of("Will it rain?"), device=device)

Every foreseen failure (no adapter, base not found offline, adapter/base mismatch, bad
prompts or tools, an output directory in the way) is a TrainkitError with a hint: one
ERROR line, never a traceback.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trainkit.core.errors import TrainkitError

ROOT = Path(__file__).resolve().parents[2]
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
DEVICES = ("auto", "cuda", "mps", "cpu")
MERGE_DTYPES = ("auto", "float32", "bfloat16", "float16")
# Weight files a loader or llama.cpp's converter would pick up from a model directory.
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model*.bin.index.json")
TAGGED = re.compile(r"^(✅|⚠️|❌) (SUCCESS|WARNING|ERROR|RESUME):")
ADAPTER_HINT = "pass --adapter <output_dir>/final (or a checkpoint-N directory) of a training run"
TOOLS_HINT = ('--tools takes a JSON list of tool schemas in OpenAI function format: '
              '[{"type": "function", "function": {"name": "...", "description": "...", "parameters": {...}}}]')
PROMPTS_HINT = 'one prompt per line, or JSONL lines such as {"prompt": "..."} or {"messages": [...]}'


# --- the adapter and its base ---------------------------------------------------------------


@dataclass(frozen=True)
class Adapter:
    path: Path
    config: dict

    @property
    def recorded_base(self) -> str | None:
        return self.config.get("base_model_name_or_path") or None


def read_adapter(path: str | Path) -> Adapter:
    """A PEFT adapter directory with its config and weights, or a TrainkitError saying what is wrong."""
    path = Path(path).expanduser()
    if not path.exists():
        raise TrainkitError(f"adapter directory not found: {path}", ADAPTER_HINT)
    if not path.is_dir():
        raise TrainkitError(f"--adapter must be a directory, {path} is a file",
                            f"pass the directory that holds adapter_config.json: {path.parent}")
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise TrainkitError(f"no {ADAPTER_CONFIG} in {path}: not a PEFT adapter directory", _adapter_suggestion(path))
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainkitError(f"{config_file} is not readable JSON ({exc})",
                            "the save was cut off or the file was edited; use another checkpoint-N or re-run "
                            "training to rewrite final/") from None
    if not isinstance(config, dict):
        raise TrainkitError(f"{config_file} is not readable JSON (a {type(config).__name__}, not an object)",
                            "the save was cut off or the file was edited; use another checkpoint-N or re-run "
                            "training to rewrite final/")
    if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
        raise TrainkitError(f"no adapter weights in {path} (adapter_model.safetensors is missing)",
                            "the save was cut off: use another checkpoint-N, or re-run training to resume")
    return Adapter(path, config)


def _adapter_suggestion(path: Path) -> str:
    """Someone passing the run's output_dir means its final/ (or its newest checkpoint)."""
    if (path / "final" / ADAPTER_CONFIG).is_file():
        return f"did you mean {path / 'final'}? {ADAPTER_HINT}"
    checkpoints = sorted(path.glob(f"checkpoint-*/{ADAPTER_CONFIG}"),
                         key=lambda p: int(p.parent.name.split("-")[-1]) if p.parent.name.split("-")[-1].isdigit()
                         else -1)
    if checkpoints:
        return f"did you mean {checkpoints[-1].parent}? {ADAPTER_HINT}"
    return ADAPTER_HINT


def local_model_dir(name: str) -> str | None:
    """`name` as an existing path: as given, else under the repo (train.py records it as the config
    gave it, usually relative to the repo); None when it is no path here."""
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if not path.is_absolute() and (ROOT / path).exists():
        return str(ROOT / path)
    return None


def resolve_base(name: str | None, adapter: Adapter) -> str:
    """--base, else the base recorded in adapter_config.json, as something from_pretrained can open.

    train.py records model_name_or_path as the config gave it, usually relative to the
    repo (models/tiny-chat), so a relative path that is not under the current directory
    is looked up under the repo before it is taken for a hub id.
    """
    name = name or adapter.recorded_base
    if not name:
        raise TrainkitError(f"{adapter.path / ADAPTER_CONFIG} does not name its base model",
                            "pass --base MODEL (the hub id or directory the adapter was trained on)")
    from trainkit.config.hub_offline import offline_if_cached

    found = local_model_dir(name)
    # A base whole on disk is read with the Hub off: a Hub that never answers cannot hold the command.
    offline_if_cached(found or name)
    if found:
        return found
    from trainkit.config.settings import looks_local

    if looks_local(name, ROOT):
        hint = _base_hint(adapter)
        if "tiny-chat" in name:
            hint = "build the tiny local model with `make setup`, or " + hint
        raise TrainkitError(f"base model not found: {name}", hint)
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE and not _in_hub_cache(name):
        raise TrainkitError(f"base model not found offline: {name}", _base_hint(adapter, download=name))
    return name


def warn_if_other_base(requested: str | None, base: str, adapter: Adapter) -> None:
    """A WARNING when --base names another model than adapter_config.json records: an adapter fits only its own."""
    recorded = adapter.recorded_base
    if not requested or not recorded:
        return
    try:
        recorded_resolved = resolve_base(None, adapter)
    except TrainkitError:
        recorded_resolved = recorded

    def key(name: str) -> str:
        return str(Path(name).resolve()) if Path(name).exists() else name

    if key(base) != key(recorded_resolved):
        from trainkit.core import protocol

        protocol.warning(f"--base {requested} is not the base the adapter was trained on ({recorded})",
                         "an adapter only fits its own base model; drop --base unless this is a copy of it")


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def _base_hint(adapter: Adapter, download: str | None = None) -> str:
    recorded = f"; adapter_config.json records {adapter.recorded_base}" if adapter.recorded_base else ""
    fetch = f"download it once online (`hf download {download}`), or " if download else ""
    return f"{fetch}pass --base with the model directory or hub id the adapter was trained on{recorded}"


def choose_device(requested: str = "auto") -> str:
    """cuda > mps > cpu for auto; a device asked for by name must be there."""
    from trainkit.config import settings as config

    if requested == "auto":
        return config.detect_device()
    available = {"cuda": config.cuda_available, "mps": config.mps_available, "cpu": lambda: True}[requested]
    if not available():
        raise TrainkitError(f"--device {requested}: {requested.upper()} is not available on this machine",
                            "use --device auto (picks cuda > mps > cpu) or --device cpu")
    return requested


def inference_dtype(device: str):
    """bf16 on cuda (fp16 where the GPU lacks bf16) and mps, fp32 on cpu."""
    import torch

    from trainkit.config import settings as config

    if device == "cuda":
        return torch.bfloat16 if config.cuda_bf16_supported() else torch.float16
    if device == "mps":
        return torch.bfloat16
    return torch.float32


def merge_dtype(requested: str, base: str):
    """--dtype, or for auto the dtype the base's config.json declares (float32 when it declares none)."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    try:
        from transformers import AutoConfig

        model_config = AutoConfig.from_pretrained(base)
        declared = getattr(model_config, "dtype", None) or getattr(model_config, "torch_dtype", None)
    except (OSError, ValueError):
        declared = None
    if isinstance(declared, str):
        declared = getattr(torch, declared, None)
    return declared if declared in (torch.float32, torch.bfloat16, torch.float16) else torch.float32


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def quiet_libraries() -> None:
    """No tqdm bars in logs (loading and saving draw them), no deprecation noise from PEFT's internals."""
    import warnings

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # Not trainkit.core.library_warnings.quiet_progress_bars: that one also imports datasets (a second of
    # start-up), which train.py needs anyway.
    if sys.stderr.isatty():
        return
    import huggingface_hub
    import transformers

    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def load_tokenizer(adapter: Adapter, base: str):
    """The tokenizer saved with the adapter (what training used), else the base's; it must have a chat template."""
    from transformers import AutoTokenizer

    source = str(adapter.path) if any((adapter.path / f).is_file() for f in TOKENIZER_FILES) else base
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise TrainkitError(f"could not load a tokenizer from {source}: {_summary(exc)}", _base_hint(adapter)) from None
    if not tokenizer.chat_template:
        raise TrainkitError(f"the tokenizer from {source} has no chat template",
                            "use a chat (instruct) base model, or put its chat_template.jinja in the adapter directory")
    return tokenizer


def load_base(base: str, dtype, device: str = "cpu"):
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(base, dtype=dtype, device_map=None if device == "cpu" else device)
    except (OSError, ValueError, SafetensorError) as exc:
        raise TrainkitError(f"could not load base model {base}: {_summary(exc)}",
                            "check --base: a model directory with config.json and weights, or a hub id") from None


def load_model(adapter: Adapter, base: str, device: str, dtype):
    """The base model with the adapter on top (a PeftModel in eval mode), on `device`."""
    from peft import PeftModel
    from safetensors import SafetensorError

    model = load_base(base, dtype, device)
    try:
        model = PeftModel.from_pretrained(model, str(adapter.path))
    except SafetensorError as exc:
        raise TrainkitError(f"the adapter weights in {adapter.path} are unreadable: {_summary(exc)}",
                            "the save was cut off: use another checkpoint-N, or re-run training to resume") from None
    except (RuntimeError, ValueError, KeyError) as exc:
        recorded = adapter.recorded_base or "nothing"
        raise TrainkitError(f"adapter {adapter.path} does not fit base model {base}: {_summary(exc)}",
                            f"pass the --base it was trained on (adapter_config.json records {recorded})") from None
    model.eval()
    return model


def _summary(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text if len(text) <= 300 else text[:297] + "..."


# --- prompts -----------------------------------------------------------------------------


@dataclass
class Prompt:
    text: str  # what the [SAMPLE] line shows
    messages: list[dict]
    tools: list[dict] | None = field(default=None)

    @classmethod
    def of(cls, text: str, system: str | None = None, tools: list[dict] | None = None) -> Prompt:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        return cls(text, messages, tools)


def read_tools(path: str | Path) -> list[dict]:
    """A JSON list of tool schemas (OpenAI function format), checked enough that apply_chat_template won't choke."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TrainkitError(f"tools file not found: {path}", TOOLS_HINT)
    try:
        tools = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TrainkitError(f"tools file {path} is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}",
                            TOOLS_HINT) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainkitError(f"tools file {path} is not readable: {_summary(exc)}", TOOLS_HINT) from None
    if not isinstance(tools, list):
        raise TrainkitError(f"tools file {path} must hold a JSON list of tool schemas, not {_json_type(tools)}",
                            TOOLS_HINT)
    for number, tool in enumerate(tools, 1):
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise TrainkitError(f"tools file {path}: tool {number} is not a function schema (no function.name)",
                                TOOLS_HINT)
    return tools


def _json_type(value) -> str:
    return {dict: "an object", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), "null")


def build_prompts(prompts: list[str] | None, prompts_file: str | None, system: str | None = None,
                  tools: list[dict] | None = None) -> list[Prompt]:
    """--prompt (repeatable) or --prompts-file, exactly one of them; each prompt gets --system and --tools."""
    if prompts and prompts_file:
        raise TrainkitError("pass either --prompt or --prompts-file, not both",
                            "put every prompt in the file, or pass each as its own --prompt")
    if not prompts and not prompts_file:
        raise TrainkitError("no prompt given", "pass --prompt TEXT (repeatable) or --prompts-file FILE")
    if prompts:
        for number, text in enumerate(prompts, 1):
            if not text.strip():
                raise TrainkitError(f"--prompt {number} is empty", "pass the question to ask, e.g. --prompt \"Will it "
                                    "rain in Oslo tomorrow?\"")
        return [Prompt.of(text, system, tools) for text in prompts]
    return read_prompts_file(prompts_file, system, tools)


def read_prompts_file(path: str | Path, system: str | None = None, tools: list[dict] | None = None) -> list[Prompt]:
    """One prompt per line; a line starting with { is JSON with "prompt" (text) or "messages" (a chat).

    A training example works as is: its messages are cut before the first assistant turn,
    and its own "tools" are used when it has them.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TrainkitError(f"prompts file not found: {path}", PROMPTS_HINT)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainkitError(f"prompts file {path} is not readable: {_summary(exc)}", PROMPTS_HINT) from None
    prompts = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if not line.startswith("{"):
            prompts.append(Prompt.of(line, system, tools))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainkitError(f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno})",
                                PROMPTS_HINT) from None
        prompts.append(_prompt_from_record(record, f"{path}:{number}", system, tools))
    if not prompts:
        raise TrainkitError(f"no prompts in {path}: it is empty", PROMPTS_HINT)
    return prompts


def _prompt_from_record(record, where: str, system: str | None, tools: list[dict] | None) -> Prompt:
    tools = (record.get("tools") or tools) if isinstance(record, dict) else tools
    if isinstance(record, dict) and isinstance(record.get("prompt"), str) and record["prompt"].strip():
        return Prompt.of(record["prompt"], system, tools)
    messages = record.get("messages") if isinstance(record, dict) else None
    if isinstance(record, dict) and isinstance(messages, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
    ):
        cut = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
        messages = messages[:cut]
        users = [m for m in messages if m["role"] == "user" and isinstance(m.get("content"), str)]
        if users:
            if system and messages[0]["role"] != "system":
                messages = [{"role": "system", "content": system}, *messages]
            return Prompt(users[-1]["content"], messages, tools)
    raise TrainkitError(f'{where}: a JSON line needs "prompt" (text) or "messages" (a chat with a user turn '
                        "before the first assistant turn)", PROMPTS_HINT)


def one_line(text: str) -> str:
    return " ".join(text.split())


def stop_token_ids(model, tokenizer) -> list[int]:
    """The generation config's eos ids plus the tokenizer's, so a chat turn's end token always stops it."""
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [] if configured is None else [configured]
    if tokenizer.eos_token_id is not None:
        ids = [*ids, tokenizer.eos_token_id]
    return list(dict.fromkeys(ids))


def complete(model, tokenizer, prompt: Prompt, *, device: str = "cpu", max_new_tokens: int = 128,
             temperature: float = 0.7, seed: int = 0) -> str:
    """The model's reply to one prompt through the chat template; temperature 0 is greedy.

    The seed is set before each prompt, so a prompt's completion does not depend on
    what was sampled before it.
    """
    import jinja2
    import torch
    from transformers import set_seed

    kwargs = {"tools": prompt.tools} if prompt.tools else {}
    try:
        inputs = tokenizer.apply_chat_template(prompt.messages, add_generation_prompt=True, return_dict=True,
                                               return_tensors="pt", **kwargs)
    except jinja2.TemplateError as exc:
        raise TrainkitError(f"the chat template refused prompt {one_line(prompt.text)[:80]!r}: {_summary(exc)}",
                            "check the roles and order of its messages") from None
    inputs = inputs.to(device)
    config = copy.deepcopy(model.generation_config)
    config.max_new_tokens = max_new_tokens
    config.max_length = None
    if temperature > 0:
        config.do_sample, config.temperature = True, temperature
    else:
        config.do_sample, config.temperature, config.top_p, config.top_k = False, None, None, None
    stops = stop_token_ids(model, tokenizer)
    config.eos_token_id = stops or None
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops or [None])[0]
    set_seed(seed)
    with torch.inference_mode():
        output = model.generate(**inputs, generation_config=config)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def safe_completion_lines(text: str) -> list[str]:
    """Completion lines as printed: one that looks like a verdict is indented so no parser takes it for one."""
    return [f" {line}" if TAGGED.match(line) else line for line in text.splitlines()]


# --- merging -----------------------------------------------------------------------------


def check_output(output: str | Path, force: bool, adapter: Adapter, base: str) -> Path:
    """Refuse, before anything loads, an --output that is in the way."""
    output = Path(output).expanduser()
    target = output.resolve()
    if target == adapter.path.resolve():
        raise TrainkitError(f"--output {output} is the adapter directory",
                            "choose a new directory for the merged model, e.g. models/<name>-merged")
    if Path(base).exists() and target == Path(base).resolve():
        raise TrainkitError(f"--output {output} is the base model directory",
                            "choose a new directory for the merged model, e.g. models/<name>-merged")
    if output.exists() and not output.is_dir():
        raise TrainkitError(f"--output {output} is a file", "choose a directory path for --output")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise TrainkitError(f"output directory {output} already exists and is not empty",
                            "choose a new --output, or pass --force to write into it (its old weight files are "
                            "replaced, other files are kept)")
    return output


def lora_layer_count(model) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(module, LoraLayer) for module in model.modules())


def merge(model):
    """Fold the adapter into the base weights; the plain transformers model, no PEFT left in it."""
    try:
        return model.merge_and_unload(safe_merge=True)
    except ValueError as exc:  # safe_merge: the merged weights would hold NaN/inf
        raise TrainkitError(f"merging produced broken weights: {_summary(exc)}",
                            "the adapter is broken (did training diverge?): use an earlier checkpoint-N, "
                            "and try it first with scripts/sample.py") from None


def save_merged(model, tokenizer, output: Path, force: bool = False) -> list[Path]:
    """Save model + tokenizer into a temporary directory next to `output`, then move it into place.

    A failure (disk full, Ctrl-C) removes the temporary directory and leaves `output` as
    it was. With force, an existing directory keeps its other files, but weight files
    the new save did not write are removed, so no loader or converter mixes in old shards.
    Returns the files written.
    """
    output = Path(output)
    created = [p for p in [output.parent, *output.parent.parents] if not p.exists()]
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.merging-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        try:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
        except OSError as exc:
            raise TrainkitError(f"could not save the merged model to {output}: {_summary(exc)}",
                                "check free disk space (the merged model is about the size of the base model) "
                                f"and write permission; nothing was written to {output}") from None
        written = sorted(p.name for p in tmp.iterdir())
        _readable_by_umask(tmp)
        if output.is_dir() and any(output.iterdir()):
            _move_into(tmp, output, force)
        else:
            if output.is_dir():
                output.rmdir()
            os.rename(tmp, output)
        return [output / name for name in written]
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for path in created:  # innermost first; only the directories this call made, and only when empty
            try:
                path.rmdir()
            except OSError:
                break
        raise


def _readable_by_umask(directory: Path) -> None:
    """safetensors writes its files 0600; give the merged model the permissions any new file gets."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _move_into(tmp: Path, output: Path, force: bool) -> None:
    if not force:  # someone wrote into it while we merged
        raise TrainkitError(f"output directory {output} already exists and is not empty",
                            "choose a new --output, or pass --force to write into it")
    new = {p.name for p in tmp.iterdir()}
    for pattern in WEIGHT_PATTERNS:
        for stale in output.glob(pattern):
            if stale.name not in new and stale.is_file():
                stale.unlink()
    for item in tmp.iterdir():
        target = output / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    tmp.rmdir()


def gguf_command(output: Path) -> str:
    return (f"python llama.cpp/convert_hf_to_gguf.py {output} --outfile {output.name}.gguf --outtype q8_0")


# --- the CLIs' last line of defence -------------------------------------------------------------


def crash_log(script: str) -> Path:
    return Path(os.environ.get("TRAINKIT_LOG_FILE") or ROOT / "logs" / f"{script}.log")


def report_crash(script: str, what: str, exc: BaseException, after: str = "") -> int:
    """An unforeseen exception: its traceback to the log, one ERROR line to the user, exit 1."""
    from trainkit.core import protocol
    from trainkit.core.errors import log_traceback
    from trainkit.core.protocol import ExitCode

    log = crash_log(script)
    try:
        log_traceback(log, f"{script} crashed")
        where = f"full traceback in {log}"
    except OSError:
        where = f"the traceback could not be written to {log}"
    protocol.error(f"{what} crashed: {_summary(exc.__class__.__name__ + ': ' + str(exc))}", where + after)
    return ExitCode.ERROR
