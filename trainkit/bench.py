"""Throughput of trainkit's training settings against a plain-TRL baseline, on this machine.

    python scripts/benchmark.py                       # CPU: configs/bench_cpu.yaml; CUDA: the H100 config
    python scripts/benchmark.py --steps 30 --runs trainkit
    make bench

Each run trains `--steps` optimizer steps in its own process (so the time to the first step includes
imports, model load and data preparation, as a user waits for it) and writes one JSON file to
outputs/bench/. The parent prints them side by side.

- trainkit: the config as train.py would run it (preflight decisions included), through build_trainer.
- trl: `SFTTrainer` with TRL's defaults, given the same model, data, LoRA, max_length, seed and batch
  numbers (per_device_train_batch_size x gradient_accumulation_steps). With packing, a trainkit batch
  item is a bin of up to max_length tokens where TRL's is one example: compare tokens/s, not steps/s.
- padded: trainkit's settings with packing off (one example per row, padded): on CUDA `make bench` runs
  trainkit, padded and trl, so packing against padding is measured with the attention auto picks.
- mlx: the same config under `backend: mlx` (trainkit's loop over mlx-lm; length-sorted buckets, no
  packing). On a Mac `make bench` runs trainkit (torch on MPS) against it on configs/bench_m4.yaml, so
  the two backends train the same model, data and batches; elsewhere it runs on MLX's CPU build.

On CPU the model is the tiny local one and the data data/sample/. On CUDA (H100 config) the model is built
from configs/architectures/Qwen--Qwen2.5-7B-Instruct/config.json with random weights (no download), the data
are synthetic token sequences of 200-1,800 tokens, and both runs hold the model in the config's dtype.
`--architecture DIR` asks for that anywhere (`--architecture models/tiny-chat` tries it on CPU).

MFU counts matmul FLOPs only: LoRA leaves the base weights frozen, so a step costs forward 2·N·tokens plus
backward through the activations 2·N·tokens (no weight gradients), and 2·N·tokens more when activation
checkpointing recomputes the forward. N is the parameter count without the input embedding (a lookup);
attention's own FLOPs and the adapters' are left out. Peak is the GPU's dense bf16 figure.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainkit.core import protocol
from trainkit.core.errors import ConfigError, TrainkitError
from trainkit.core.protocol import ExitCode
from trainkit.preflight.calibrate import Throughput
from trainkit.preflight.device_figures import process_peak_rss

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "outputs" / "bench"
CPU_CONFIG = "configs/bench_cpu.yaml"
CUDA_CONFIG = "configs/training_config_h100.yaml"
ARCHITECTURE = ROOT / "configs" / "architectures" / "Qwen--Qwen2.5-7B-Instruct"
TOKENIZER = ROOT / "models" / "tiny-chat"
TAG = "BENCH"
RUNS = ("trainkit", "trl", "mlx", "padded")
LABELS = {"trainkit": "trainkit", "trl": "plain TRL", "mlx": "trainkit mlx", "padded": "trainkit padded"}
M4_CONFIG = "configs/bench_m4.yaml"
SYNTHETIC_EXAMPLES = 2000
SYNTHETIC_LENGTHS = (200, 1800)

MFU_FORMULA = ("MFU = (4 + 2 if activation checkpointing) x N x non-padding tokens per step / step time / peak; "
               "N = parameters without the input embedding; peak = the GPU's dense bf16 FLOP/s")


def peak_flops(device_name: str | None) -> float | None:
    """The card's dense bf16 FLOP/s (trainkit.preflight.duration.PEAK_TFLOPS); None for a card it does not know."""
    from trainkit.preflight import duration

    return duration.peak_flops(device_name)


def flops_per_token(params: int, recompute: bool) -> int:
    from trainkit.preflight import duration

    return int(duration.flop_per_token(params, recompute))


# ------------------------------------------------------------------------------------------------------------
# Measuring one run (in a child process)


