"""A checkpoint written by FSDP2's own save is complete; copies of it cut off mid-save are not.

accelerate runs CPU processes as MULTI_CPU and attaches its FSDP plugin to GPU processes only, so the
Trainer cannot run FSDP here. What can run on CPU is FSDP2 itself: torchrun starts two gloo processes
(this file is their script) that shard the repo's tiny Llama with the LoRA trainkit builds for it, using
accelerate's fsdp2_prepare_model (torch's `fully_shard` per decoder layer, as the Trainer's accelerator does)
with the FSDP plugin made from trainkit's own TrainingArguments for distributed_strategy: fsdp. They take one
AdamW step and save checkpoint-1 the way transformers' Trainer._save_checkpoint does under FSDP with
SHARDED_STATE_DICT: save_model writes nothing; _save_optimizer_and_scheduler calls accelerate's
save_fsdp_model (adapter_only, from get_fsdp_ckpt_kwargs) and save_fsdp_optimizer, then rank 0 writes
scheduler.pt; every rank its rng_state_<rank>.pth; rank 0 trainer_state.json last. The adapter is then
loaded back into a freshly sharded model with accelerate's load_fsdp_model, as a resume does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, base_env
from trainkit.train.checkpoints import Checkpoint, checkpoint_dirs, newest_valid, problems

LAYOUT = [
    "optimizer_0/.metadata", "optimizer_0/__0_0.distcp", "optimizer_0/__1_0.distcp",
    "pytorch_model_fsdp_0/.metadata", "pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp",
    "rng_state_0.pth", "rng_state_1.pth", "scheduler.pt", "trainer_state.json",
]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    # --standalone: a free port, so a torchrun of another test session on this machine cannot collide.
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(Path(__file__)), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=base_env(OMP_NUM_THREADS=1), capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_fsdp2_saves_the_adapter_and_optimizer_as_one_shard_per_rank_in_the_layout_trainkit_checks(fsdp_run):
    checkpoint = fsdp_run / "checkpoint-1"
    found = sorted(str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file())
    assert found == LAYOUT
    # adapter_only: the sharded model folder holds the LoRA weights, not the frozen base.
    modules = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
               "mlp.up_proj", "mlp.down_proj")  # configs/smoke.yaml's lora_target_modules
    assert json.loads((fsdp_run / "rank0.json").read_text())["model_keys"] == sorted(
        f"model.base_model.model.model.layers.{layer}.{module}.lora_{ab}.weight"
        for layer in range(2) for module in modules for ab in "AB")
    assert problems(Checkpoint(checkpoint, 1)) == []
    assert newest_valid(fsdp_run).step == 1


def test_the_sharded_adapter_loads_back_into_a_sharded_model_and_the_guards_read_dtensors(fsdp_run):
    for rank in (0, 1):
        report = json.loads((fsdp_run / f"rank{rank}.json").read_text())
        assert report["fresh_differs"] is True and report["restored"] is True, \
            "each rank gets its own shard of the trained adapter back"
        # GuardedSFTTrainer's checks run on FSDP2's DTensor parameters and gradients.
        assert report["non_finite"] == [] and report["gradient_norm"] > 0


def _cut(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: (p / "pytorch_model_fsdp_0" / ".metadata").unlink(),
         "pytorch_model_fsdp_0/.metadata missing (a rank was cut off while saving its shard)"),
        (lambda p: (p / "optimizer_0" / ".metadata").unlink(),
         "optimizer_0/.metadata missing (a rank was cut off while saving its shard)"),
        (lambda p: _cut(p / "pytorch_model_fsdp_0" / "__1_0.distcp", 0.6),
         "pytorch_model_fsdp_0/__1_0.distcp is truncated"),
        (lambda p: _cut(p / "optimizer_0" / "__0_0.distcp", 0.9), "optimizer_0/__0_0.distcp is truncated"),
        (lambda p: (p / "optimizer_0" / "__1_0.distcp").unlink(),
         "optimizer_0/__1_0.distcp missing (one rank's shard)"),
        (lambda p: shutil.rmtree(p / "optimizer_0"),
         "optimizer_0 missing (a resume would restart the optimizer and LR schedule)"),
        (lambda p: (p / "trainer_state.json").unlink(), "trainer_state.json missing"),
    ],
)
def test_a_copy_cut_off_mid_save_is_incomplete_and_the_resume_takes_the_one_before(fsdp_run, tmp_path, damage,
                                                                                   reason):
    out = tmp_path / "run"
    shutil.copytree(fsdp_run / "checkpoint-1", out / "checkpoint-1")
    damaged = out / "checkpoint-2"
    shutil.copytree(fsdp_run / "checkpoint-1", damaged)
    state = json.loads((damaged / "trainer_state.json").read_text())
    (damaged / "trainer_state.json").write_text(json.dumps({**state, "global_step": 2}))
    damage(damaged)
    assert problems(Checkpoint(damaged, 2)) == [reason]
    skipped = []
    assert newest_valid(out, on_skip=lambda c, reasons: skipped.append((c.step, reasons))).step == 1
    assert skipped == [(2, [reason])]
    assert [c.step for c in checkpoint_dirs(out)] == [2, 1]


# ---------------------------------------------------------------------------------------------------------------
# The two processes (run by torchrun with this file as the script)


def save_like_the_trainer(out: Path) -> None:
    import os
    import random

    import numpy as np
    import torch
    from accelerate import Accelerator
    from accelerate.utils import FullyShardedDataParallelPlugin, load_fsdp_model, save_fsdp_model, save_fsdp_optimizer
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model
    from transformers import AutoModelForCausalLM, TrainerState, get_scheduler
    from transformers.distributed.fsdp import get_fsdp_ckpt_kwargs
    from trl import get_peft_config

    from trainkit.config.settings import parse
    from trainkit.preflight.strategy import FSDP, Strategy, training_arguments
    from trainkit.train.divergence import gradient_norm, non_finite_parameters

    config = parse(["--config", "configs/smoke.yaml", "--output_dir", str(out), "--distributed_strategy", "fsdp"])
    args = training_arguments(config.sft, Strategy(FSDP, int(os.environ["WORLD_SIZE"]), "test"))
    accelerator = Accelerator(cpu=True)  # after TrainingArguments, which resets accelerate's state
    rank = accelerator.process_index
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    # What AcceleratorState does with the plugin on GPU processes, and never on CPU ones.
    accelerator.state.fsdp_plugin = plugin

    def sharded_model():
        from peft import get_peft_model

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(config.model.model_name_or_path, dtype=torch.float32)
        return fsdp2_prepare_model(accelerator, get_peft_model(model, get_peft_config(config.model)))

    model = sharded_model()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=10)
    tokens = torch.randint(3, 2000, (2, 32), generator=torch.Generator().manual_seed(rank))
    model(input_ids=tokens, labels=tokens).loss.backward()
    norm = gradient_norm(model)
    optimizer.step()
    scheduler.step()
    non_finite = non_finite_parameters(model)

    checkpoint = out / "checkpoint-1"
    save_fsdp_model(plugin, accelerator, model, str(checkpoint), **get_fsdp_ckpt_kwargs())
    save_fsdp_optimizer(plugin, accelerator, optimizer, model, str(checkpoint))
    if rank == 0:
        torch.save(scheduler.state_dict(), checkpoint / "scheduler.pt")
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    torch.save(rng, checkpoint / f"rng_state_{rank}.pth")
    accelerator.wait_for_everyone()
    if rank == 0:
        TrainerState(global_step=1, max_steps=10).save_to_json(str(checkpoint / "trainer_state.json"))

    trained = {name: p.to_local().clone() for name, p in model.named_parameters() if p.requires_grad}
    fresh = sharded_model()
    fresh_differs = any(not torch.equal(p.to_local(), trained[name])
                        for name, p in fresh.named_parameters() if p.requires_grad)
    load_fsdp_model(plugin, accelerator, fresh, str(checkpoint), **get_fsdp_ckpt_kwargs())
    restored = all(torch.equal(p.to_local(), trained[name]) for name, p in fresh.named_parameters() if p.requires_grad)
    from torch.distributed.checkpoint import FileSystemReader

    keys = list(FileSystemReader(str(checkpoint / "pytorch_model_fsdp_0")).read_metadata().state_dict_metadata)
    report = {"fresh_differs": fresh_differs, "restored": restored, "non_finite": non_finite, "gradient_norm": norm,
              "model_keys": sorted(keys)}
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    accelerator.end_training()


if __name__ == "__main__":
    save_like_the_trainer(Path(sys.argv[1]))
