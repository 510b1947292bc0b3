"""A multi-node run's output dir: shared by the nodes or one per node, and the checkpoints that then resume."""

from __future__ import annotations

import pytest

from conftest import on_ranks
from trainkit.core.errors import ConfigError
from trainkit.train import nodes


def sees(dirs):
    return on_ranks(len(dirs), lambda rank, gather: nodes.sees_rank_0s_file(dirs[rank], gather, rank=rank))


def test_ranks_in_one_shared_directory_all_see_rank_0s_file_and_it_is_gone_afterwards(tmp_path):
    shared = tmp_path / "shared"
    answers = sees([shared] * 3)
    assert answers == [[True, True, True]] * 3
    assert not list(shared.glob(f"{nodes.PROBE_PREFIX}*"))


def test_ranks_in_node_local_directories_do_not_see_rank_0s_file(tmp_path):
    answers = sees([tmp_path / "node0", tmp_path / "node0", tmp_path / "node1"])
    assert answers == [[True, True, False]] * 3


def test_a_shared_directory_with_save_on_each_node_is_refused_every_node_would_write_the_same_files():
    with pytest.raises(ConfigError) as refused:
        nodes.check_checkpoint_layout([True, True], save_on_each_node=True)
    assert refused.value.message.startswith("save_on_each_node is on, but every node trains in one shared output dir")
    nodes.check_checkpoint_layout([True, True], save_on_each_node=False)


def test_node_local_directories_without_save_on_each_node_are_refused_only_node_0_would_hold_checkpoints():
    with pytest.raises(ConfigError) as refused:
        nodes.check_checkpoint_layout([True, True, False, False], save_on_each_node=False)
    assert refused.value.message.startswith("the nodes train in output dirs of their own (ranks 2, 3 do not see")
    assert "--save_on_each_node true" in refused.value.hint
    nodes.check_checkpoint_layout([True, True, False, False], save_on_each_node=True)


def test_a_node_that_holds_no_checkpoint_while_another_does_refuses_a_restart_from_step_0(tmp_path):
    with pytest.raises(ConfigError) as refused:
        nodes.check_resume_point([500, 500, -1, -1], None, tmp_path)
    assert refused.value.message.startswith(f"ranks 2, 3 find no complete checkpoint in {tmp_path} while another "
                                            "rank would resume from step 500")
    nodes.check_resume_point([-1, -1], None, tmp_path)  # a fresh run
    nodes.check_resume_point([500, 250], object(), tmp_path)  # an older checkpoint every rank holds


@pytest.mark.parametrize(("world", "local", "several"), [("16", "8", True), ("8", "8", False), ("2", "", False)])
def test_several_nodes_means_more_processes_than_this_machine_runs(monkeypatch, world, local, several):
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    assert nodes.several_nodes() is several