class Meter:
    """Counts the tokens each micro-batch carries and times each optimizer step."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.real = self.padded = 0
        self.steps: list[dict] = []
        self.t_step = None
        self.first_step_at = None

    def count(self, inputs: dict) -> None:
        ids = inputs["input_ids"]
        self.padded += ids.numel()
        if "attention_mask" in inputs:
            self.real += int(inputs["attention_mask"].sum())
        else:  # padding-free: one flattened row; anything after the last sequence is padding
            ends = inputs.get("cu_seq_lens_q")
            self.real += int(ends[-1]) if ends is not None else ids.numel()

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class StepTimer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                meter.sync()
                meter.t_step = time.perf_counter()
                meter.real = meter.padded = 0

            def on_step_end(self, args, state, control, **kwargs):
                meter.sync()
                if meter.first_step_at is None:
                    meter.first_step_at = time.time()
                meter.steps.append({"seconds": time.perf_counter() - meter.t_step, "real_tokens": meter.real,
                                    "padded_tokens": meter.padded})

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs and meter.steps:
                    meter.steps[-1]["loss"] = logs["loss"]

        return StepTimer()


def synthetic_dataset(vocab: int, seed: int):
    """Token sequences with chat-like lengths (200-1,800, skewed short), pre-tokenized so no tokenizer is needed."""
    import datasets
    import numpy as np

    rng = np.random.default_rng(seed)
    low, high = SYNTHETIC_LENGTHS
    lengths = np.clip(rng.lognormal(mean=np.log(700), sigma=0.5, size=SYNTHETIC_EXAMPLES), low, high).astype(int)
    rows = [rng.integers(3, vocab, size=n).tolist() for n in lengths]
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"input_ids": rows})})


def random_model(architecture: str, attn_implementation: str, dtype: str, device: str):
    """The architecture in `architecture`/config.json with random weights, built straight on `device`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = AutoConfig.from_pretrained(architecture)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(model_config, dtype=getattr(torch, dtype),
                                                attn_implementation=attn_implementation)


def memory_estimate(config, recompute: bool, architecture: str | None) -> int | None:
    """The preflight's estimate for these settings, in bytes (None when the architecture is unknown)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainkit.preflight.memory import estimate_training_memory

    where = architecture or config.model.model_name_or_path
    model_config = AutoConfig.from_pretrained(where)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    sft, margs = config.sft, config.model
    estimate = estimate_training_memory(
        model, model_config, batch_size=sft.per_device_train_batch_size, max_length=sft.max_length,
        weight_dtype=margs.dtype, load_in_4bit=False, lora_r=margs.lora_r,
        lora_target_modules=margs.lora_target_modules, activation_checkpointing=recompute,
        lora_dropout=margs.lora_dropout, triton=config.device == "cuda")
    return estimate.total


def baseline_args(config, output_dir: str):
    """SFTConfig with TRL's defaults; only what defines the workload is taken from the config."""
    from trl import SFTConfig

    sft = config.sft
    cpu = config.device == "cpu"
    return SFTConfig(
        output_dir=output_dir,
        max_steps=sft.max_steps,
        per_device_train_batch_size=sft.per_device_train_batch_size,
        gradient_accumulation_steps=sft.gradient_accumulation_steps,
        max_length=sft.max_length,
        learning_rate=sft.learning_rate,
        lr_scheduler_type=sft.lr_scheduler_type,
        warmup_steps=sft.warmup_steps,
        seed=sft.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        # TRL's bf16=True default refuses a CPU-only machine; there both runs train in fp32.
        **({"use_cpu": True, "bf16": False} if cpu else {"bf16": sft.bf16, "fp16": sft.fp16}),
    )


def child_config(config_path: str, steps: int, output_dir: str):
    from trainkit.config.settings import parse

    return parse(["--config", config_path, "--max_steps", str(steps), "--output_dir", output_dir,
                  "--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no",
                  "--logging_steps", "1", "--save_every_minutes", "0"])


