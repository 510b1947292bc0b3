"""Preflight: everything about a training config that can fail, checked before a GPU is paid for.

    from trainkit.preflight.checks import preflight
    report = Report("PREFLIGHT")
    preflight(config, report)          # config values, LoRA, architecture, data, memory, disk
    sys.exit(report.finish("config and data are valid"))

train.py runs the same checks before it loads a model, so a typo'd key, a LoRA target
the architecture lacks, a malformed JSONL line, an out-of-memory batch or a gated model
without a token fails in seconds instead of after a 15 GB download. The architecture is
built on the meta device from its config.json (a local model, the HF cache, or
configs/architectures/), so no weights are read and nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from trainkit.config.model_source import ModelSource, known_model_names, load_tokenizer, locate_model
from trainkit.core.report import Report
from trainkit.preflight.strategy import effective_batch, world_size

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def report_sources(config, report: Report) -> None:
    """One line naming where the set values came from (command line > config file > machine default)."""
    by_source: dict[str, list[str]] = {}
    for key, source in getattr(config, "sources", {}).items():
        by_source.setdefault(source, []).append(key)
    if by_source:
        report.ok("values from " + "; ".join(f"{source}: {', '.join(sorted(keys))}"
                                             for source, keys in sorted(by_source.items())))


def check_values(config, report: Report) -> None:
    """Values TRL accepts but that cannot train, or train nothing."""
    sft, model = config.sft, config.model
    positive = {
        "per_device_train_batch_size": sft.per_device_train_batch_size,
        "gradient_accumulation_steps": sft.gradient_accumulation_steps,
        "learning_rate": sft.learning_rate,
        "logging_steps": sft.logging_steps,
        "lora_r": model.lora_r,
        "lora_alpha": model.lora_alpha,
    }
    if sft.save_strategy == "steps":
        positive["save_steps"] = sft.save_steps
    if sft.max_length is not None:
        positive["max_length"] = sft.max_length
    for key, value in positive.items():
        if value is None or value <= 0:
            report.error(f"{key} must be positive, got {value}", f"set {key} to a positive value")
    if sft.max_steps < -1:
        # TRL reads any negative max_steps as "train num_train_epochs": -5 would train 3 epochs.
        report.error(f"max_steps must be a positive number of optimizer steps, or -1 for num_train_epochs; "
                     f"got {sft.max_steps}",
                     "set max_steps to the number of optimizer steps (or max_steps: -1 with num_train_epochs > 0)")
    elif sft.max_steps == 0 or (sft.max_steps == -1 and sft.num_train_epochs <= 0):
        report.error(f"nothing to train: max_steps={sft.max_steps}, num_train_epochs={sft.num_train_epochs}",
                     "set max_steps to the number of optimizer steps (or max_steps: -1 with num_train_epochs > 0)")
    not_negative = {
        "weight_decay": sft.weight_decay,
        "max_grad_norm": sft.max_grad_norm,
        "save_total_limit": sft.save_total_limit,
    }
    for key, value in not_negative.items():
        if value is not None and value < 0:
            report.error(f"{key} cannot be negative, got {value}", f"set {key} to 0 or more")
    if sft.eval_strategy == "steps" and sft.eval_steps is not None and sft.eval_steps <= 0:
        report.error(f"eval_steps must be positive, got {sft.eval_steps}", "set eval_steps to a positive value")
    if sft.learning_rate is not None and sft.learning_rate >= 1:
        report.error(f"learning_rate={sft.learning_rate} would destroy the model in one step",
                     "LoRA learning rates are around 1e-4 to 5e-4; did you mean 2e-4?")
    if not 0 <= model.lora_dropout <= 1:
        report.error(f"lora_dropout must be between 0 and 1, got {model.lora_dropout}", "use 0.05")
    check_quantization(config, report)
    if model.lora_target_modules is not None and not model.lora_target_modules:
        report.error("lora_target_modules is empty: LoRA would train nothing",
                     "list the projections, e.g. [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]")


def check_quantization(config, report: Report) -> None:
    """QLoRA (load_in_4bit): bitsandbytes' CUDA kernels on torch, MLX's own quantization on mlx."""
    if not getattr(config.model, "load_in_4bit", False) or getattr(config.trainkit, "backend", "torch") == "mlx":
        return
    if config.platform in ("m4", "cpu"):
        report.error(f"load_in_4bit needs CUDA (bitsandbytes), and this run is for {config.platform}",
                     "remove load_in_4bit, or on a Mac set backend: mlx (4-bit through MLX); "
                     "scripts/suggest_config.py picks what fits this machine")
    elif config.device == "cuda" and importlib.util.find_spec("bitsandbytes") is None:
        report.error("load_in_4bit needs the bitsandbytes package, which is not installed",
                     "pip install bitsandbytes on the GPU machine, or remove load_in_4bit")


def check_lora_recommendations(config, report: Report) -> None:
    """The ranges that work for style + tool-use LoRA on 7-8B models; outside them only warns."""
    model = config.model
    if model.lora_r > 0 and not 8 <= model.lora_r <= 64:
        report.warning(f"lora_r={model.lora_r} is outside the recommended 8-64", "use lora_r: 16")
    if model.lora_r > 0 and model.lora_alpha > 0 and model.lora_alpha != 2 * model.lora_r:
        report.warning(f"lora_alpha={model.lora_alpha} is not 2 x lora_r={model.lora_r}",
                       f"use lora_alpha: {2 * model.lora_r}")
    if 0.2 < model.lora_dropout <= 1:
        report.warning(f"lora_dropout={model.lora_dropout} is above the recommended 0-0.2", "use lora_dropout: 0.05")
    targets = model.lora_target_modules
    if isinstance(targets, str) and targets != "all-linear":
        targets = [targets]
    if targets is None:
        report.warning("lora_target_modules is not set: PEFT falls back to its default for the model type",
                       "list them: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]")
    elif targets != "all-linear" and 0 < len(targets) < 4:
        report.warning(f"only {len(targets)} LoRA target module(s): {', '.join(targets)}",
                       "target at least 4, e.g. [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]")


def build_meta_model(source: ModelSource, report: Report):
    """The architecture with no weights (meta device), or None with a WARNING saying why."""
    if source.config_dir is None:
        report.warning(
            f"no config.json for {source.name} offline (not a local dir, not in the HF cache, "
            f"not in configs/architectures/): architecture, target-module and memory checks skipped",
            f"download it once (hf download {source.name} config.json) or add "
            f"configs/architectures/{source.name.replace('/', '--')}/config.json",
        )
        return None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        model_config = AutoConfig.from_pretrained(source.config_dir)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_config)
    except (ValueError, KeyError, OSError) as exc:
        report.warning(f"could not build {source.name} from its config.json ({exc.__class__.__name__}: {exc})",
                       "architecture, target-module and memory checks skipped")
        return None
    params = sum(p.numel() for p in model.parameters())
    report.ok(f"model {source.name}: {type(model).__name__}, {params / 1e9:.2f}B parameters "
              f"(config.json from {source.where})")
    return model


def check_target_modules(model, config, report: Report) -> None:
    """Every lora_target_modules entry must name a module, the way PEFT matches them."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    targets = config.model.lora_target_modules
    if not targets or targets == "all-linear":
        return
    names = [name for name, _ in model.named_modules() if name]
    if isinstance(targets, str):
        # TRL turns a one-item list into a plain string, which PEFT reads as a regex over
        # the full module name: "q_proj" then matches nothing and PEFT fails at startup.
        if not any(check_target_module_exists(LoraConfig(target_modules=targets), name) for name in names):
            report.error(f"lora_target_modules: {targets!r} is read as a regex over full module names "
                         "(a one-item list becomes one) and matches nothing",
                         "list at least two modules, e.g. [q_proj, v_proj], or write a regex such as '.*q_proj'")
        return
    leaves = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if type(m).__name__ == "Linear"})
    for target in targets:
        probe = LoraConfig(target_modules=[target])
        if not any(check_target_module_exists(probe, name) for name in names):
            import difflib

            close = difflib.get_close_matches(target, leaves, n=1)
            report.error(
                f"lora_target_modules: {target!r} matches no module in {type(model).__name__}"
                + (f" (did you mean {close[0]}?)" if close else ""),
                f"its linear layers are: {', '.join(leaves)}",
            )


