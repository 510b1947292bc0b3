"""TRL's SFTTrainer with a divergence guard, built the way TRL's sft.py builds it."""

from __future__ import annotations

import math
import os
from pathlib import Path

from transformers import TrainerCallback
from trl import SFTTrainer, get_peft_config, get_quantization_config

from trainkit.core.signals import EvaluationStopped, agree_across_ranks
from trainkit.preflight import strategy as strategies
from trainkit.train.checkpoints import INCOMPLETE_MARKER, PREFIX_CHECKPOINT_DIR
from trainkit.train.divergence import (
    DivergenceGuard,
    LossDiverged,
    WeightsNotFinite,
    gradient_norm,
    non_finite_parameters,
)
from trainkit.train.faults import Faults, poison_gradient
from trainkit.train.out_of_room import remove_half_written


class GuardedSFTTrainer(SFTTrainer):
    """Stops at the first diverged micro-batch loss or non-finite gradient, before the optimizer applies it.

    Trainer's own logging_nan_inf_filter hides a NaN loss from the logs and steps on
    regardless, so the weights turn to NaN while the dashboard looks fine. Raising here
    leaves the model and optimizer exactly as they were after the last good step.
    Every verdict is agreed across ranks, so under torchrun all ranks stop at the same
    micro-batch instead of one waiting forever in a collective the other never reaches.
    """

    faults = Faults()
    guard = DivergenceGuard()
    continuation = None  # trainkit.train.continuation.Continuation for --more_steps

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.continuation is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        from trainkit.train.continuation import segment_scheduler

        self.lr_scheduler = segment_scheduler(optimizer or self.optimizer, self.continuation)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if self.continuation is not None and checkpoint is not None:
            # optimizer.pt holds the last learning rate of the old schedule (about 0 at the end of a cosine);
            # the segment's first step must use its own.
            from trainkit.train.continuation import start_segment

            start_segment(self.optimizer, self.lr_scheduler, self.continuation)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training and self.faults.nan_at_step == self.state.global_step + 1:
            if return_outputs:
                return result[0] * math.nan, result[1]
            return result * math.nan
        return result

    batch_shape: tuple[int, ...] | None = None  # the running micro-batch's (rows, tokens): an OOM names it
    stop_requested = staticmethod(lambda: False)  # train.py's StopRequest, read between evaluation batches

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        self.faults.signal_if_evaluating()
        # An evaluation can take many minutes: a stop request abandons it rather than wait for its end.
        if agree_across_ranks(self.stop_requested()):
            raise EvaluationStopped(f"evaluation at step {self.state.global_step} abandoned")
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def training_step(self, model, inputs, num_items_in_batch=None):
        step = self.state.global_step + 1
        ids = inputs.get("input_ids") if hasattr(inputs, "get") else None
        self.batch_shape = tuple(ids.shape) if ids is not None else None
        self.faults.oom_if_due(step, self.args.device.type)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.faults.inf_grad_at_step == step:
            poison_gradient(model)
        diverged = None
        try:
            # .item() syncs the device, as Trainer's own NaN filter already does every step.
            self.guard.observe(step, loss.item())
        except LossDiverged as exc:
            diverged = exc
        if agree_across_ranks(diverged is not None):
            raise diverged or LossDiverged(step, math.nan, "the loss diverged on another rank")
        return loss

    def check_weights(self) -> None:
        """Raise WeightsNotFinite (on every rank) when any rank's trainable weights hold NaN/inf."""
        bad = non_finite_parameters(self.model)
        if agree_across_ranks(bool(bad)):
            raise WeightsNotFinite(self.state.global_step, bad or ["on another rank"])

    def _save_checkpoint(self, model, trial):
        # A checkpoint with NaN weights passes every file check and makes each resume diverge again.
        self.check_weights()
        # Under torchrun the first process writes trainer_state.json (the last file) without waiting
        # for the others' RNG state: a rank lost mid-save would leave a checkpoint that looks whole.
        # So the checkpoint carries a marker until every rank has finished writing its part.
        folder = Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / INCOMPLETE_MARKER).write_text(
                "trainkit writes this file before a save and deletes it once every process has finished; "
                "a checkpoint that still holds it was cut off mid-save\n", encoding="utf-8")
        try:
            super()._save_checkpoint(model, trial)
        except Exception:
            # Its bytes would hold the disk that just filled; the complete checkpoints before it stay.
            if self.args.should_save:
                remove_half_written(folder, INCOMPLETE_MARKER)
            raise
        agree_across_ranks(True)  # every rank is past its save
        if self.args.should_save:
            (folder / INCOMPLETE_MARKER).unlink(missing_ok=True)

    def _save_rng_state(self, output_dir):
        self.faults.kill_if_saving_at(self.state.global_step)
        self.faults.fail_save_if_due(self.state.global_step, Path(output_dir) / "rng_state.pth")
        super()._save_rng_state(output_dir)