def measure(kind: str, config_path: str, steps: int, skip: int, architecture: str | None = None) -> dict:
    """One run; `architecture` (a directory with a config.json) means random weights and synthetic data."""
    import torch
    import transformers
    import trl
    from trl import SFTTrainer, get_peft_config

    from trainkit.core.report import Report
    from trainkit.data.loading import load_chat_data
    from trainkit.preflight.checks import preflight
    from trainkit.train.faults import Faults
    from trainkit.train.trainer import build_trainer

    with tempfile.TemporaryDirectory(prefix="trainkit-bench-") as tmp:
        config = child_config(config_path, steps, tmp)
        cuda = config.device == "cuda"
        if kind == "padded":
            config.sft.packing = config.sft.padding_free = False
            kind = "trainkit_padded"
        if kind in ("trainkit", "trainkit_padded"):
            report = Report("PREFLIGHT")
            preflight(config, report, data=False)
            if report.errors:
                report.print_findings()
                raise ConfigError("the benchmark config fails the preflight", f"fix {config_path} (see above)")
        model = tokenizer = None
        if architecture:
            from transformers import AutoTokenizer

            attn = config.model.attn_implementation if kind != "trl" else "sdpa"
            model = random_model(architecture, attn, config.model.dtype, "cuda" if cuda else "cpu")
            tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
            data = synthetic_dataset(model.config.vocab_size, config.sft.seed)
            config.sft.model_init_kwargs = None
            # Token sequences have no roles to mask by: the loss covers every token, as in the baseline.
            config.sft.assistant_only_loss = False
        else:
            data = load_chat_data(config.trainkit.train_file, None)
        meter = Meter(cuda)
        if kind != "trl":
            trainer = build_trainer(config, {"train": data["train"]}, [meter.callback()], Faults(),
                                    model=model, processing_class=tokenizer)
            args = config.sft
        else:
            args = baseline_args(config, tmp)
            trainer = SFTTrainer(model=model if model is not None else config.model.model_name_or_path,
                                 args=args, train_dataset=data["train"], processing_class=tokenizer,
                                 peft_config=get_peft_config(config.model))
            trainer.add_callback(meter.callback())
        step = trainer.training_step

        def counted_step(model, inputs, num_items_in_batch=None):
            meter.count(inputs)
            return step(model, inputs, num_items_in_batch)

        trainer.training_step = counted_step
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()

        base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
        params = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
        params -= base.get_input_embeddings().weight.numel()
        recompute = bool(args.activation_checkpointing)
        if cuda:
            peak, peak_kind = torch.cuda.max_memory_reserved(), "CUDA max_memory_reserved"
            device_name = torch.cuda.get_device_name()
        else:
            peak, peak_kind = process_peak_rss(), "process peak RSS"
            device_name = "cpu"
        estimate = memory_estimate(config, recompute, architecture)
        run = "padded" if kind == "trainkit_padded" else kind
        return summarize({
            "run": run,
            "label": LABELS[run],
            "config": config_path,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": config.device,
            "device_name": device_name,
            "versions": {"torch": torch.__version__, "cuda": torch.version.cuda,
                         "transformers": transformers.__version__, "trl": trl.__version__},
            "model": f"{Path(architecture).name} (random weights, synthetic data)" if architecture
                     else config.model.model_name_or_path,
            "settings": {
                "attn_implementation": getattr(base.config, "_attn_implementation", None),
                "packing": bool(args.packing),
                "padding_free": bool(args.padding_free or (args.packing and args.packing_strategy != "wrapped")),
                "activation_checkpointing": recompute,
                "per_device_train_batch_size": args.per_device_train_batch_size,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "max_length": args.max_length,
                "optim": str(getattr(args.optim, "value", args.optim)),
                "dataloader_num_workers": args.dataloader_num_workers,
                "dataloader_pin_memory": args.dataloader_pin_memory,
                "loss_type": args.loss_type,
                "dtype": config.model.dtype,
            },
            **measured(meter, skip, peak, peak_kind, estimate, params, peak_flops(device_name if cuda else None)),
        })


