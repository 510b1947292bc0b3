"""The MLX backend (Apple Silicon; MLX's CPU build on Linux for the tests): trainkit's own loop over mlx-lm's
model and LoRA layers, with every guarantee of the torch backend.

    backend: mlx                      # in a config, or train.py --backend mlx

What it keeps, as trainkit.train.backend says every backend must:
- the trained tokens are the training view's (trainkit.data.training_view): the same ids and loss mask
  TRL trains, every assistant turn, tool-call arguments as objects, the same max_length truncation;
- LoRA r, alpha (scale = alpha / r, as PEFT), dropout and lora_target_modules mean what they mean under
  PEFT; `load_in_4bit: true` quantizes the frozen base (MLX affine, 4 bits, group size 64);
- AdamW with the config's learning rate, schedule, warmup, betas, epsilon, weight decay and max grad norm,
  gradient accumulation, optional activation checkpointing, seeded;
- checkpoint-N/ holds the adapter (PEFT and MLX layouts), the optimizer state, trainer_state.json and
  mlx_state.json, behind the incomplete marker until all of it is written. The data order, the LoRA
  dropout masks and the schedule are functions of (seed, step), so a resume continues exactly;
- trainkit's callbacks (status.json, tags, stop requests, faults) and the report_to reporters (W&B, one
  run continued across restarts) hear every step, log and save through transformers' CallbackHandler,
  with DefaultFlowCallback deciding when to log, save and stop;
- a non-finite loss or gradient raises LossDiverged before the update is applied;
- final/ is a PEFT adapter (lora_A/lora_B, adapter_config.json) that sample.py, merge_adapter.py and
  evaluate.py load on the torch base; final/mlx/ is the same adapter for `mlx_lm.generate --adapter-path`.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from pathlib import Path

from trainkit.core.errors import ConfigError
from trainkit.core.report import Report
from trainkit.train.checkpoints import (
    INCOMPLETE_MARKER,
    MLX_ADAPTER_FILE,
    MLX_OPTIMIZER_FILE,
    MLX_STATE_FILE,
    PREFIX_CHECKPOINT_DIR,
)
from trainkit.train.divergence import DivergenceGuard, LossDiverged, WeightsNotFinite
from trainkit.train.out_of_room import remove_half_written

MLX_ADAPTER_DIR = MLX_ADAPTER_FILE.split("/")[0]
QUANT_BITS, QUANT_GROUP_SIZE = 4, 64
# Examples per length-sorted bucket, in batches: sorting within a bucket keeps padding low while the
# buckets themselves stay shuffled.
BUCKET_BATCHES = 8


class MlxBackend:
    name = "mlx"

    def load_data(self, config) -> dict:
        """The training view's tokens for every example that trains at least one token, per split."""
        from trainkit.config.model_source import load_tokenizer, locate_model
        from trainkit.data.training_view import resolve_view, tokenized_file

        report = Report("PREFLIGHT")
        tokenizer = load_tokenizer(locate_model(config.model.model_name_or_path), report)
        view = resolve_view(tokenizer, config.sft, report) if tokenizer is not None else None
        if view is None:
            finding = (report.errors or report.warnings)[0]
            raise ConfigError(finding.message, finding.hint)
        from trainkit.data.loading import eval_subset

        data = {}
        for split, path in (("train", config.trainkit.train_file), ("validation", config.trainkit.validation_file)):
            if path:
                data[split] = [(t.input_ids, t.mask) for _, _, t in tokenized_file(view, path)
                               if not isinstance(t, Exception) and t.trained]
        if "validation" in data:
            rows = eval_subset(len(data["validation"]), config.trainkit.eval_max_examples)
            if rows is not None:
                data["validation"] = [data["validation"][i] for i in rows]
        return data

    def build(self, config, data: dict, callbacks: list, faults) -> MlxSession:
        return MlxSession(config, data, callbacks, faults)


def lora_keys(targets, layer) -> list[str]:
    """mlx-lm's module paths inside a decoder layer for PEFT's lora_target_modules (leaf names, as PEFT
    matches a list); "all-linear" is every linear layer."""
    import mlx.nn as nn

    linear = [name for name, module in layer.named_modules()
              if isinstance(module, (nn.Linear, nn.QuantizedLinear))]
    if targets in (None, "all-linear"):
        return linear
    wanted = {targets} if isinstance(targets, str) else set(targets)
    return [name for name in linear if name.rsplit(".", 1)[-1] in wanted]


