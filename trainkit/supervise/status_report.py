"""The status command's report: [STATUS] lines and a verdict (or one JSON object), and its exit code.

scripts/check_training_status.sh gathers what only the shell can see (tmux, nvidia-smi, the
W&B API) and calls `trainkit.supervise.runctl status`, which prints this report. What state a run is
in comes from trainkit.supervise.supervision.assess; which checkpoint is sound from trainkit.train.checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trainkit.core import protocol
from trainkit.core.protocol import ExitCode
from trainkit.core.status import last_event
from trainkit.supervise.supervision import Assessment, Observation, assess, observe, trained_steps
from trainkit.train import checkpoints, snapshot


@dataclass
class Facts:
    """What the shell found out."""

    session: str
    tmux_installed: bool = True
    tmux_alive: bool = False
    gpu_csv: str = ""
    gpu_note: str = ""
    log: str | None = None
    lines: int = 10
    wandb: dict | None = None


def duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def gpu_devices(csv: str) -> list[dict]:
    devices = []
    for line in (line for line in csv.splitlines() if line.strip()):
        fields = [f.strip() for f in line.split(",")]
        try:
            util, used, total = (int(float(f)) for f in fields[:3])
        except ValueError:
            continue
        devices.append({"index": len(devices), "utilization_percent": util, "memory_used_mib": used,
                        "memory_total_mib": total})
    return devices


def newest_checkpoint(output_dir: Path) -> tuple[checkpoints.Checkpoint | None, list[str]]:
    found = checkpoints.checkpoint_dirs(output_dir)
    if not found:
        return None, []
    return found[0], checkpoints.problems(found[0])


def steps_text(status: dict, percent: bool = False) -> str:
    step, max_steps = status.get("step"), status.get("max_steps")
    total = max_steps if isinstance(max_steps, int) and max_steps > 0 else None
    text = f"{step}/{total or '?'}"
    if percent and total and isinstance(step, int):
        text += f" ({100 * step / total:.1f}%)"
    return text


class Report:
    def __init__(self, output_dir: Path, facts: Facts, seen: Observation | None = None):
        self.output_dir = output_dir
        self.facts = facts
        self.seen = seen or observe(output_dir)
        self.verdict: Assessment = assess(self.seen)
        self.status = self.seen.status
        self.checkpoint, self.checkpoint_problems = newest_checkpoint(output_dir)
        self.devices = gpu_devices(facts.gpu_csv)

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    def age(self) -> int | None:
        from trainkit.supervise.supervision import timestamp

        at = timestamp((self.status or {}).get("updated_at"))
        return None if at is None else max(0, int(self.seen.now - at))

    def as_json(self) -> dict:
        status = self.status
        if self.verdict.reason.startswith("train.py refused"):
            status = {**(status or {"output_dir": str(self.output_dir), "step": 0, "max_steps": None}),
                      "exit_code": 1, "message": self.verdict.reason}
        merged = dict(status) if status is not None else {"output_dir": str(self.output_dir)}
        merged["state"] = self.verdict.state if self.verdict.state != "unreadable" else None
        if status is not None and self.verdict.recorded_state != self.verdict.state:
            merged["recorded_state"] = self.verdict.recorded_state
        gpu = None
        if self.devices:
            first = {k: v for k, v in self.devices[0].items() if k != "index"}
            gpu = {**first, "count": len(self.devices), "devices": self.devices}
        holder = self.seen.holder or {}
        merged.update(
            tmux_alive=self.facts.tmux_alive,
            supervisor_alive=self.seen.supervisor_alive,
            supervisor_pid=int(holder["pid"]) if str(holder.get("pid", "")).isdigit() else None,
            trainer_alive=self.seen.trainer_alive,
            newest_checkpoint=str(self.checkpoint.path) if self.checkpoint else None,
            newest_checkpoint_problems=self.checkpoint_problems,
            gpu=gpu,
            log=self.facts.log,
            stale=self.verdict.state == "dead",
            updated_seconds_ago=self.age(),
            stalled_seconds=int(self.verdict.stalled_for) if self.verdict.stalled_for is not None else None,
            restart_in_seconds=int(self.verdict.restart_in) if self.verdict.restart_in is not None else None,
            launch_config=snapshot.describe(self.output_dir),
        )
        if self.facts.wandb is not None:
            merged["wandb_summary"] = self.facts.wandb
        return merged

    # Text.

    def state_line(self) -> str:
        v = self.verdict
        if v.state == "restarting":
            parts = []
            if self.status and self.status.get("attempt"):
                parts.append(f"attempt {self.status['attempt']}")
            if v.restart_in is not None:
                parts.append(f"relaunch in {int(v.restart_in)} s")
            return "restarting" + (f" ({', '.join(parts)})" if parts else "")
        if v.state != v.recorded_state and v.recorded_state and not v.reason.startswith("train.py refused"):
            return f"{v.state} (status.json says {v.recorded_state})"
        return str(v.state)

    def print_facts(self) -> None:
        out, status, facts, seen = protocol.section, self.status, self.facts, self.seen
        out("STATUS", f"output dir: {self.output_dir}")
        if status is not None:
            out("STATUS", f"state: {self.state_line()}")
            out("STATUS", f"step: {steps_text(status, percent=True)}")
            loss, tps = status.get("loss"), status.get("tokens_per_second")
            out("STATUS", f"loss: {loss:.4f}" if isinstance(loss, (int, float)) else "loss: n/a")
            out("STATUS", f"tokens/s: {tps:,.0f}" if isinstance(tps, (int, float)) else "tokens/s: n/a")
            out("STATUS", f"ETA: {duration(status.get('eta_seconds'))}")
            out("STATUS", f"elapsed: {duration(status.get('elapsed_seconds'))}")
            age = self.age()
            out("STATUS", f"updated: {'?' if age is None else age} s ago ({status.get('updated_at') or ''})")
            out("STATUS", f"trainer pid: {status.get('pid')} ({'alive' if seen.trainer_alive else 'not running'})")
            if launched := snapshot.describe(self.output_dir):
                out("STATUS", f"config: {launched}; relaunches read {self.output_dir / snapshot.SNAPSHOT_FILE}")
        holder = seen.holder or {}
        if holder.get("pid") and holder.get("role") != "trainer":
            out("STATUS", f"supervisor pid: {holder['pid']} ({'alive' if seen.supervisor_alive else 'not running'})")
        if self.devices:
            for d in self.devices:
                out("STATUS", f"GPU {d['index']}: {d['utilization_percent']}% utilisation, "
                              f"{d['memory_used_mib']:,}/{d['memory_total_mib']:,} MiB")
        else:
            out("STATUS", f"GPU: {facts.gpu_note or 'n/a'}")
        if not facts.tmux_installed:
            out("STATUS", f"tmux session {facts.session}: tmux not installed")
        else:
            out("STATUS", f"tmux session {facts.session}: {'alive' if facts.tmux_alive else 'not running'}")
        if self.checkpoint:
            c = self.checkpoint
            note = f", incomplete: {'; '.join(self.checkpoint_problems)}" if self.checkpoint_problems else ""
            out("STATUS", f"newest checkpoint: {c.path.name} (step {c.step}{note}) {c.path}")
        else:
            out("STATUS", "newest checkpoint: none")
        if status is not None:
            out("STATUS", f"resume_count: {status.get('resume_count')}")
            if status.get("wandb_url"):
                out("STATUS", f"W&B: {status['wandb_url']}")
            elif (self.output_dir / "wandb_run.json").is_file():
                out("STATUS", "W&B: offline")
            else:
                out("STATUS", "W&B: off (no W&B run for this output dir)")
        if facts.wandb:
            w = facts.wandb
            out("STATUS", f"W&B API: {w.get('path')} ({w.get('state')})")
            for key, value in sorted((w.get("summary") or {}).items()):
                out("STATUS", f"W&B {key}: {value}")
        if not facts.log:
            out("STATUS", "log: none found (no lock naming one, no logs/*.log for this output dir)")
        elif facts.lines > 0:
            out("STATUS", f"log: {facts.log} (last {facts.lines} lines)")
            # Indented so that no log line can pass for this command's own tagged lines.
            for line in tail(Path(facts.log), facts.lines):
                protocol._emit(f"    {line}")
        else:
            out("STATUS", f"log: {facts.log}")

    def log_error(self) -> tuple[str, str] | None:
        return last_error(Path(self.facts.log)) if self.facts.log else None

    def print_verdict(self) -> None:
        v, status, out_dir = self.verdict, self.status or {}, self.output_dir
        where = f"in {self.facts.log}" if self.facts.log else f"in {out_dir}"
        steps = steps_text(status)
        message = f": {status['message']}" if status.get("message") else ""
        last = status.get("last_checkpoint")
        last_name = Path(last).name if last else ""
        holder = self.seen.holder or {}
        if v.state == "unreadable":
            protocol.error(f"{self.seen.problem} in {out_dir}",
                           "wait a moment and check again; re-running the train command rewrites it")
        elif v.state is None:
            protocol.error(f"no training run found in {out_dir} (no status.json)",
                           "launch training first, or pass the run's directory with --output-dir DIR "
                           "(or --config FILE)")
        elif v.reason == "launching":
            protocol.success(f"training launching: supervisor pid {holder.get('pid')} is starting train.py for "
                             f"{out_dir} (no status.json yet)")
        elif v.reason.startswith("train.py refused"):
            refusal = last_event(out_dir, "refused")
            protocol.error(f"training failed before it started: {refusal.get('message') if refusal else v.reason}",
                           f"fix what the ERROR {where} says, then re-run the train command")
        elif v.state == "dead":
            protocol.warning(f"status.json says {v.recorded_state} but trainer pid {status.get('pid')} and its "
                             "supervisor are gone")
            protocol.error(f"training is dead at step {steps}: it stopped without a verdict (killed outright?)",
                           f"read the log {where}; re-run the train command to resume from the newest checkpoint")
        elif v.state == "stalled":
            protocol.error(f"training stalled at step {steps}: trainer pid {status.get('pid')} is alive but made "
                           f"no step for {int(v.stalled_for or 0)} s",
                           "a stuck collective, a dead mount or a deadlock: the supervisor kills and relaunches it; "
                           f"without one, stop it (kill -TERM {status.get('pid')}, then -KILL) and re-run")
        elif v.state == "restarting":
            if v.recorded_state == "failed":
                protocol.warning(f"train.py crashed at step {steps}{message}",
                                 f"supervisor pid {holder.get('pid')} relaunches it; "
                                 "it resumes from the last checkpoint")
                protocol.success(f"training relaunching after a crash (step {steps})")
            else:
                detail = f", relaunch in {int(v.restart_in)} s" if v.restart_in is not None else ""
                attempt = f"attempt {status.get('attempt')}" if status.get("attempt") else "relaunching"
                protocol.success(f"training restarting ({attempt}{detail}; step {steps})")
        elif v.state == "completed":
            protocol.success(f"training completed: step {steps}{message}")
        elif v.state in ("running", "starting"):
            protocol.success(f"training {v.state} (step {steps})")
        elif v.state == "interrupted":
            protocol.error(f"training interrupted at step {steps}{message}",
                           "re-run the train command to resume" + (f" from {last_name}" if last_name else ""))
        elif v.state == "crash_loop":
            protocol.error(f"training stopped by the crash-loop guard at step {steps}{message}",
                           f"stop: a human must look at the tracebacks {where} (and {out_dir}/trainkit.log); after "
                           f"fixing the cause delete {out_dir}/resume_metadata.json and re-run")
        elif v.state == "diverged":
            protocol.error(f"training diverged at step {steps}{message}",
                           "do not retry unchanged: lower learning_rate or inspect the data"
                           + (f"; the last good state is in {last_name}" if last_name else ""))
        elif v.state == "failed":
            if v.exit_code == ExitCode.ERROR and trained_steps(status):
                # A full disk or an out-of-memory step: exit 1 after training began.
                found = None if message and v.recorded_state == "failed" else self.log_error()
                text = f": {found[0]}" if found else message
                protocol.error(f"training stopped at step {steps}{text}", found[1] if found and found[1] else (
                    f"fix what the ERROR {where} says; re-run the train command to resume"
                    + (f" from {last_name}" if last_name else "")))
            elif v.exit_code == ExitCode.ERROR:
                protocol.error(f"training failed before it started{message}",
                               f"fix what the ERROR {where} says, then re-run the train command")
            else:
                protocol.error(f"training crashed at step {steps}{message}",
                               f"read the traceback {where}; "
                               "re-run the train command to resume from the last checkpoint")
        else:
            protocol.error(f"status.json in {out_dir} has an unknown state '{v.recorded_state}'",
                           f"update trainkit, or read {out_dir}/status.json yourself")


def last_error(log: Path) -> tuple[str, str] | None:
    """The run's own last `❌ ERROR:` line in the log and its hint: under torchrun the launcher's report of
    the failed process fills the tail, and an agent reads only the final ERROR line."""
    lines = tail(log, 400)
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(protocol.ERROR_PREFIX):
            following = lines[i + 1] if i + 1 < len(lines) else ""
            hint = following[len(protocol.HINT_PREFIX):] if following.startswith(protocol.HINT_PREFIX) else ""
            return lines[i][len(protocol.ERROR_PREFIX):], hint
    return None


def tail(path: Path, count: int) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-count:]


def render(output_dir: Path, facts: Facts, as_json: bool) -> int:
    """Print the report (or, with `as_json`, the JSON object on stdout and the verdict on stderr)."""
    import sys

    report = Report(output_dir, facts)
    if as_json:
        print(json.dumps(report.as_json()), flush=True)
        stdout, sys.stdout = sys.stdout, sys.stderr
        try:
            report.print_verdict()
        finally:
            sys.stdout = stdout
    else:
        report.print_facts()
        report.print_verdict()
    return report.exit_code