def measure_mlx(config_path: str, steps: int, skip: int, architecture: str | None = None) -> dict:
    """One run of trainkit's MLX backend on the config; `architecture`: random weights on synthetic tokens."""
    import mlx.core as mx
    import mlx_lm
    import torch
    import transformers
    import trl

    from trainkit.core.report import Report
    from trainkit.preflight.checks import preflight
    from trainkit.train.faults import Faults
    from trainkit.train.mlx_backend import MlxBackend, MlxSession

    with tempfile.TemporaryDirectory(prefix="trainkit-bench-") as tmp:
        config = child_config(config_path, steps, tmp)
        config.trainkit.backend = "mlx"
        config.sft.packing = False  # the MLX loop batches length-sorted buckets
        report = Report("PREFLIGHT")
        preflight(config, report, data=False)  # decides activation_checkpointing: auto, as for the torch run
        if report.errors:
            report.print_findings()
            raise ConfigError("the benchmark config fails the preflight under backend: mlx", "see the ERROR above")
        loaded = None
        if architecture:
            from mlx_lm.tokenizer_utils import TokenizerWrapper
            from mlx_lm.utils import load_model
            from transformers import AutoTokenizer

            model, _ = load_model(Path(architecture), strict=False)  # no weight files: MLX's random init
            model.set_dtype(getattr(mx, config.model.dtype))
            loaded = (model, TokenizerWrapper(AutoTokenizer.from_pretrained(TOKENIZER)))
            vocab = json.loads((Path(architecture) / "config.json").read_text())["vocab_size"]
            rows = synthetic_dataset(vocab, config.sft.seed)["train"]["input_ids"]
            data = {"train": [(ids[:config.sft.max_length], [1] * min(len(ids), config.sft.max_length))
                              for ids in rows]}
        else:
            data = {"train": MlxBackend().load_data(config)["train"]}
        meter = Meter(False)
        session = MlxSession(config, data, [meter.callback()], Faults(), loaded=loaded)
        batch = session._batch

        def counted(indices, examples=None):
            inputs, targets, mask = batch(indices, examples)
            rows = session.examples if examples is None else examples
            meter.real += sum(len(rows[i][0]) for i in indices)
            meter.padded += int(inputs.shape[0] * (inputs.shape[1] + 1))  # the rows before the shift by one
            return inputs, targets, mask

        session._batch = counted
        session.train(None)
        from mlx.utils import tree_flatten

        params = sum(v.size for name, v in tree_flatten(session.model.parameters())
                     if "lora_" not in name and "embed_tokens" not in name)
        if sys.platform == "darwin" and mx.metal.is_available():
            peak, peak_kind = mx.get_peak_memory(), "MLX peak memory (Metal)"
            from trainkit.preflight.gpu import apple_chip

            device_name = apple_chip() or "Apple GPU"
        else:
            peak, peak_kind = process_peak_rss(), "process peak RSS"
            device_name = "cpu (MLX)"
        sft = config.sft
        return summarize({
            "run": "mlx",
            "label": LABELS["mlx"],
            "config": config_path,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": "mlx",
            "device_name": device_name,
            "versions": {"mlx": mx.__version__, "mlx_lm": mlx_lm.__version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "trl": trl.__version__},
            "model": f"{Path(architecture).name} (random weights, synthetic data)" if architecture
                     else config.model.model_name_or_path,
            "settings": {
                "attn_implementation": "mlx", "packing": False, "padding_free": False,
                "activation_checkpointing": bool(sft.activation_checkpointing),
                "per_device_train_batch_size": sft.per_device_train_batch_size,
                "gradient_accumulation_steps": sft.gradient_accumulation_steps,
                "max_length": sft.max_length, "load_in_4bit": bool(config.model.load_in_4bit),
                "dtype": config.model.dtype,
            },
            **measured(meter, skip, peak, peak_kind,
                       memory_estimate(config, bool(sft.activation_checkpointing), architecture), params, None),
        })