def check_backend(config, report: Report, training: bool = True) -> None:
    """backend: mlx needs MLX and mlx-lm, Apple Silicon (or MLX's CPU build for --platform cpu) and one process.

    Validating a Mac's config elsewhere (not `training`) checks everything else and says it cannot train here."""
    if getattr(config.trainkit, "backend", "torch") != "mlx":
        return
    import sys

    elsewhere = sys.platform != "darwin" and config.platform != "cpu"
    if elsewhere and not training:
        report.warning(f"backend: mlx trains on Apple Silicon: this {sys.platform} machine checks the config but "
                       "cannot train it", "train it on the Mac (scripts/train_m4_local.sh), or set backend: torch")
        return
    missing = [name for name in ("mlx", "mlx_lm") if importlib.util.find_spec(name) is None]
    if missing:
        report.error(f"backend: mlx but {' and '.join(missing)} is not installed",
                     "install the pinned versions: pip install -r requirements-local.txt "
                     "(scripts/setup_m4_local.sh does it), or set backend: torch")
    elif elsewhere:
        report.error(f"backend: mlx runs on Apple Silicon; on {sys.platform} only MLX's CPU build, for --platform cpu",
                     "set backend: torch for a GPU run")
    if world_size() > 1:
        report.error("backend: mlx trains in one process", "run without --nproc/torchrun, or set backend: torch")
    if report.errors:
        return
    report.ok("backend: mlx (trainkit's loop over mlx-lm; the same trained tokens, checkpoints and adapter format)")


