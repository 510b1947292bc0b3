"""TRL's SFTTrainer with a divergence guard, built the way TRL's sft.py builds it."""

from __future__ import annotations

import math

import torch
from trl import SFTTrainer, get_peft_config

from trainkit.faults import Faults


class LossNotFinite(Exception):
    def __init__(self, step: int, loss: float):
        super().__init__(f"loss is {loss} at step {step}")
        self.step = step
        self.loss = loss


class GuardedSFTTrainer(SFTTrainer):
    """Stops at the first non-finite micro-batch loss, before the optimizer applies it.

    Trainer's own logging_nan_inf_filter hides a NaN loss from the logs and steps on
    regardless, so the weights turn to NaN while the dashboard looks fine. Raising here
    leaves the model and optimizer exactly as they were after the last good step.
    """

    faults = Faults()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training and self.faults.nan_at_step == self.state.global_step + 1:
            if return_outputs:
                return result[0] * math.nan, result[1]
            return result * math.nan
        return result

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            raise LossNotFinite(self.state.global_step + 1, float(loss))
        return loss


def build_trainer(config, datasets, callbacks, faults: Faults) -> GuardedSFTTrainer:
    trainer = GuardedSFTTrainer(
        model=config.model.model_name_or_path,
        args=config.sft,
        train_dataset=datasets["train"],
        eval_dataset=datasets.get("validation"),
        peft_config=get_peft_config(config.model),
    )
    trainer.faults = faults
    # Our tagged progress lines replace the tqdm bar and the dict printer: log files
    # stay free of carriage returns and agents get one grammar.
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    for callback in callbacks:
        trainer.add_callback(callback)
    return trainer