def measured(meter: Meter, skip: int, peak: int, peak_kind: str, estimate: int | None, params: int,
             peak_flops: float | None) -> dict:
    """The result fields every run kind records, from its meter and its memory figures."""
    import psutil

    return {"steps": meter.steps, "skip": skip,
            "time_to_first_step_s": round(meter.first_step_at - psutil.Process().create_time(), 2),
            "peak_memory_bytes": peak, "peak_memory_kind": peak_kind, "estimate_bytes": estimate, "params": params,
            "peak_flops": peak_flops}


def summarize(result: dict) -> dict:
    """Add the figures the table shows, from the per-step measurements."""
    steps = result["steps"][result["skip"]:]
    seconds = sum(s["seconds"] for s in steps)
    real = sum(s["real_tokens"] for s in steps)
    padded = sum(s["padded_tokens"] for s in steps)
    median = statistics.median(s["seconds"] for s in steps)
    tokens_per_step = real / len(steps)
    # Rates are medians of the per-step rates: a step slowed by another process on the machine moves a
    # mean (kept as *_mean) but not a median.
    rate = statistics.median(s["real_tokens"] / s["seconds"] for s in steps)
    padded_rate = statistics.median(s["padded_tokens"] / s["seconds"] for s in steps)
    recompute = result["settings"]["activation_checkpointing"]
    flops_step = flops_per_token(result["params"], recompute) * tokens_per_step
    peak, measured, estimate = result["peak_flops"], result["peak_memory_bytes"], result["estimate_bytes"]
    result.update(
        measured_steps=len(steps),
        tokens_per_second=rate,
        padded_tokens_per_second=padded_rate,
        tokens_per_second_mean=real / seconds,
        padded_tokens_per_second_mean=padded / seconds,
        padding_share=1 - real / padded if padded else 0.0,
        step_time_median_s=median,
        tokens_per_step=tokens_per_step,
        flops_per_step=flops_step,
        achieved_tflops=flops_step / median / 1e12,
        mfu=flops_step / median / peak if peak else None,
        mfu_formula=MFU_FORMULA + f"; here {'6' if recompute else '4'} x {result['params']:,} x "
                                  f"{tokens_per_step:,.0f} tokens",
        estimate_error_pct=100 * (estimate - measured) / measured if estimate and measured else None,
    )
    return result


CALIBRATION_STEPS, CALIBRATION_SKIP = 5, 2


def calibrate(suggested_yaml: str, model_dir: Path) -> Throughput | None:
    """Tokens/s of trainkit's trainer on a suggested config on this CPU (CALIBRATION_STEPS steps, the first
    CALIBRATION_SKIP not counted, nothing saved, its output kept off the screen) and of a greedy generation;
    None when the config cannot train here."""
    import contextlib
    import io

    from trainkit.preflight.calibrate import generation_rate

    with tempfile.TemporaryDirectory(prefix="trainkit-calibrate-") as tmp:
        path = Path(tmp) / "suggested.yaml"
        path.write_text(suggested_yaml, encoding="utf-8")
        quiet = io.StringIO()
        try:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                result = measure("trainkit", str(path), CALIBRATION_STEPS, CALIBRATION_SKIP)
                generated = generation_rate(model_dir)
        except Exception:  # a measurement is a refinement: the FLOP estimate stands in
            return None
    if not generated:
        return None
    s = result["settings"]
    return Throughput(result["tokens_per_second"], generated,
                      f"measured on this CPU: {result['measured_steps']} steps of trainkit's trainer at "
                      f"{s['per_device_train_batch_size']} x up to {s['max_length']} tokens, and a greedy generation")


def child_main(args) -> int:
    try:
        run = measure_mlx if args.child == "mlx" else functools.partial(measure, args.child)
        result = run(args.config, args.steps, args.skip, args.architecture)
    except TrainkitError as exc:
        protocol.error(exc.message, exc.hint)
        return exc.exit_code
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
    return ExitCode.OK


