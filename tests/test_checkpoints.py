"""Which checkpoints count as complete: the damage a kill mid-save leaves, one file at a time."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from safetensors.torch import save_file

from trainkit.train.checkpoints import INCOMPLETE_MARKER, Checkpoint, checkpoint_dirs, newest_valid, problems


def make_checkpoint(root, step):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"lora_A": torch.ones(4, 8), "lora_B": torch.zeros(8, 4)}, path / "adapter_model.safetensors")
    torch.save({"state": {0: torch.ones(3)}}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return Checkpoint(path, step)


def test_a_checkpoint_with_every_file_intact_is_complete(tmp_path):
    assert problems(make_checkpoint(tmp_path, 10)) == []


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: (p / "trainer_state.json").unlink(), "trainer_state.json missing"),
        (lambda p: (p / "trainer_state.json").write_text('{"global_st'), "trainer_state.json unreadable"),
        (lambda p: (p / "trainer_state.json").write_text('{"global_step": 9}'), "trainer_state.json says step 9"),
        (lambda p: (p / "adapter_model.safetensors").unlink(), "no adapter_model.safetensors"),
        (lambda p: _cut(p / "adapter_model.safetensors", 0.9), "adapter_model.safetensors is truncated"),
        (lambda p: _cut(p / "adapter_model.safetensors", 0.01), "adapter_model.safetensors"),
        (lambda p: (p / "optimizer.pt").unlink(), "optimizer.pt missing"),
        (lambda p: _cut(p / "optimizer.pt", 0.5), "optimizer.pt is unreadable"),
        (lambda p: (p / "scheduler.pt").unlink(), "scheduler.pt missing"),
        (lambda p: (p / INCOMPLETE_MARKER).write_text(""), INCOMPLETE_MARKER),
    ],
)
def test_a_checkpoint_cut_off_mid_save_is_incomplete(tmp_path, damage, reason):
    checkpoint = make_checkpoint(tmp_path, 10)
    damage(checkpoint.path)
    found = problems(checkpoint)
    assert any(reason in p for p in found), found


def _cut(path, fraction):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_newest_valid_skips_damaged_checkpoints_newest_first(tmp_path):
    for step in (5, 10, 15):
        make_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-15" / "optimizer.pt").unlink()
    (tmp_path / "checkpoint-10" / "trainer_state.json").unlink()
    (tmp_path / "checkpoint-x").mkdir()
    (tmp_path / "checkpoint-20").write_text("not a directory")
    skipped = []
    chosen = newest_valid(tmp_path, on_skip=lambda c, reasons: skipped.append(c.step))
    assert chosen.step == 5
    assert skipped == [15, 10]
    assert [c.step for c in checkpoint_dirs(tmp_path)] == [15, 10, 5]


def test_no_checkpoint_at_all_means_a_fresh_start(tmp_path):
    assert newest_valid(tmp_path / "missing") is None
    assert newest_valid(tmp_path) is None


def make_fsdp_checkpoint(root, step):
    """The layout the Trainer writes under FSDP with SHARDED_STATE_DICT, from one process: two
    torch.distributed.checkpoint folders. tests/test_fsdp_checkpoint.py has the real two-process save."""
    import torch.distributed.checkpoint as dcp

    path = root / f"checkpoint-{step}"
    for folder, state in (("pytorch_model_fsdp_0", {"model": {"lora_A": torch.ones(4, 8)}}),
                          ("optimizer_0", {"optimizer": {"state": {"lora_A": {"exp_avg": torch.ones(4, 8)}}}})):
        (path / folder).mkdir(parents=True)
        with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.save(state, storage_writer=dcp.FileSystemWriter(path / folder), no_dist=True)
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return Checkpoint(path, step)


def test_a_sharded_fsdp_checkpoint_is_complete_and_a_shard_cut_off_before_its_metadata_is_not(tmp_path):
    checkpoint = make_fsdp_checkpoint(tmp_path, 10)
    assert problems(checkpoint) == []
    (checkpoint.path / "optimizer_0" / ".metadata").unlink()
    assert problems(checkpoint) == ["optimizer_0/.metadata missing (a rank was cut off while saving its shard)"]
    shutil.rmtree(checkpoint.path / "optimizer_0")
    assert problems(checkpoint) == ["optimizer_0 missing (a resume would restart the optimizer and LR schedule)"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: _cut(p / "__0_0.distcp", 0.5), "pytorch_model_fsdp_0/__0_0.distcp is truncated"),
        (lambda p: (p / "__0_0.distcp").unlink(), "pytorch_model_fsdp_0/__0_0.distcp missing (one rank's shard)"),
        (lambda p: _cut(p / ".metadata", 0.5), "pytorch_model_fsdp_0/.metadata unreadable"),
    ],
)
def test_a_sharded_folder_whose_metadata_names_bytes_that_are_not_on_disk_is_incomplete(tmp_path, damage, reason):
    checkpoint = make_fsdp_checkpoint(tmp_path, 10)
    damage(checkpoint.path / "pytorch_model_fsdp_0")
    [found] = problems(checkpoint)
    assert found.startswith(reason), found


def test_save_only_model_checkpoints_are_complete_without_optimizer_or_scheduler(tmp_path):
    checkpoint = make_checkpoint(tmp_path, 10)
    for name in ("optimizer.pt", "scheduler.pt"):
        (checkpoint.path / name).unlink()
    assert problems(checkpoint, save_only_model=True) == []
    assert newest_valid(tmp_path, save_only_model=True).step == 10
    assert newest_valid(tmp_path) is None, "without save_only_model the optimizer is required"
    (checkpoint.path / "trainer_state.json").unlink()
    assert problems(checkpoint, save_only_model=True) == ["trainer_state.json missing"]


def ranks_agree(dirs):
    """What newest_valid_on_every_rank returns on each of len(dirs) ranks, run side by side."""
    from conftest import on_ranks
    from trainkit.train.checkpoints import newest_valid_on_every_rank

    return on_ranks(len(dirs), lambda rank, gather: newest_valid_on_every_rank(dirs[rank], gather))


def test_ranks_whose_node_local_copies_differ_resume_from_the_newest_checkpoint_complete_on_all(tmp_path):
    node0, node1, node2 = tmp_path / "node0", tmp_path / "node1", tmp_path / "node2"
    for step in (2, 4, 6):
        make_checkpoint(node0, step)
    for step in (2, 4):
        make_checkpoint(node1, step)
    make_checkpoint(node1, 6)
    _cut(node1 / "checkpoint-6" / "optimizer.pt", 0.5)  # preempted mid-save
    for step in (2, 6):
        make_checkpoint(node2, step)  # checkpoint-4 rotated away or never synced
    results = ranks_agree([node0, node1, node2])
    assert [newest.step for newest, _ in results] == [2, 2, 2]
    assert results[0][1] == [6, 4, 6], "each rank's own newest, for the warning"


def test_ranks_that_all_hold_the_same_checkpoints_agree_at_once_and_a_rank_with_none_means_a_fresh_start(tmp_path):
    shared = tmp_path / "shared"
    make_checkpoint(shared, 3)
    assert [(newest.step, found) for newest, found in ranks_agree([shared, shared])] == [(3, [3, 3])] * 2
    assert [newest for newest, _ in ranks_agree([shared, tmp_path / "empty"])] == [None, None]