class FiniteGradientCheck(TrainerCallback):
    """The gradients the optimizer is about to apply must be finite, on every rank.

    A finite loss can come with inf gradients (a bf16 overflow); clipping turns them into
    NaN and the optimizer writes NaN weights, which the loss check sees one step too late.
    on_pre_optimizer_step runs after clipping and before optimizer.step().
    """

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        norm = gradient_norm(model)
        local = not math.isfinite(norm)
        if agree_across_ranks(local):
            detail = f"gradients became non-finite (norm {norm})" if local else \
                "gradients became non-finite on another rank"
            raise LossDiverged(state.global_step + 1, norm, detail)


def build_trainer(config, datasets, callbacks, faults: Faults, model=None, processing_class=None) -> GuardedSFTTrainer:
    """`model` (an instantiated model) and `processing_class` replace loading them by name (the benchmark's).

    The run's distributed strategy is the preflight's (config.strategy); without a preflight, what
    trainkit.preflight.strategy.choose says without a memory estimate.
    """
    strategy = getattr(config, "strategy", None) or strategies.choose(config)
    model_args = strategies.model_arguments(config.model, strategy)
    os.environ.update(strategies.loading_environment(strategy))
    trainer = GuardedSFTTrainer(
        model=model if model is not None else model_args.model_name_or_path,
        args=strategies.training_arguments(config.sft, strategy),
        train_dataset=datasets["train"],
        eval_dataset=datasets.get("validation"),
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),  # QLoRA when load_in_4bit is set
        processing_class=processing_class,
    )
    trainer.faults = faults
    trainer.guard = DivergenceGuard(config.trainkit.loss_spike_factor)
    # Our tagged progress lines replace the tqdm bar and the dict printer: log files
    # stay free of carriage returns and agents get one grammar.
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(FiniteGradientCheck())
    for callback in callbacks:
        trainer.add_callback(callback)
    return trainer


def save_adapter(trainer, path: str) -> None:
    """Write the adapter whole into `path` (adapter_model.safetensors), as `from_pretrained` loads it.

    With sharded FSDP checkpoints Trainer.save_model writes nothing (each process's shard goes into its
    checkpoints instead), so the final save switches to a full state dict first, as PEFT's FSDP guide does.
    """
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(path)


def save_last_good(trainer) -> tuple[Path | None, str]:
    """Checkpoint the state after the last good step, unless one is already on disk.

    Returns (checkpoint, "") or (None, why nothing was saved; "" before the first step). Every rank calls this and
    every decision is agreed across ranks first: a rank that skipped the save while another
    entered its collectives would hang both.
    """
    step = trainer.state.global_step
    path = Path(trainer.args.output_dir) / f"checkpoint-{step}"
    if step == 0:
        return None, ""
    if agree_across_ranks(bool(non_finite(trainer))):
        return None, "the weights are no longer finite, so no checkpoint was saved"
    if not agree_across_ranks(path.exists()):
        trainer._save_checkpoint(trainer.model, trial=None)
        trainer.control = trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)
    return path, ""


def non_finite(trainer) -> list[str]:
    return non_finite_parameters(trainer.model)