# ------------------------------------------------------------------------------------------------------------
# The parent: one child per run, then the table


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def on_a_mac_with_mlx() -> bool:
    import importlib.util

    return sys.platform == "darwin" and importlib.util.find_spec("mlx_lm") is not None


def default_config() -> str:
    if cuda_available():
        return CUDA_CONFIG
    return M4_CONFIG if on_a_mac_with_mlx() else CPU_CONFIG


def default_runs() -> str:
    """trainkit against plain TRL (on CUDA also trainkit padded: packing against padding with the attention auto
    picks); on a Mac, the torch backend (MPS) against the MLX one."""
    if cuda_available():
        return "trainkit,padded,trl"
    return "trainkit,mlx" if on_a_mac_with_mlx() else "trainkit,trl"


def gb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1e9:.2f} GB"


def table(results: list[dict]) -> list[str]:
    rows = [
        ("non-padding tokens/s", lambda r: f"{r['tokens_per_second']:,.0f}", "tokens_per_second"),
        ("padded tokens/s", lambda r: f"{r['padded_tokens_per_second']:,.0f}", "padded_tokens_per_second"),
        ("padding share", lambda r: f"{r['padding_share']:.1%}", None),
        ("non-padding tokens/step", lambda r: f"{r['tokens_per_step']:,.0f}", None),
        ("step time (median)", lambda r: f"{r['step_time_median_s']:.3f} s", "step_time_median_s"),
        ("time to first step", lambda r: f"{r['time_to_first_step_s']:.1f} s", "time_to_first_step_s"),
        ("peak memory", lambda r: gb(r["peak_memory_bytes"]), None),
        ("preflight estimate", lambda r: gb(r["estimate_bytes"]) + (
            f" ({r['estimate_error_pct']:+.0f}%)" if r["estimate_error_pct"] is not None else ""), None),
        ("activation checkpointing", lambda r: "on" if r["settings"]["activation_checkpointing"] else "off", None),
        ("padding-free", lambda r: "yes" if r["settings"]["padding_free"] else "no", None),
        ("attention", lambda r: str(r["settings"]["attn_implementation"]), None),
        ("achieved TFLOP/s", lambda r: f"{r['achieved_tflops']:.3g}", None),
        ("MFU", lambda r: "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}", None),
    ]
    names = [r["label"] for r in results]
    ratio = len(results) == 2
    head = f"{'':<26}" + "".join(f"{n:>16}" for n in names) + (f"{'ratio':>10}" if ratio else "")
    if ratio:
        head += f"   ({names[0]} / {names[1]})"
    lines = [head]
    for title, fmt, key in rows:
        line = f"{title:<26}" + "".join(f"{fmt(r):>16}" for r in results)
        if ratio and key:
            a, b = results[0][key], results[1][key]
            line += f"{a / b:>9.2f}x" if b else f"{'':>10}"
        lines.append(line)
    return lines


