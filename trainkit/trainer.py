"""TRL's SFTTrainer with a divergence guard, built the way TRL's sft.py builds it."""

from __future__ import annotations

import math

from trl import SFTTrainer, get_peft_config

from trainkit.divergence import DivergenceGuard
from trainkit.faults import Faults


class GuardedSFTTrainer(SFTTrainer):
    """Stops at the first diverged micro-batch loss, before the optimizer applies it.

    Trainer's own logging_nan_inf_filter hides a NaN loss from the logs and steps on
    regardless, so the weights turn to NaN while the dashboard looks fine. Raising here
    leaves the model and optimizer exactly as they were after the last good step.
    """

    faults = Faults()
    guard = DivergenceGuard()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training and self.faults.nan_at_step == self.state.global_step + 1:
            if return_outputs:
                return result[0] * math.nan, result[1]
            return result * math.nan
        return result

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # .item() syncs the device, as Trainer's own NaN filter already does every step.
        self.guard.observe(self.state.global_step + 1, loss.item())
        return loss


def build_trainer(config, datasets, callbacks, faults: Faults, model=None, processing_class=None) -> GuardedSFTTrainer:
    """`model` (an instantiated model) and `processing_class` replace loading them by name (the benchmark's)."""
    trainer = GuardedSFTTrainer(
        model=model if model is not None else config.model.model_name_or_path,
        args=config.sft,
        train_dataset=datasets["train"],
        eval_dataset=datasets.get("validation"),
        peft_config=get_peft_config(config.model),
        processing_class=processing_class,
    )
    trainer.faults = faults
    trainer.guard = DivergenceGuard(config.trainkit.loss_spike_factor)
    # Our tagged progress lines replace the tqdm bar and the dict printer: log files
    # stay free of carriage returns and agents get one grammar.
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    for callback in callbacks:
        trainer.add_callback(callback)
    return trainer