def preflight(config, report: Report, *, data: bool = True, training: bool = False) -> None:
    """Every check of a parsed config; findings go into `report`.

    `training`: train.py is about to load the model, so it must be loadable now (the
    validator alone accepts a model whose architecture is shipped but whose weights are
    out of reach).
    """
    report_sources(config, report)
    check_values(config, report)
    check_one_process_per_gpu(config, report)
    check_backend(config, report, training)
    check_lora_recommendations(config, report)
    check_output_dirs(config, report)
    from trainkit.preflight.speed import (
        check_attention,
        check_eval_batches,
        check_lm_head_target,
        check_padding_free_attention,
    )

    check_lm_head_target(config, report)
    check_attention(config, report)
    check_padding_free_attention(config, report)
    check_eval_batches(config, report)
    source = model = estimate = None
    if not report.errors:
        from trainkit.preflight.environment import check_model_available

        source = locate_model(config.model.model_name_or_path)
        cached = source.where == "local" or source.weights_present
        check_model_available(source.name, report, cached=cached, known=source.config_dir is not None,
                              need_weights=training, candidates=[] if cached else known_model_names())
    reachable = source is not None and not report.errors
    if reachable:
        model = build_meta_model(source, report)
    if model is not None:
        check_target_modules(model, config, report)
        estimate = estimate_memory(model, config)
    # Every run gets its strategy here, once; the trainer is built from it (config.strategy).
    strategy = decide_strategy(config, report, estimate, training=training)
    if estimate is not None:
        check_memory_and_disk(estimate.with_settings(shards=strategy.shards), source, config, report)
    stats = check_data(source, config, report) if data and reachable else None
    if model is not None:
        from trainkit.preflight.duration import check_duration

        check_duration(config, sum(p.numel() for p in model.parameters()),
                       stats.tokens / stats.examples if stats and stats.examples else None, report)


def decide_strategy(config, report: Report, estimate, *, training: bool = False):
    """trainkit.preflight.strategy's verdict for this run, printed with the effective batch and stored on the config."""
    from trainkit.preflight import strategy as strategies
    from trainkit.preflight.gpu import memory_budget_gb

    budget, _ = memory_budget_gb(config)
    chosen = strategies.choose(config, estimate, budget)
    config.strategy = chosen
    report_effective_batch(config, report, chosen)
    strategies.check(config, chosen, report, training=training)
    return chosen




def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count()


def check_one_process_per_gpu(config, report: Report) -> None:
    """One process on a machine with several GPUs would be wrapped in DataParallel, which the trainer
    refuses only after the model has loaded: say so now."""
    if config.device != "cuda" or world_size() > 1:
        return
    count = cuda_device_count()
    if count > 1:
        report.error(f"train.py runs as one process but sees {count} GPUs",
                     f"launch one process per GPU: scripts/train.sh --gpus {count} (torchrun), "
                     "or train on one GPU with CUDA_VISIBLE_DEVICES=0")


def report_effective_batch(config, report: Report, strategy=None) -> None:
    """Sequences per optimizer step: per-device batch x processes x accumulation, and how the processes
    hold the model (`strategy`, trainkit.preflight.strategy; DDP when not given)."""
    sft, processes = config.sft, world_size()
    total = effective_batch(sft, processes)
    if total is None:
        return
    kept = config.trainkit.effective_batch_size is not None
    text = (f"effective batch: {sft.per_device_train_batch_size} per device x {processes} "
            f"process{'es' if processes > 1 else ''} x {sft.gradient_accumulation_steps} accumulation = "
            f"{total} sequences per optimizer step"
            + (" (kept by effective_batch_size)" if kept else ""))
    if processes > 1:
        from trainkit.preflight.strategy import DDP, Strategy

        strategy = strategy or Strategy(DDP, processes, "not decided")
        text += f"; {strategy.summary()}, so the memory estimate is per GPU"
        if not kept:
            text += (f"; to keep a 1-GPU run's batch, set effective_batch_size (or divide "
                     f"gradient_accumulation_steps by {processes})")
    report.ok(text)