def run_child(kind: str, args, stamp: str) -> tuple[int, Path, Path]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result, log = out / f"{stamp}-{kind}.json", out / f"{stamp}-{kind}.log"
    cmd = [sys.executable, "-m", "trainkit.bench", "--child", kind, "--config", args.config, "--steps",
           str(args.steps), "--skip", str(args.skip), "--result", str(result)]
    if args.architecture:
        cmd += ["--architecture", args.architecture]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("w") as fh:
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    return code, result, log


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="scripts/benchmark.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help=f"config to benchmark (default: {CUDA_CONFIG} on CUDA, {M4_CONFIG} on a "
                                         f"Mac with MLX, {CPU_CONFIG} else)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run (default 40)")
    parser.add_argument("--skip", type=int, default=5, help="first steps left out of the medians and rates (default 5)")
    parser.add_argument("--runs", help="comma-separated: trainkit, trl, mlx, padded (default trainkit,trl; on CUDA "
                                       "trainkit,padded,trl; on a Mac trainkit,mlx: torch on MPS against MLX)")
    parser.add_argument("--out", default=str(BENCH_DIR), help="where the JSON files go (default outputs/bench)")
    parser.add_argument("--architecture",
                        help="train a model built from DIR/config.json with random weights on synthetic token data "
                             f"(default on CUDA: {ARCHITECTURE.relative_to(ROOT)}; on CPU the config's model and data)")
    parser.add_argument("--child", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    args.runs = args.runs or default_runs()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if not runs or any(r not in RUNS for r in runs):
        protocol.error(f"--runs must list trainkit, trl, mlx or padded, not {args.runs!r}", "use --runs trainkit,trl")
        return ExitCode.ERROR
    if args.skip < 0 or args.steps <= args.skip:
        protocol.error(f"--steps ({args.steps}) must be larger than --skip ({args.skip})",
                       "measure at least one step after the skipped ones, e.g. --steps 40 --skip 5")
        return ExitCode.ERROR
    args.config = args.config or default_config()
    if not Path(args.config).is_file():
        protocol.error(f"config file not found: {args.config}", f"pass --config {CPU_CONFIG}")
        return ExitCode.ERROR
    args.config = str(Path(args.config).resolve())
    if args.architecture is None and args.config == str((ROOT / CUDA_CONFIG).resolve()) and cuda_available():
        args.architecture = str(ARCHITECTURE)
    if args.architecture and not (Path(args.architecture) / "config.json").is_file():
        protocol.error(f"no config.json in {args.architecture}",
                       f"pass --architecture {ARCHITECTURE.relative_to(ROOT)}")
        return ExitCode.ERROR
    if args.architecture:
        args.architecture = str(Path(args.architecture).resolve())
    args.out = str(Path(args.out).resolve())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    protocol.section(TAG, f"{', '.join(LABELS[r] for r in runs)}: {args.steps} steps each of {args.config} "
                          f"(medians over steps {args.skip + 1}-{args.steps})")
    results = []
    for kind in runs:
        protocol.section(TAG, f"{LABELS[kind]}: training (log in {Path(args.out) / f'{stamp}-{kind}.log'})")
        code, result, log = run_child(kind, args, stamp)
        if code != 0 or not result.is_file():
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
            protocol.error(f"the {LABELS[kind]} benchmark run failed (exit {code}): {tail[0] if tail else ''}",
                           f"full output in {log}")
            return ExitCode.ERROR if code == ExitCode.ERROR else ExitCode.CRASHED
        results.append(json.loads(result.read_text()))
        protocol.section(TAG, f"{LABELS[kind]}: {results[-1]['tokens_per_second']:,.0f} non-padding tokens/s; "
                              f"result in {result}")
    first = results[0]
    devices = " / ".join(dict.fromkeys(r["device_name"] for r in results))
    mlx = next((r["versions"] for r in results if "mlx" in r["versions"]), None)
    print(f"\n{devices} | torch {first['versions']['torch']} | transformers "
          f"{first['versions']['transformers']} | trl {first['versions']['trl']}"
          + (f" | mlx {mlx['mlx']} | mlx-lm {mlx['mlx_lm']}" if mlx else "") + f" | {first['date']}")
    print("\n".join(table(results)))
    kinds = " / ".join(dict.fromkeys(r["peak_memory_kind"] for r in results))
    print(f"\n{MFU_FORMULA}\npeak memory: {kinds}; estimate error = (estimate - measured) / measured\n")
    if len(results) == 2:
        speedup = results[0]["tokens_per_second"] / results[1]["tokens_per_second"]
        protocol.success(f"benchmark complete: {results[0]['label']} {speedup:.2f}x the non-padding tokens/s of "
                         f"{results[1]['label']}; JSON in {args.out}")
    else:
        protocol.success(f"benchmark complete: JSON in {args.out}")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