def learning_rate(sft, step: int, max_steps: int) -> float:
    """transformers' schedule for the optimizer step after `step` steps (linear warmup, then the decay)."""
    warmup = sft.warmup_steps if sft.warmup_steps >= 1 else math.ceil(sft.warmup_steps * max_steps)
    kind = str(getattr(sft.lr_scheduler_type, "value", sft.lr_scheduler_type))
    if step < warmup:
        return sft.learning_rate * step / max(1, warmup)
    progress = (step - warmup) / max(1, max_steps - warmup)
    if kind == "cosine":
        return sft.learning_rate * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if kind == "linear":
        return sft.learning_rate * max(0.0, 1.0 - progress)
    return sft.learning_rate


def epoch_batches(examples: list, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches (indices into `examples`), a pure function of (seed, epoch): shuffled,
    length-sorted within buckets of BUCKET_BATCHES batches, the batches shuffled again."""
    order = list(range(len(examples)))
    rng = random.Random(seed * 1_000_003 + epoch)
    rng.shuffle(order)
    bucket = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start:start + bucket], key=lambda i: len(examples[i][0]))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


class MlxSession:
    def __init__(self, config, data: dict, callbacks: list, faults, loaded: tuple | None = None):
        """`loaded`: (model, mlx-lm TokenizerWrapper) built elsewhere (make bench's random weights); else mlx-lm
        loads model_name_or_path."""
        import mlx.core as mx
        import mlx.nn as nn
        import mlx.optimizers as optim
        from mlx_lm import load
        from mlx_lm.tuner.utils import linear_to_lora_layers
        from transformers.integrations import get_reporting_integration_callbacks
        from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback, TrainerControl, TrainerState

        self.batch_shape: tuple[int, int] | None = None  # the running micro-batch (rows, tokens): an OOM names it
        self.stop_requested = lambda: False  # train.py's StopRequest: an evaluation in progress is abandoned
        self.config, self.sft, self.faults = config, config.sft, faults
        self.examples = data["train"]
        self.validation = data.get("validation") or []
        if not self.examples:
            raise ConfigError(f"{config.trainkit.train_file}: no example trains a token",
                              "check the data with scripts/inspect_data.py")
        self.output_dir = Path(self.sft.output_dir)
        self.guard = DivergenceGuard(config.trainkit.loss_spike_factor)
        self.continuation = None
        mx.random.seed(self.sft.seed)
        self.model, self.tokenizer = loaded or load(str(config.model.model_name_or_path))
        # The generation config the torch model would load: the tool-call evaluation stops on the same tokens.
        self.model.generation_config = generation_config(config.model.model_name_or_path)
        if config.model.load_in_4bit:
            nn.quantize(self.model, group_size=QUANT_GROUP_SIZE, bits=QUANT_BITS)
        self.model.freeze()
        model = config.model
        self.lora = {"rank": model.lora_r, "scale": model.lora_alpha / model.lora_r,
                     "dropout": model.lora_dropout,
                     "keys": lora_keys(model.lora_target_modules, self.model.layers[0])}
        linear_to_lora_layers(self.model, len(self.model.layers), self.lora)
        if self.sft.activation_checkpointing:
            from mlx_lm.tuner.trainer import grad_checkpoint

            grad_checkpoint(self.model.layers[0])
        self.optimizer = optim.AdamW(learning_rate=0.0, betas=[self.sft.adam_beta1, self.sft.adam_beta2],
                                     eps=self.sft.adam_epsilon, weight_decay=self.sft.weight_decay)
        self.batch_size = self.sft.per_device_train_batch_size
        self.accumulation = self.sft.gradient_accumulation_steps
        steps_per_epoch = max(1, math.ceil(len(self.examples) / self.batch_size) // self.accumulation)
        max_steps = self.sft.max_steps if self.sft.max_steps > 0 else int(
            math.ceil(self.sft.num_train_epochs * steps_per_epoch))
        self.state = TrainerState(max_steps=max_steps, logging_steps=self.sft.logging_steps,
                                  save_steps=self.sft.save_steps, eval_steps=self.sft.eval_steps,
                                  train_batch_size=self.batch_size)
        self.steps_per_epoch = steps_per_epoch
        self._epoch: tuple[int, list[list[int]]] | None = None  # (epoch, its batches), built when first needed
        self.control = TrainerControl()
        # The reporters Trainer would add for report_to (W&B: the run id trainkit.train.tracking set up, so a
        # resume continues it), ahead of trainkit's callbacks as in Trainer: status.json then has the W&B URL.
        reporters = [reporter() for reporter in get_reporting_integration_callbacks(self.sft.report_to)]
        # The transformers tokenizer, not mlx-lm's wrapper: the evaluation renders prompts as the torch run does.
        self.callbacks = CallbackHandler([DefaultFlowCallback(), *reporters, *callbacks], self.model,
                                         self.tokenizer._tokenizer, self.optimizer, None)
        self.loss_and_grad = nn.value_and_grad(self.model, self._loss)

    # -- the loop -------------------------------------------------------------------------------

    def _loss(self, model, inputs, targets, mask):
        import mlx.core as mx
        import mlx.nn as nn

        logits = model(inputs).astype(mx.float32)
        return (nn.losses.cross_entropy(logits, targets) * mask).sum()

    def _batch(self, indices: list[int], examples: list | None = None):
        import mlx.core as mx

        rows = [(self.examples if examples is None else examples)[i] for i in indices]
        width = max(len(ids) for ids, _ in rows)
        ids = [list(i) + [0] * (width - len(i)) for i, _ in rows]
        mask = [list(m) + [0] * (width - len(m)) for _, m in rows]
        tokens = mx.array(ids)
        # The loss at position t predicts token t + 1: its mask is that token's, as in transformers' shift.
        return tokens[:, :-1], tokens[:, 1:], mx.array(mask)[:, 1:].astype(mx.float32)

    def _micro_batches(self, step: int) -> list[list[int]]:
        """The micro-batches of optimizer step `step` + 1: the data position is a function of the step."""
        first = step * self.accumulation
        found = []
        for k in range(first, first + self.accumulation):
            epoch, index = divmod(k, self.steps_per_epoch * self.accumulation)
            if self._epoch is None or self._epoch[0] != epoch:  # one shuffle and sort per epoch, not per batch
                self._epoch = (epoch, epoch_batches(self.examples, self.batch_size, self.sft.seed, epoch))
            batches = self._epoch[1]
            found.append(batches[index % len(batches)])
        return found

    def train(self, resume_from: Path | None) -> None:
        import mlx.core as mx
        import mlx.optimizers as optim
        from mlx.utils import tree_map

        if resume_from:
            self._restore(Path(resume_from))
        self.control = self.callbacks.on_train_begin(self.sft, self.state, self.control)
        self.model.train()
        if self.sft.eval_on_start and self.state.global_step == 0:
            self._evaluate()
        started, logged_loss, logged_tokens = time.time(), 0.0, 0
        while self.state.global_step < self.state.max_steps and not self.control.should_training_stop:
            step = self.state.global_step
            self.control = self.callbacks.on_step_begin(self.sft, self.state, self.control)
            mx.random.seed(self.sft.seed * 1_000_003 + step)  # dropout masks: a function of the step
            total_loss, total_tokens, grads = 0.0, 0, None
            for indices in self._micro_batches(step):
                inputs, targets, mask = self._batch(indices)
                self.batch_shape = (len(indices), int(inputs.shape[1]) + 1)
                self.faults.oom_if_due(step + 1, "mlx")
                self.state.num_input_tokens_seen += sum(len(self.examples[i][0]) for i in indices)
                loss, micro = self.loss_and_grad(self.model, inputs, targets, mask)
                tokens = int(mask.sum().item())
                grads = micro if grads is None else tree_map(lambda a, b: a + b, grads, micro)
                total_loss += float(loss.item())
                total_tokens += tokens
            mean = total_loss / max(1, total_tokens)
            if self.faults.nan_at_step == step + 1:
                mean = math.nan
            self.guard.observe(step + 1, mean)
            scale = 1.0 / max(1, total_tokens)  # the mean over every trained token of the step, as TRL's loss
            grads = tree_map(lambda g, s=scale: g * s, grads)
            if self.faults.inf_grad_at_step == step + 1:
                grads = tree_map(lambda g: g * math.inf, grads)
            if self.sft.max_grad_norm and self.sft.max_grad_norm > 0:
                grads, norm = optim.clip_grad_norm(grads, self.sft.max_grad_norm)
            else:
                norm = optim.clip_grad_norm(grads, math.inf)[1]
            norm = float(norm.item())
            if not math.isfinite(norm):
                raise LossDiverged(step + 1, norm, f"gradients became non-finite (norm {norm})")
            self.optimizer.learning_rate = self._learning_rate(step)
            self.optimizer.update(self.model, grads)
            mx.eval(self.model.trainable_parameters(), self.optimizer.state)
            self.state.global_step = step + 1
            self.state.epoch = self.state.global_step / self.steps_per_epoch
            logged_loss, logged_tokens = logged_loss + mean, logged_tokens + 1
            self.control = self.callbacks.on_step_end(self.sft, self.state, self.control)
            if self.state.global_step % self.steps_per_epoch == 0:
                self.control = self.callbacks.on_epoch_end(self.sft, self.state, self.control)
            if self.control.should_log:
                logs = {"loss": round(logged_loss / logged_tokens, 4), "grad_norm": norm,
                        "learning_rate": self._learning_rate(step),
                        "epoch": round(self.state.epoch, 4), "num_tokens": float(self.state.num_input_tokens_seen)}
                self.state.log_history.append({**logs, "step": self.state.global_step})
                logged_loss, logged_tokens = 0.0, 0
                self.control = self.callbacks.on_log(self.sft, self.state, self.control, logs=logs)
            if self.control.should_evaluate:
                self._evaluate()
            if self.control.should_save:
                self._save_checkpoint()
                self.control = self.callbacks.on_save(self.sft, self.state, self.control)
        runtime = time.time() - started
        self.state.log_history.append({"train_runtime": round(runtime, 4), "step": self.state.global_step})
        self.control = self.callbacks.on_train_end(self.sft, self.state, self.control)

    def _learning_rate(self, step: int) -> float:
        """The rate of the update after `step` steps; under --more_steps the continuation's own segment
        (trainkit.train.continuation), as the torch backend's LambdaLR gives it."""
        if self.continuation is not None:
            return self.sft.learning_rate * self.continuation.factor(step)
        return learning_rate(self.sft, step, self.state.max_steps)

    def _evaluate(self) -> None:
        """Trainer.evaluate's figures: eval_loss is the mean over examples of their batch's per-token loss, the
        batches of per_device_eval_batch_size in file order; then on_log and on_evaluate (the tool-call figures)."""
        import mlx.core as mx

        started = time.time()
        self.model.eval()
        total, rows = 0.0, 0
        size = self.sft.per_device_eval_batch_size
        for start in range(0, len(self.validation), size):
            self.faults.signal_if_evaluating()
            if self.stop_requested():
                from trainkit.core.signals import EvaluationStopped

                raise EvaluationStopped(f"evaluation at step {self.state.global_step} abandoned")
            indices = list(range(start, min(start + size, len(self.validation))))
            inputs, targets, mask = self._batch(indices, self.validation)
            loss = self._loss(self.model, inputs, targets, mask) / mx.maximum(mask.sum(), 1)
            total += float(loss.item()) * len(indices)
            rows += len(indices)
        self.model.train()
        metrics = {}
        if rows:
            runtime = time.time() - started
            metrics = {"eval_loss": total / rows, "eval_runtime": round(runtime, 4),
                       "eval_samples_per_second": round(rows / max(runtime, 1e-9), 3)}
            self._log(dict(metrics))
        self.control = self.callbacks.on_evaluate(self.sft, self.state, self.control, metrics)

    def _log(self, logs: dict) -> None:
        logs = {**logs, "epoch": round(self.state.epoch or 0.0, 4)}
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callbacks.on_log(self.sft, self.state, self.control, logs=logs)

    def check_weights(self) -> None:
        bad = non_finite(self.model)
        if bad:
            raise WeightsNotFinite(self.state.global_step, bad)

    def save_last_good(self) -> tuple[Path | None, str]:
        """The state after the last good step: the update of the diverged one was never applied."""
        step = self.state.global_step
        path = self.output_dir / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        if step == 0:
            return None, ""
        if non_finite(self.model):
            return None, "the weights are no longer finite, so no checkpoint was saved"
        if not path.exists():
            self._save_checkpoint()
            self.control = self.callbacks.on_save(self.sft, self.state, self.control)
        return path, ""

    def save_final(self, path: Path, write_state: bool) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._write_adapters(path)
        if write_state:
            self.state.save_to_json(str(path / "trainer_state.json"))

    # -- checkpoints ----------------------------------------------------------------------------

    def _write_adapters(self, folder: Path) -> None:
        from mlx.utils import tree_flatten

        weights = dict(tree_flatten(self.model.trainable_parameters()))
        write_peft_adapter(folder, weights, self.config)
        native = folder / MLX_ADAPTER_DIR
        native.mkdir(exist_ok=True)
        import mlx.core as mx

        mx.save_safetensors(str(folder / MLX_ADAPTER_FILE), weights)
        (native / "adapter_config.json").write_text(json.dumps({
            "fine_tune_type": "lora", "num_layers": len(self.model.layers),
            "lora_parameters": self.lora,
            "quantize": self.config.model.load_in_4bit,
        }, indent=2) + "\n")

    def _save_checkpoint(self) -> None:
        import mlx.core as mx
        from mlx.utils import tree_flatten

        self.check_weights()  # no checkpoint is ever written from non-finite weights
        step = self.state.global_step
        path = self.output_dir / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        path.mkdir(parents=True, exist_ok=True)
        (path / INCOMPLETE_MARKER).write_text("written before the save, removed once it is whole\n")
        try:
            self._write_adapters(path)
            self.faults.kill_if_saving_at(step)
            optimizer = {k: v for k, v in tree_flatten(self.optimizer.state) if isinstance(v, mx.array)}
            mx.save_safetensors(str(path / MLX_OPTIMIZER_FILE), optimizer)
            self.faults.fail_save_if_due(step, path / MLX_STATE_FILE)
            (path / MLX_STATE_FILE).write_text(json.dumps({"global_step": step, "seed": self.sft.seed,
                                                       "epoch": self.state.epoch}, indent=2) + "\n")
            self.state.save_to_json(str(path / "trainer_state.json"))
        except Exception:
            remove_half_written(path, INCOMPLETE_MARKER)  # its bytes would hold the disk that just filled
            raise
        (path / INCOMPLETE_MARKER).unlink()
        self._rotate()

    def _rotate(self) -> None:
        from trainkit.train import checkpoints

        limit = self.sft.save_total_limit
        if not limit or limit <= 0:
            return
        for old in checkpoints.checkpoint_dirs(self.output_dir)[limit:]:
            shutil.rmtree(old.path, ignore_errors=True)

    def _restore(self, path: Path) -> None:
        import mlx.core as mx
        from mlx.utils import tree_unflatten
        from transformers.trainer_callback import TrainerState

        weights = mx.load(str(path / MLX_ADAPTER_FILE))
        self.model.load_weights(list(weights.items()), strict=False)
        self.optimizer.init(self.model.trainable_parameters())
        self.optimizer.state = tree_unflatten(list(mx.load(str(path / MLX_OPTIMIZER_FILE)).items()))
        saved = TrainerState.load_from_json(str(path / "trainer_state.json"))
        saved.max_steps = self.state.max_steps
        saved.logging_steps, saved.save_steps = self.state.logging_steps, self.state.save_steps
        self.state = saved
        mx.eval(self.model.parameters(), self.optimizer.state)


def generation_config(model_name_or_path):
    """transformers' GenerationConfig for the model, as from_pretrained gives the torch model."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(str(model_name_or_path))
    except OSError:  # no generation_config.json: the model config's defaults, as transformers falls back to
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(str(model_name_or_path)))


def non_finite(model) -> list[str]:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    return [name for name, value in tree_flatten(model.trainable_parameters())
            if not bool(mx.all(mx.isfinite(value)).item())]


def peft_key(name: str) -> str:
    """mlx-lm's `model.layers.0.self_attn.q_proj.lora_a` -> PEFT's
    `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`."""
    module, leaf = name.rsplit(".", 1)
    return f"base_model.model.{module}.{'lora_A' if leaf == 'lora_a' else 'lora_B'}.weight"


def write_peft_adapter(folder: Path, weights: dict, config) -> None:
    """adapter_model.safetensors and adapter_config.json as PEFT writes them for this LoRA.

    mlx-lm keeps lora_a as (in, r) and lora_b as (r, out) with a direct `scale`; PEFT keeps lora_A.weight
    as (r, in) and lora_B.weight as (out, r), scaled by lora_alpha / r: the same scale, transposed."""
    import mlx.core as mx
    import numpy as np
    from peft import LoraConfig
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {peft_key(name): np.ascontiguousarray(np.array(value.astype(mx.float32)).T)
               for name, value in weights.items()}
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    model = config.model
    targets = model.lora_target_modules
    LoraConfig(r=model.lora_r, lora_alpha=model.lora_alpha, lora_dropout=model.lora_dropout,
               target_modules=list(targets) if isinstance(targets, (list, tuple)) else targets,
               task_type="CAUSAL_LM", base_model_name_or_path=str(model.model_name_or_path),
               ).save_pretrained(str(folder))
