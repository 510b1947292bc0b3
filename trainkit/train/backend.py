"""The seam between trainkit's run and the library that trains: one small interface, TRL its first implementation.

    backend = backend_for(config)
    data = backend.load_data(config)                         # train (and validation) examples
    session = backend.build(config, data, callbacks, faults)  # the model, LoRA, optimizer, trainkit's callbacks
    session.train(resume_from)                               # checkpoint-N/ or None; raises LossDiverged
    session.state.global_step, session.state.max_steps
    session.check_weights()                                  # WeightsNotFinite for a NaN/inf parameter
    session.save_last_good()                                 # after LossDiverged: (checkpoint, why not)
    session.save_final(path)                                 # final/: a PEFT adapter + trainer_state.json

run.py decides everything around it (resume point, crash loop, fingerprint, status, verdicts, exit
codes); a backend only trains. What every backend keeps, so the rest of trainkit cannot tell them apart:
- `checkpoint-N/` holds `trainer_state.json` with `global_step`, and carries the incomplete marker
  (trainkit.train.checkpoints) until the save is whole; resuming from one restores the exact state;
- the callbacks (trainkit.train.callbacks and friends, transformers.TrainerCallback) hear every step,
  log, save and evaluation, and their `should_training_stop` ends training at a step boundary;
- a non-finite loss or gradient raises trainkit.train.divergence.LossDiverged before the step is applied;
- `final/` is a PEFT adapter (adapter_config.json, adapter_model.safetensors with lora_A/lora_B keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class TrainingSession(Protocol):
    state: object  # global_step, max_steps, log_history, save_to_json(path)
    continuation: object  # trainkit.train.continuation.Continuation for --more_steps, or None
    batch_shape: tuple | None  # the micro-batch being trained (rows, tokens): an out-of-memory error names it
    stop_requested: object  # () -> bool: an evaluation in progress is abandoned when it says so

    def train(self, resume_from: Path | None) -> None: ...

    def check_weights(self) -> None: ...

    def save_last_good(self) -> tuple[Path | None, str]: ...

    def save_final(self, path: Path, write_state: bool) -> None: ...


class Backend(Protocol):
    name: str

    def load_data(self, config) -> dict: ...

    def build(self, config, data: dict, callbacks: list, faults) -> TrainingSession: ...


class TorchBackend:
    """TRL's SFTTrainer with PEFT LoRA (trainkit.train.trainer), on CUDA, MPS or CPU."""

    name = "torch"

    def load_data(self, config) -> dict:
        from trainkit.data.loading import eval_subset, load_chat_data

        data = load_chat_data(config.trainkit.train_file, config.trainkit.validation_file)
        if "validation" in data:
            rows = eval_subset(len(data["validation"]), config.trainkit.eval_max_examples)
            if rows is not None:
                data["validation"] = data["validation"].select(rows)
        return data

    def build(self, config, data: dict, callbacks: list, faults) -> TrlSession:
        from trainkit.train.trainer import build_trainer

        return TrlSession(build_trainer(config, data, callbacks, faults))


class TrlSession:
    def __init__(self, trainer):
        self.trainer = trainer

    @property
    def state(self):
        return self.trainer.state

    @property
    def continuation(self):
        return self.trainer.continuation

    @property
    def batch_shape(self):
        return self.trainer.batch_shape

    @property
    def stop_requested(self):
        return self.trainer.stop_requested

    @stop_requested.setter
    def stop_requested(self, check) -> None:
        self.trainer.stop_requested = check

    @continuation.setter
    def continuation(self, value) -> None:
        self.trainer.continuation = value

    def train(self, resume_from: Path | None) -> None:
        self.trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    def check_weights(self) -> None:
        self.trainer.check_weights()

    def save_last_good(self) -> tuple[Path | None, str]:
        from trainkit.train.trainer import save_last_good

        return save_last_good(self.trainer)

    def save_final(self, path: Path, write_state: bool) -> None:
        from trainkit.train.trainer import save_adapter

        save_adapter(self.trainer, str(path))
        if write_state:
            self.trainer.state.save_to_json(str(path / "trainer_state.json"))


def backend_for(config) -> Backend:
    """The backend the config names (`backend: torch | mlx`)."""
    if getattr(config.trainkit, "backend", "torch") == "mlx":
        from trainkit.train.mlx_backend import MlxBackend

        return MlxBackend()
    return TorchBackend()
