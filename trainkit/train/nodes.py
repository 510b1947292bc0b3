"""The output dir across the nodes of a multi-node run: one shared directory, or a copy on each node.

    shared = sees_rank_0s_file(output_dir, gather)      # every rank's answer, in rank order
    check_checkpoint_layout(shared, save_on_each_node)  # ConfigError when the checkpoints would not resume
    check_resume_point(found, agreed, output_dir)       # ConfigError when a node would restart from nothing

With one directory on a file system every node mounts, only the first process writes checkpoints;
with node-local directories each node's first process must write its own copy
(`save_on_each_node`), or the other nodes find nothing to resume from and the run starts again from
step 0 at its next relaunch. Neither mistake shows until a crash, hours in: so it is checked at the
start, by asking every rank whether it sees a file rank 0 just wrote.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from trainkit.core.errors import ConfigError

PROBE_PREFIX = ".trainkit.nodes-"


def several_nodes() -> bool:
    """Under torchrun, whether the processes span more than one machine."""
    world, local = os.environ.get("WORLD_SIZE", "1"), os.environ.get("LOCAL_WORLD_SIZE", "")
    return world.isdigit() and local.isdigit() and int(world) > int(local)


def sees_rank_0s_file(output_dir: Path, gather, rank: int | None = None) -> list[bool]:
    """Whether each rank sees the file rank 0 writes into its output_dir (True for every rank: one shared dir)."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    probe = None
    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f"{PROBE_PREFIX}{secrets.token_hex(8)}"
        probe.write_text("written by rank 0 to find out which nodes share this directory\n", encoding="utf-8")
    name = [n for n in gather(probe.name if probe else None) if n][0]  # after rank 0 wrote it
    try:
        return gather((output_dir / name).is_file())
    finally:
        if probe:
            probe.unlink(missing_ok=True)


def check_checkpoint_layout(shared: list[bool], save_on_each_node: bool) -> None:
    """Refuse the two ways the nodes' checkpoints would not resume the run."""
    if all(shared) and save_on_each_node:
        raise ConfigError(
            "save_on_each_node is on, but every node trains in one shared output dir: each node's first "
            "process would write the same checkpoint files at once",
            "remove save_on_each_node (on a shared file system the first process saves for all)")
    if not all(shared) and not save_on_each_node:
        apart = [rank for rank, sees in enumerate(shared) if not sees]
        raise ConfigError(
            f"the nodes train in output dirs of their own (ranks {', '.join(map(str, apart))} do not see rank 0's), "
            "but save_on_each_node is off: only node 0 would hold checkpoints, and after a crash the others "
            "could not resume",
            "add -- --save_on_each_node true (docs/MULTI_NODE.md), or put output_dir on a file system every "
            "node mounts")


def check_resume_point(found: list[int], agreed, output_dir: Path) -> None:
    """Refuse a group restart from step 0 when some rank holds a complete checkpoint (`found`: each rank's
    newest step, -1 for none; `agreed`: the checkpoint complete on every rank, or None)."""
    if agreed is not None or max(found) < 0:
        return
    empty = [rank for rank, step in enumerate(found) if step < 0]
    raise ConfigError(
        f"ranks {', '.join(map(str, empty))} find no complete checkpoint in {output_dir} while another rank "
        f"would resume from step {max(found)}: training all of them from step 0 would throw that progress away",
        "copy the newest complete checkpoint into that node's output dir (a replaced node starts empty), "
        "or start afresh on purpose with another --output_dir")
