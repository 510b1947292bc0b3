"""The run's state from status.json and processes, the lock, and the supervisor's decisions (no training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from trainkit.core import lock
from trainkit.supervise import supervision
from trainkit.train.launch import Claim, OutputDirLocked, early_output_dir

REPO = Path(__file__).resolve().parents[1]


def iso(seconds_from_now: float = 0.0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now)).isoformat(timespec="seconds")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_status(out: Path, **fields) -> None:
    status = {"schema_version": 1, "state": "running", "step": 12, "max_steps": 20, "pid": os.getpid(),
              "started_at": iso(-60), "updated_at": iso()}
    status.update(fields)
    out.mkdir(parents=True, exist_ok=True)
    (out / "status.json").write_text(json.dumps(status))


def hold(out: Path, **info) -> subprocess.Popen:
    """A separate process holding out's lock (an flock belongs to its open file, so it must be another one)."""
    out.mkdir(parents=True, exist_ok=True)
    path = lock.lock_path(out)
    path.write_text("".join(f"{k}={v}\n" for k, v in info.items()))
    code = ("import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDONLY)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def holders():
    procs = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def state_of(out: Path) -> supervision.Assessment:
    return supervision.assess(supervision.observe(out))


def test_a_lock_held_by_a_live_process_names_its_owner_and_a_file_alone_does_not(tmp_path, holders):
    assert lock.owner(tmp_path) is None
    lock.lock_path(tmp_path).write_text(f"pid={os.getpid()}\nsession=s\n")
    assert lock.owner(tmp_path) is None  # a left-over file, whatever pid it names
    holders.append(hold(tmp_path, pid=123, session="train", log="/l.log"))
    assert lock.owner(tmp_path) == {"pid": "123", "session": "train", "log": "/l.log"}


def test_a_reused_pid_is_not_the_process_recorded_with_its_start_time():
    me = lock.process_start_time(os.getpid())
    if me is None:
        pytest.skip("no /proc here")
    assert lock.pid_alive(os.getpid(), me)
    assert not lock.pid_alive(os.getpid(), str(int(me) + 1))
    assert not lock.pid_alive(dead_pid())


def test_a_second_claim_on_a_locked_dir_is_refused_naming_the_owner_and_writes_nothing(tmp_path, holders):
    out = tmp_path / "run"
    holders.append(hold(out, pid=4242, session="long", log="/logs/x.log"))
    with pytest.raises(OutputDirLocked) as refused:
        Claim().take(out)
    assert refused.value.message == (f"a trainer is already running on {out} "
                                     "(tmux session long, pid 4242, log /logs/x.log)")
    assert "tmux attach -t long" in refused.value.hint
    assert not (out / "status.json").exists()


def test_an_output_dir_held_from_another_host_is_refused_naming_the_node_rank_that_shares_it(tmp_path, holders):
    out = tmp_path / "shared"
    holders.append(hold(out, pid=4242, session="train", host="node-0.cluster.internal"))
    with pytest.raises(OutputDirLocked) as refused:
        Claim().take(out)
    assert refused.value.message == f"a trainer on host node-0.cluster.internal is already running on {out} (pid 4242)"
    assert "each has its own --node-rank" in refused.value.hint
    assert "tmux attach" not in refused.value.hint, "that session is on another machine"


def test_a_claim_takes_the_lock_and_marks_the_start_in_status_json(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINKIT_LAUNCH_ID", "launch-1")
    monkeypatch.setenv("TRAINKIT_ATTEMPT", "2")
    claim = Claim()
    status = claim.take(tmp_path)
    try:
        on_disk = json.loads((tmp_path / "status.json").read_text())
        assert on_disk["state"] == "starting" and on_disk["pid"] == os.getpid()
        assert on_disk["launch_id"] == "launch-1" and on_disk["attempt"] == 2
        assert status.data["last_progress_at"] is None
        assert lock.owner(tmp_path)["role"] == "trainer"
    finally:
        claim.release()
    assert lock.owner(tmp_path) is None


def test_the_output_dir_is_read_from_the_command_line_before_the_yaml(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("output_dir: from/yaml\n")
    assert early_output_dir(["--config", str(config)]) == Path("from/yaml")
    assert early_output_dir(["--config", str(config), "--output_dir", "a", "--output_dir=b"]) == Path("b")
    assert early_output_dir(["--config", str(tmp_path)]) is None


def test_a_running_state_with_no_live_trainer_and_no_supervisor_is_dead_at_once(tmp_path):
    write_status(tmp_path, pid=dead_pid(), updated_at=iso())
    verdict = state_of(tmp_path)
    assert (verdict.state, verdict.exit_code, verdict.recorded_state) == ("dead", 75, "running")


def test_a_dead_trainer_under_a_live_supervisor_is_restarting(tmp_path, holders):
    write_status(tmp_path, pid=dead_pid())
    holders.append(hold(tmp_path, pid=os.getpid(), session="s"))
    assert (state_of(tmp_path).state, state_of(tmp_path).exit_code) == ("restarting", 0)


def test_the_supervisors_backoff_reports_the_seconds_left_and_is_dead_without_it(tmp_path, holders):
    write_status(tmp_path, state="restarting", attempt=3, restart_at=iso(30), pid=dead_pid())
    holders.append(hold(tmp_path, pid=os.getpid(), session="s"))
    verdict = state_of(tmp_path)
    assert verdict.state == "restarting" and 25 <= verdict.restart_in <= 30
    holders.pop().kill()
    time.sleep(0.2)
    assert state_of(tmp_path).state == "dead"


def test_a_live_trainer_without_a_step_past_its_allowance_is_stalled_with_exit_4(tmp_path):
    write_status(tmp_path, last_progress_at=iso(-100), stall_timeout_seconds=60)
    verdict = state_of(tmp_path)
    assert (verdict.state, verdict.exit_code) == ("stalled", 4) and verdict.stalled_for >= 100
    write_status(tmp_path, last_progress_at=iso(-10), stall_timeout_seconds=60)
    assert state_of(tmp_path).state == "running"
    # Before the first step the allowance for loading applies.
    write_status(tmp_path, state="starting", started_at=iso(-100), last_progress_at=None,
                 stall_timeout_seconds=60, first_step_timeout_seconds=600)
    assert state_of(tmp_path).state == "starting"
    write_status(tmp_path, state="starting", started_at=iso(-700), last_progress_at=None,
                 stall_timeout_seconds=60, first_step_timeout_seconds=600)
    assert state_of(tmp_path).state == "stalled"


@pytest.mark.parametrize(("state", "exit_code", "expected"), [
    ("completed", 0, 0), ("interrupted", 75, 75), ("crash_loop", 2, 2), ("diverged", 3, 3),
    ("failed", 70, 70), ("failed", 1, 1),
])
def test_each_final_state_has_its_exit_code(tmp_path, state, exit_code, expected):
    write_status(tmp_path, state=state, exit_code=exit_code, pid=dead_pid())
    assert state_of(tmp_path).exit_code == expected


def test_the_restart_budget_counts_failures_in_a_row_without_progress():
    assert supervision.supervisor_next(70, failures=0, max_restarts=2, progressed=False) == ("relaunch", 1)
    assert supervision.supervisor_next(70, failures=2, max_restarts=2, progressed=False) == ("give_up", 70)
    assert supervision.supervisor_next(70, failures=2, max_restarts=2, progressed=True) == ("relaunch", 1)
    assert supervision.supervisor_next(137, failures=0, max_restarts=2, progressed=False) == ("relaunch", 1)
    for final in (0, 1, 2, 3, 75):
        assert supervision.supervisor_next(final, failures=5, max_restarts=2, progressed=False) == ("stop", final)


def test_the_watch_ignores_a_status_json_from_another_launch(tmp_path):
    write_status(tmp_path, step=500, max_steps=1000, pid=dead_pid())
    assert not supervision.watch(tmp_path, "mine", watch_steps=5, session_alive=True).done
    write_status(tmp_path, step=53, start_step=47, launch_id="mine")
    assert supervision.watch(tmp_path, "mine", watch_steps=5, session_alive=True).kind == "running"
    write_status(tmp_path, step=50, start_step=47, launch_id="mine")
    assert not supervision.watch(tmp_path, "mine", watch_steps=5, session_alive=True).done
    supervision.write_exit_record(tmp_path, 0, "older")
    assert not supervision.watch(tmp_path, "mine", watch_steps=5, session_alive=True).done
    write_status(tmp_path, state="completed", step=60, launch_id="mine", already_complete=True,
                 message="training already complete: step 60, adapter in x")
    supervision.write_exit_record(tmp_path, 0, "mine")
    assert supervision.watch(tmp_path, "mine", watch_steps=5, session_alive=False).kind == "already_complete"


def test_a_stop_during_the_backoff_turns_restarting_into_interrupted(tmp_path):
    write_status(tmp_path, state="restarting", pid=dead_pid())
    supervision.write_exit_record(tmp_path, 75, "l", stopped_by="TERM")
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["state"], status["exit_code"]) == ("interrupted", 75)
    assert status["message"] == "interrupted by SIGTERM while waiting to relaunch train.py"


def runctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainkit.supervise.runctl", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_runctl_reads_yaml_values_and_lock_takes_refuse_a_second_owner(tmp_path, holders):
    config = tmp_path / "c.yaml"
    config.write_text("output_dir: 'outputs/x'  # where\nreport_to: [wandb, tensorboard]\n")
    assert runctl("config-value", str(config), "output_dir").stdout == "outputs/x\n"
    assert runctl("config-value", str(config), "report_to").stdout == "wandb,tensorboard\n"
    assert runctl("config-value", str(config), "missing", "dflt").stdout == "dflt\n"
    assert runctl("output-dir", "--config", str(config), "--", "--output_dir", "y").stdout == "y\n"
    holders.append(hold(tmp_path, pid=99, session="other", log="l"))
    with open(lock.lock_path(tmp_path), "a") as fh:
        proc = subprocess.run([sys.executable, "-m", "trainkit.supervise.runctl", "lock-take", "--fd", str(fh.fileno()),
                               "--output-dir", str(tmp_path), "--pid", "1"], cwd=REPO, capture_output=True,
                              text=True, pass_fds=(fh.fileno(),), env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"❌ ERROR: a trainer is already running on {tmp_path} (tmux session other, pid 99")


def test_the_h100_threshold_is_one_rule_for_bash_and_python():
    assert runctl("is-h100-80gb", "NVIDIA H100 80GB HBM3", "81559").returncode == 0
    assert runctl("is-h100-80gb", "NVIDIA H100 PCIe", "40960").returncode == 1
    assert runctl("is-h100-80gb", "NVIDIA A100-SXM4-80GB", "81920").returncode == 1


def test_an_input_error_leaves_a_fresh_dir_alone_and_an_existing_runs_status_as_it_was(tmp_path):
    fresh = tmp_path / "fresh"
    claim = Claim()
    claim.take(fresh)
    assert claim.undo_if_fresh(1) and not fresh.exists()
    existing = tmp_path / "existing"
    write_status(existing, state="interrupted", exit_code=75, pid=dead_pid())
    proc = subprocess.run([sys.executable, "train.py", "--config", "configs/smoke.yaml", "--output_dir", str(existing),
                           "--lora_alpah", "16"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"})
    assert proc.returncode == 1
    status = json.loads((existing / "status.json").read_text())
    assert (status["state"], status["exit_code"]) == ("interrupted", 75)
    [refused] = [json.loads(line) for line in (existing / "events.jsonl").read_text().splitlines()]
    assert refused["event"] == "refused"
    assert refused["message"].startswith("unknown config key(s) in the command line: lora_alpah")
    assert lock.owner(existing) is None


def test_a_killed_process_not_yet_reaped_is_not_alive():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert lock.pid_alive(proc.pid)
        proc.kill()
        time.sleep(0.3)  # a zombie until wait()
        if lock.process_start_time(proc.pid) is None:
            pytest.skip("no /proc here")
        assert not lock.pid_alive(proc.pid)
    finally:
        proc.wait()


@pytest.mark.parametrize(
    ("rank_codes", "nproc", "verdict"),
    [
        ({0: 0, 1: 0}, 2, 0),
        ({0: 75, 1: 75}, 2, 75),  # a stop on every rank
        ({0: 1, 1: 1}, 2, 1),  # an input error: no relaunch
        ({0: 75, 1: 3}, 2, 3),  # rank 1 diverged; torchrun stopped rank 0
        ({0: 2, 1: 75}, 2, 2),
        ({0: 75}, 2, 70),  # rank 1 recorded nothing: it was killed
        ({0: 75, 1: 70}, 2, 70),  # rank 1 crashed; rank 0 was stopped by torchrun
        ({0: 0, 1: 0, 2: 0, 3: 137}, 4, 70),
        ({0: 2, 1: 70}, 2, 2),  # rank 0 calls the crash loop on a start in which rank 1 crashes again
        ({0: 1}, 2, 1),  # an input error on rank 0; rank 1 was killed before it could record
        ({0: 137, 1: 3}, 2, 3),
        ({}, 8, 70),
    ],
)
def test_a_torchrun_group_is_judged_by_what_its_ranks_recorded_not_by_torchruns_exit_status(rank_codes, nproc, verdict):
    assert supervision.group_verdict(rank_codes, nproc) == verdict
    assert supervision.supervisor_next(verdict, 0, 3, False)[0] == ("relaunch" if verdict == 70 else "stop")


def test_each_rank_records_its_exit_code_for_the_supervisor(tmp_path, monkeypatch):
    from trainkit.train.run import record_rank_exit

    monkeypatch.setenv("TRAINKIT_RANK_EXIT_DIR", str(tmp_path))
    for rank, code in ((0, 75), (1, 3)):
        monkeypatch.setenv("RANK", str(rank))
        record_rank_exit(code)
    assert supervision.read_rank_exits(tmp_path) == {0: 75, 1: 3}
    out = subprocess.run([sys.executable, "-m", "trainkit.supervise.runctl", "group-verdict", "--folder", str(tmp_path),
                          "--nproc", "2", "--output-dir", str(tmp_path / "run")],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "3"


def test_a_group_crash_counts_toward_the_crash_loop_though_rank_0_exited_as_if_stopped(tmp_path):
    from trainkit.core.errors import CrashLoop
    from trainkit.train import resume

    out, ranks = tmp_path / "run", tmp_path / "ranks"
    ranks.mkdir()
    resume.record_start(out, 0, None)
    for attempt in range(2):
        # Rank 1 crashes before its first step; torchrun's SIGTERM makes rank 0 exit 75, a clean exit of its own.
        resume.record_clean_exit(out)
        (ranks / "rank-0").write_text("75")
        (ranks / "rank-1").write_text("70")
        verdict = subprocess.run([sys.executable, "-m", "trainkit.supervise.runctl", "group-verdict",
                                  "--folder", str(ranks), "--nproc", "2", "--output-dir", str(out)],
                                 cwd=REPO, capture_output=True, text=True, check=True).stdout
        assert verdict.strip() == "70"
        metadata = resume.record_start(out, 0, None)
        assert metadata["resume_count"] == attempt + 1
    with pytest.raises(CrashLoop):
        resume.check_crash_loop(out, metadata, limit=2)


def test_a_rank_under_torchrun_accepts_the_lock_its_own_launch_holds_and_no_other(tmp_path, holders, monkeypatch):
    out = tmp_path / "run"
    holders.append(hold(out, pid=4242, session="s", launch_id="launch-ours"))
    monkeypatch.setenv("TRAINKIT_LOCK_FD", "9")  # the supervisor's descriptor, which torchrun does not pass on
    monkeypatch.setenv("TRAINKIT_LAUNCH_ID", "launch-ours")
    claim = Claim()
    try:
        assert claim.take(out).data["launch_id"] == "launch-ours"
    finally:
        claim.release()
    assert lock.owner(out)["pid"] == "4242", "the supervisor still holds it"
    monkeypatch.setenv("TRAINKIT_LAUNCH_ID", "launch-other")
    with pytest.raises(OutputDirLocked):
        Claim().take(out)


@pytest.mark.parametrize(("listed", "visible", "expected"),
                         [(8, None, 8), (8, "0,1,2,3", 4), (2, "", 0), (4, "1,-1,2", 1)])
def test_the_default_process_count_is_the_gpus_nvidia_smi_lists_that_cuda_may_use(tmp_path, monkeypatch,
                                                                                 listed, visible, expected):
    from trainkit.preflight.gpu_models import visible_gpu_count

    stub = tmp_path / "nvidia-smi"
    lines = "".join(f"echo 'GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})'\n" for i in range(listed))
    stub.write_text(f"#!/bin/sh\n{lines}")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpu_count() == expected
    got = subprocess.run([sys.executable, "-m", "trainkit.supervise.runctl", "gpu-count", "--platform", "h100"],
                         cwd=REPO, capture_output=True, text=True, check=True, env=os.environ).stdout
    assert int(got) == max(1, expected)
    assert subprocess.run([sys.executable, "-m", "trainkit.supervise.runctl", "gpu-count", "--platform", "cpu"],
                          cwd=REPO, capture_output=True, text=True, check=True).stdout.strip() == "1"


def test_a_node_without_rank_0_ends_completed_not_failed_when_its_processes_completed(tmp_path):
    supervision.mark_restarting(tmp_path, attempt=2, delay=0, code=70, launch_id="l")
    supervision.write_exit_record(tmp_path, 0, "l")
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["state"], status["exit_code"]) == ("completed", 0)


def handover(out: Path, launch_id: str, timeout: float = 5.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainkit.supervise.runctl", "lock-handover", "--output-dir", str(out),
                           "--launch-id", launch_id, "--timeout", str(timeout)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_a_launch_says_launched_only_once_its_own_supervisor_holds_the_lock(tmp_path, holders):
    out = tmp_path / "run"
    holders.append(hold(out, pid=os.getpid(), role="supervisor", session="a", launch_id="launch-a"))
    assert handover(out, "launch-a").returncode == 0


def test_a_launch_whose_lock_another_launch_took_in_the_handover_is_refused_naming_it(tmp_path, holders):
    out = tmp_path / "run"
    holders.append(hold(out, pid=os.getpid(), role="supervisor", session="winner", launch_id="launch-b"))
    result = handover(out, "launch-a")
    assert result.returncode == 1
    assert f"❌ ERROR: a trainer is already running on {out} (tmux session winner" in result.stdout


def test_a_supervisor_that_already_reached_its_verdict_counts_as_having_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / lock.EXIT_FILE).write_text("0\nlaunch_id=launch-a\n")
    assert handover(out, "launch-a").returncode == 0


def test_a_supervisor_that_never_takes_the_lock_is_an_error_after_the_timeout(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    result = handover(out, "launch-a", timeout=0.3)
    assert result.returncode == 1
    assert "❌ ERROR: the supervisor did not take over the lock" in result.stdout


def test_a_lock_free_only_while_another_launch_hands_it_to_its_supervisor_is_still_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # Another launch's train.sh (alive: this very process) let go to hand the lock to its supervisor.
    lock.lock_path(out).write_text("".join(f"{k}={v}\n" for k, v in lock.describe(
        role="launcher", session="winner", launch_id="launch-a").items()))
    with pytest.raises(lock.LockHeld) as held:
        lock.RunLock.acquire(out, role="launcher", session="loser", launch_id="launch-b")
    assert held.value.info["session"] == "winner"
    # Its own supervisor takes it over; a dead launcher hands nothing to anyone.
    lock.RunLock.acquire(out, role="supervisor", session="winner", launch_id="launch-a").release()
    lock.lock_path(out).write_text(f"pid={dead_pid()}\nrole=launcher\nlaunch_id=launch-a\n")
    lock.RunLock.acquire(out, role="launcher", session="next", launch_id="launch-c").release()


def test_the_watch_names_the_runs_own_error_though_torchruns_report_fills_the_log_tail(tmp_path):
    from trainkit.supervise.runctl import last_error

    log = tmp_path / "run.log"
    report = [f"    torchrun report line {i}" for i in range(30)]
    log.write_text("\n".join(["[PREFLIGHT] ok", "❌ ERROR: the data is bad", "  ↳ fix line 3", *report,
                              "[TRAINING-CPU] supervisor exited 1"]) + "\n")
    assert last_error(str(log)) == ("the data is bad", "fix line 3")
    log.write_text("no error here\n")
    assert last_error(str(log)) is None


def test_node_1_of_a_shared_output_dir_keeps_its_own_lock_and_verdict_and_leaves_status_json_to_node_0(
        tmp_path, holders):
    out = tmp_path / "shared"
    holders.append(hold(out, pid=4242, session="node0", launch_id="launch-node0"))
    (out / "status.json").write_text(json.dumps({"state": "running", "step": 7}))
    runctl = [sys.executable, "-m", "trainkit.supervise.runctl"]
    free = [*runctl, "lock-free", "--output-dir", str(out)]
    assert subprocess.run(free, cwd=REPO, capture_output=True).returncode == 1
    assert subprocess.run([*free, "--node-rank", "1"], cwd=REPO).returncode == 0
    path = subprocess.run([*runctl, "lock-path", "--output-dir", str(out), "--node-rank", "1"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert path == str(out / ".trainkit.node1.lock")
    for command in (["mark-restarting", "--attempt", "2", "--delay", "0", "--code", "70"],
                    ["exit-record", "--code", "0"]):
        subprocess.run([*runctl, *command, "--output-dir", str(out), "--node-rank", "1", "--launch-id", "launch-node1"],
                       cwd=REPO, check=True)
    assert json.loads((out / "status.json").read_text()) == {"state": "running", "step": 7}
    assert supervision.read_exit_record(out, node=1)["code"] == 0
    assert supervision.read_exit_record(out) is None