def check_output_dirs(config, report: Report) -> None:
    """output_dir, and the log file's directory when one is set, can be created and written."""
    import os

    from trainkit.preflight.storage import check_writable_dir

    check_writable_dir(config.output_dir, "output_dir", report)
    log_file = os.environ.get("TRAINKIT_LOG_FILE")
    if log_file:
        check_writable_dir(Path(log_file).parent, "the log directory (TRAINKIT_LOG_FILE)", report)


def check_data(source: ModelSource, config, report: Report):
    """The data checks; the token-length statistics (trainkit.data.token_checks.LengthStats) when it got that far."""
    from trainkit.data.checks import check_chat_file, check_duplicates, check_string_arguments
    from trainkit.data.token_checks import check_token_lengths
    from trainkit.data.training_view import resolve_view

    args = config.trainkit
    train = check_chat_file(args.train_file, "train_file", report)
    validation = check_chat_file(args.validation_file, "validation_file", report) if args.validation_file else None
    if report.errors:
        return None
    check_duplicates(train, validation, report)
    check_string_arguments([args.train_file, args.validation_file], report)
    tokenizer = load_tokenizer(source, report)
    view = resolve_view(tokenizer, config.sft, report) if tokenizer is not None else None
    if view is None:
        return None
    return check_token_lengths(view, [args.train_file, args.validation_file], report)


def estimate_memory(model, config):
    """The run's peak memory on one GPU holding the whole model (trainkit.preflight.memory), from the meta-device
    model."""
    from trainkit.preflight.memory import estimate_training_memory

    sft, margs = config.sft, config.model
    return estimate_training_memory(
        model, model.config,
        batch_size=sft.per_device_train_batch_size,
        max_length=sft.max_length or model.config.max_position_embeddings,
        weight_dtype=margs.dtype,
        load_in_4bit=bool(getattr(margs, "load_in_4bit", False)),
        lora_r=margs.lora_r,
        lora_target_modules=margs.lora_target_modules,
        activation_checkpointing=bool(sft.activation_checkpointing),
        lora_dropout=margs.lora_dropout,
        triton=config.device == "cuda",
    )


def check_memory_and_disk(estimate, source: ModelSource, config, report: Report) -> None:
    """`estimate`: the run's memory on each GPU under its strategy."""
    from trainkit.preflight.gpu import memory_budget_gb
    from trainkit.preflight.memory import check_memory
    from trainkit.preflight.storage import (
        check_run_disk,
        check_runpod_persistence,
        lora_checkpoint_bytes,
        margin_for,
    )

    sft, margs, targs = config.sft, config.model, config.trainkit
    load_in_4bit = bool(getattr(margs, "load_in_4bit", False))
    budget, budget_source = memory_budget_gb(config)
    if targs.activation_checkpointing_auto:
        from trainkit.preflight.speed import decide_activation_checkpointing

        decide_activation_checkpointing(estimate, budget, sft, report)
    # The run's figure, under its final settings: an out-of-memory step compares its peak with it.
    config.memory_estimate = estimate.with_settings(activation_checkpointing=bool(sft.activation_checkpointing))
    check_memory(estimate, budget, report,
                 batch_size=sft.per_device_train_batch_size,
                 gradient_accumulation_steps=sft.gradient_accumulation_steps,
                 max_length=sft.max_length,
                 activation_checkpointing=bool(sft.activation_checkpointing),
                 load_in_4bit=load_in_4bit,
                 processes=world_size(), budget_source=budget_source)
    params = estimate.architecture.params
    save_total_limit = sft.save_total_limit or max(1, (sft.max_steps or 0) // max(1, sft.save_steps or 1))
    check_run_disk(
        config.output_dir, report,
        model_bytes=params * DTYPE_BYTES.get(margs.dtype, 2),
        model_cached=source.where == "local" or source.weights_present,
        save_total_limit=save_total_limit,
        checkpoint_bytes=lora_checkpoint_bytes(estimate.lora_params),
        margin=margin_for(params * DTYPE_BYTES.get(margs.dtype, 2)),
    )
    check_runpod_persistence(report, [config.output_dir])
