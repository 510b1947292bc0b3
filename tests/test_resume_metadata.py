"""resume_metadata.json: counting starts without progress, and the crash-loop verdict."""

from __future__ import annotations

import pytest

from trainkit.core.errors import CrashLoop
from trainkit.train.resume import check_crash_loop, read_metadata, record_clean_exit, record_start


def start(output_dir, step, limit=3):
    metadata = record_start(output_dir, step, output_dir / f"checkpoint-{step}" if step else None)
    check_crash_loop(output_dir, metadata, limit)
    return metadata


def test_the_first_start_counts_zero(tmp_path):
    metadata = start(tmp_path, 0)
    assert metadata["resume_count"] == 0 and metadata["last_step"] == 0 and metadata["last_checkpoint"] is None
    assert read_metadata(tmp_path) == metadata


def test_starts_from_the_same_step_count_up_to_the_crash_loop(tmp_path):
    assert [start(tmp_path, 4)["resume_count"] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(CrashLoop, match="resumed 3 times from step 4 without progress"):
        start(tmp_path, 4)
    assert read_metadata(tmp_path)["resume_count"] == 3
    assert read_metadata(tmp_path)["last_checkpoint"] == str(tmp_path / "checkpoint-4")


def test_progress_resets_the_count(tmp_path):
    start(tmp_path, 4)
    start(tmp_path, 4)
    assert start(tmp_path, 6)["resume_count"] == 0


def test_a_clean_exit_is_not_counted_as_a_crash(tmp_path):
    start(tmp_path, 4)
    start(tmp_path, 4)
    record_clean_exit(tmp_path)
    assert start(tmp_path, 4)["resume_count"] == 0


def test_a_limit_of_one_refuses_the_first_repeat(tmp_path):
    start(tmp_path, 0, limit=1)
    with pytest.raises(CrashLoop, match="from the start"):
        start(tmp_path, 0, limit=1)
