"""Every decision the bash scripts need about a run, as one fast command (stdlib + PyYAML only).

    runctl = python -m trainkit.supervise.runctl

    runctl status --output-dir DIR [--json] [facts from the shell…]   # the status report
    runctl undecided --output-dir DIR          # exit 0 while the run can still change
    runctl field --output-dir DIR KEY          # one status.json value (nothing when null)
    runctl lock-info --output-dir DIR KEY [--live]
    runctl lock-free --output-dir DIR         # exit 1 with the owner's ERROR when held
    runctl lock-path --output-dir DIR [--exit] [--node-rank R]   # the lock (or verdict) file
    runctl lock-take --fd N --output-dir DIR --session S --log L --pid P [--handover-from ID]
    runctl lock-handover --output-dir DIR --launch-id ID   # exit 0 once its supervisor holds it
    runctl config-value CONFIG KEY [DEFAULT]
    runctl output-dir --config FILE [--output-dir DIR] [-- TRAIN_ARGS]
    runctl stalled --output-dir DIR            # exit 0 when the trainer is stalled
    runctl progressed --output-dir DIR --launch-id ID --attempt N   # exit 0: it made a step
    runctl supervise-next --code C --failures F --max-restarts M --progressed 0|1
    runctl group-verdict --folder RANK_EXIT_DIR --nproc N --output-dir DIR
                                            # a torchrun group's exit code; a crash is recorded for the crash-loop count
    runctl gpu-count --platform P              # processes to launch by default (GPUs; 1 off CUDA)
    runctl mark-restarting --output-dir DIR --attempt A --delay S --code C --launch-id ID
    runctl exit-record --output-dir DIR --code C --launch-id ID
    runctl is-h100-80gb NAME MEMORY_MIB        # exit 0 for an H100 80GB
    runctl watch --output-dir DIR --launch-id ID --watch-steps N --session-alive 0|1 …

The lock, verdict and status commands take --node-rank R: in a multi-node run, node R > 0 keeps its
own lock and verdict files and leaves status.json to node 0 (trainkit.core.lock).
Scripts call it through tk_runctl (scripts/lib/common.sh). Exit codes are the protocol's, plus
WATCH_CONTINUE for `watch` (no verdict yet) and the status command's own (stalled 4, dead 75).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from trainkit.core import lock, protocol
from trainkit.core.protocol import ExitCode
from trainkit.core.status import STATUS_FILE, read_json
from trainkit.supervise import supervision

WATCH_CONTINUE = 100


def cmd_status(args) -> int:
    from trainkit.supervise.status_report import Facts, render

    wandb = None
    if args.wandb_json:
        try:
            wandb = json.loads(args.wandb_json)
        except ValueError:
            wandb = None
    facts = Facts(session=args.session, tmux_installed=args.tmux_installed == "1", tmux_alive=args.tmux_alive == "1",
                  gpu_csv=args.gpu_csv, gpu_note=args.gpu_note, log=args.log or None, lines=args.lines, wandb=wandb)
    return render(Path(args.output_dir), facts, args.json)


def cmd_undecided(args) -> int:
    return 0 if supervision.undecided(args.output_dir) else 1


def print_value(value) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        value = str(value).lower()
    print(value if not isinstance(value, (dict, list)) else json.dumps(value))
    return 0


def cmd_field(args) -> int:
    status = read_json(Path(args.output_dir) / STATUS_FILE)
    return print_value(status.get(args.key) if isinstance(status, dict) else None)


def cmd_lock_info(args) -> int:
    info = lock.owner(args.output_dir) if args.live else lock.read_info(args.output_dir)
    if info is None:
        return 1
    return print_value(info.get(args.key) or None)


def cmd_lock_path(args) -> int:
    print((lock.exit_path if args.exit else lock.lock_path)(args.output_dir, args.node_rank))
    return 0


def cmd_lock_free(args) -> int:
    """Exit 0 when no live process holds the lock; else the same ERROR a refused take prints."""
    holder = lock.owner(args.output_dir, args.node_rank)
    if holder is None:
        return 0
    protocol.error(*lock.refusal(Path(args.output_dir), holder))
    return int(ExitCode.ERROR)


def cmd_lock_take(args) -> int:
    output_dir = Path(args.output_dir)
    info = lock.describe(int(args.pid), role=args.role, session=args.session, log=args.log, launch_id=args.launch_id)
    deadline = time.monotonic() + args.handover_seconds
    while True:
        try:
            lock.take(args.fd, output_dir, info, args.node_rank)
            return 0
        except lock.LockHeld as held:
            # The launcher holds the lock for this very launch until the supervisor has started.
            ours = args.launch_id and held.info.get("launch_id") == args.launch_id
            if ours and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            protocol.error(*lock.refusal(output_dir, held.info))
            return int(ExitCode.ERROR)
        except (OSError, ValueError) as exc:
            protocol.error(f"cannot lock {lock.lock_path(output_dir, args.node_rank)}: {exc}",
                           "check that the output dir is writable")
            return int(ExitCode.ERROR)


def cmd_lock_handover(args) -> int:
    """After the launcher let go of the lock: exit 0 once this launch's supervisor holds it (or has
    already run to its verdict); exit 1 with the owner's ERROR when another launch took it first."""
    output_dir = Path(args.output_dir)
    deadline = time.monotonic() + args.timeout
    while True:
        holder = lock.owner(output_dir, args.node_rank)
        if holder is not None and holder.get("launch_id") == args.launch_id and holder.get("role") != "launcher":
            return 0
        if holder is not None and holder.get("launch_id") != args.launch_id:
            protocol.error(*lock.refusal(output_dir, holder))
            return int(ExitCode.ERROR)
        record = supervision.read_exit_record(output_dir, args.node_rank)
        if record is not None and record["launch_id"] == args.launch_id:
            return 0
        if time.monotonic() > deadline:
            protocol.error(f"the supervisor did not take over the lock of {output_dir} within {args.timeout:.0f} s",
                           "read the launch log; `tmux ls` shows whether its session is still there")
            return int(ExitCode.ERROR)
        time.sleep(0.05)


def load_config_values(path: str) -> dict | None:
    """The YAML config as a mapping; without PyYAML (a bare system Python before setup) its
    top-level `key: scalar` lines."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        import yaml
    except ImportError:
        values = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key and not key[0].isspace() and not key.startswith("#"):
                value = value.split(" #", 1)[0].strip().strip("'\"")
                values[key.strip()] = value or None
        return values
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return values if isinstance(values, dict) else None


def cmd_config_value(args) -> int:
    values = load_config_values(args.config)
    value = values.get(args.key) if isinstance(values, dict) else None
    if value is None or value == "":
        value = args.default
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return print_value(value)


def cmd_output_dir(args) -> int:
    from trainkit.train.launch import argv_value

    value = argv_value(args.train_args, "--output_dir") or args.output_dir
    if not value:
        cmd = argparse.Namespace(config=args.config, key="output_dir", default="outputs/run")
        return cmd_config_value(cmd)
    print(value)
    return 0


def cmd_launch_config(args) -> int:
    from trainkit.train.snapshot import relaunch_config

    return print_value(relaunch_config(Path(args.output_dir), args.launch_id, args.config))


def cmd_stalled(args) -> int:
    seen = supervision.observe(args.output_dir)
    if not seen.status or not seen.trainer_alive:
        return 1
    waited = supervision.stall_seconds(seen.status, seen.now)
    if waited is None:
        return 1
    print(int(waited))
    return 0


def cmd_progressed(args) -> int:
    return 0 if supervision.attempt_progressed(Path(args.output_dir), args.launch_id, args.attempt) else 1


def cmd_supervise_next(args) -> int:
    action, value = supervision.supervisor_next(args.code, args.failures, args.max_restarts, args.progressed == "1")
    print(action, value)
    return 0


def cmd_group_verdict(args) -> int:
    from trainkit.train import resume

    verdict = supervision.group_verdict(supervision.read_rank_exits(args.folder), args.nproc)
    if verdict not in supervision.FINAL_CODES and not args.node_rank:
        resume.record_crash(Path(args.output_dir))
    print(verdict)
    return 0


def cmd_gpu_count(args) -> int:
    from trainkit.preflight.gpu_models import visible_gpu_count

    print(max(1, visible_gpu_count()) if args.platform == "h100" else 1)
    return 0


def cmd_mark_restarting(args) -> int:
    supervision.mark_restarting(Path(args.output_dir), args.attempt, args.delay, args.code, args.launch_id,
                                args.node_rank)
    return 0


SUPERVISOR_EVENTS = ("restarting", "stalled", "gave_up")


def supervisor_message(event: str, code: int | None, attempt: int | None, delay: float | None,
                       seconds: float | None, failures: int | None) -> str:
    """The one human line of an event only the supervisor sees."""
    if event == "restarting":
        return (f"train.py exited {code}; the supervisor relaunches it in {delay:g} s (attempt {attempt}) and it "
                "resumes from its newest checkpoint")
    if event == "stalled":
        return (f"train.py made no step for {seconds:g} s; the supervisor stops it and relaunches it "
                "(stall_timeout_seconds sets the limit; the log has what it was doing)")
    return (f"train.py failed {failures} times in a row without progress (last exit {code}); the supervisor gave up: "
            "read the log, fix the cause and launch again")


def cmd_notify(args) -> int:
    """Post an event only the supervisor sees (trainkit.core.notify); node 0 alone, never blocking."""
    if args.node_rank:
        return 0
    from trainkit.core.notify import notify

    message = supervisor_message(args.event, args.code, args.attempt, args.delay, args.seconds, args.failures)
    notify(args.event, Path(args.output_dir), message=message, exit_code=args.code if args.event == "gave_up" else None)
    return 0


def cmd_exit_record(args) -> int:
    supervision.write_exit_record(Path(args.output_dir), args.code, args.launch_id, args.stopped_by, args.node_rank)
    return 0


def cmd_is_h100_80gb(args) -> int:
    from trainkit.preflight.gpu_models import is_h100_80gb

    return 0 if is_h100_80gb(args.name, args.memory_mib * 2**20) else 1


def print_log_tail(tag: str, log: str) -> None:
    from trainkit.supervise.status_report import tail

    protocol.section(tag, f"last lines of {log}:")
    for line in tail(Path(log), 20):
        protocol._emit(f"    {line}")


def last_error(log: str) -> tuple[str, str] | None:
    from trainkit.supervise.status_report import last_error as found

    return found(Path(log))


def cmd_watch(args) -> int:
    """One look at this launch; prints and returns its verdict, or WATCH_CONTINUE."""
    out = Path(args.output_dir)
    verdict = supervision.watch(out, args.launch_id, args.watch_steps, args.session_alive == "1")
    status = read_json(out / STATUS_FILE) or {}
    session = args.session

    def wandb_line() -> None:
        url = status.get("wandb_url") if status.get("launch_id") == args.launch_id else None
        if url:
            protocol.section(args.tag, f"W&B: {url}")
        elif "wandb" in args.report_to.replace(",", " ").split():
            protocol.section(args.tag, f"W&B: offline run in {out}/wandb (wandb sync it later)")

    if verdict.kind == "lost":
        if args.final:
            print_log_tail(args.tag, args.log)
            protocol.error(f"the tmux session {session} ended without a verdict", f"read {args.log}")
            return verdict.exit_code
        return WATCH_CONTINUE
    if not verdict.done:
        return WATCH_CONTINUE
    if verdict.kind == "running":
        eta = status.get("eta_seconds")
        if isinstance(eta, (int, float)):
            from trainkit.supervise.status_report import duration

            protocol.section(args.tag,
                             f"estimated time to finish: {duration(eta)} (from the measured throughput so far)")
        wandb_line()
        protocol.success(f"training running in tmux session {session} (step {verdict.step}, watched "
                         f"{args.watch_steps} steps); reconnect: tmux attach -t {session}")
        return 0
    if verdict.kind == "already_complete":
        protocol.success(verdict.message or f"training already complete: adapter in {out}/final")
        return 0
    if verdict.kind == "completed":
        wandb_line()
        protocol.success(f"training completed during the watch: adapter in {out}/final")
        return 0
    print_log_tail(args.tag, args.log)
    code, detail = verdict.exit_code, f": {verdict.message}" if verdict.message else ""
    if code == ExitCode.CRASH_LOOP:
        protocol.error(f"crash loop{detail}", f"a human must look at {args.log}")
    elif code == ExitCode.DIVERGED:
        protocol.error(f"training diverged{detail}", "lower learning_rate or inspect the data, then launch again")
    elif code == ExitCode.INTERRUPTED:
        protocol.error("training was interrupted during the watch", "launch again to resume")
    elif code == ExitCode.ERROR and verdict.trained:
        found = last_error(args.log) or (verdict.message or "see the ERROR above", None)
        protocol.error(f"training stopped at step {verdict.step}: {found[0]}",
                       found[1] or "fix what it names, then launch again: the run resumes")
    elif code == ExitCode.ERROR:
        found = last_error(args.log)
        if found:
            protocol.error(f"training failed before it started: {found[0]}", found[1] or "fix it and launch again")
        else:
            protocol.error("training failed before it started (see the ERROR above)", "fix it and launch again")
    else:
        protocol.error(f"training crashed (exit {code}) and the supervisor gave up", f"read {args.log}")
    return code


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainkit.supervise.runctl", allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, func, output_dir=True, node_rank=False):
        c = sub.add_parser(name, allow_abbrev=False)
        c.set_defaults(func=func)
        if output_dir:
            c.add_argument("--output-dir", required=True)
        if node_rank:
            # A node other than 0 of a multi-node run keeps its own lock and verdict (trainkit.core.lock).
            c.add_argument("--node-rank", type=int, default=0)
        return c

    c = command("status", cmd_status)
    c.add_argument("--session", default="weatherman-training")
    c.add_argument("--tmux-installed", default="1")
    c.add_argument("--tmux-alive", default="0")
    c.add_argument("--gpu-csv", default="")
    c.add_argument("--gpu-note", default="")
    c.add_argument("--log", default="")
    c.add_argument("--lines", type=int, default=10)
    c.add_argument("--wandb-json", default="")
    c.add_argument("--json", action="store_true")
    command("undecided", cmd_undecided)
    command("field", cmd_field).add_argument("key")
    c = command("lock-info", cmd_lock_info)
    c.add_argument("key")
    c.add_argument("--live", action="store_true")
    command("lock-free", cmd_lock_free, node_rank=True)
    command("lock-path", cmd_lock_path, node_rank=True).add_argument("--exit", action="store_true")
    c = command("lock-take", cmd_lock_take, node_rank=True)
    c.add_argument("--fd", type=int, required=True)
    c.add_argument("--pid", required=True)
    c.add_argument("--role", default="supervisor")
    c.add_argument("--session", default="")
    c.add_argument("--log", default="")
    c.add_argument("--launch-id", default="")
    c.add_argument("--handover-seconds", type=float, default=0.0)
    c = command("lock-handover", cmd_lock_handover, node_rank=True)
    c.add_argument("--launch-id", required=True)
    c.add_argument("--timeout", type=float, default=60.0)
    c = command("config-value", cmd_config_value, output_dir=False)
    c.add_argument("config")
    c.add_argument("key")
    c.add_argument("default", nargs="?", default=None)
    c = command("output-dir", cmd_output_dir, output_dir=False)
    c.add_argument("--config", required=True)
    c.add_argument("--output-dir", default="")
    c.add_argument("train_args", nargs=argparse.REMAINDER)
    c = command("launch-config", cmd_launch_config)
    c.add_argument("--launch-id", default="")
    c.add_argument("--config", required=True)
    command("stalled", cmd_stalled)
    c = command("progressed", cmd_progressed)
    c.add_argument("--launch-id", required=True)
    c.add_argument("--attempt", type=int, required=True)
    c = command("supervise-next", cmd_supervise_next, output_dir=False)
    c.add_argument("--code", type=int, required=True)
    c.add_argument("--failures", type=int, required=True)
    c.add_argument("--max-restarts", type=int, required=True)
    c.add_argument("--progressed", choices=("0", "1"), required=True)
    c = command("group-verdict", cmd_group_verdict, node_rank=True)
    c.add_argument("--folder", required=True)
    c.add_argument("--nproc", type=int, required=True)
    command("gpu-count", cmd_gpu_count, output_dir=False).add_argument("--platform", required=True)
    c = command("mark-restarting", cmd_mark_restarting, node_rank=True)
    c.add_argument("--attempt", type=int, required=True)
    c.add_argument("--delay", type=float, required=True)
    c.add_argument("--code", type=int, required=True)
    c.add_argument("--launch-id", required=True)
    c = command("notify", cmd_notify, node_rank=True)
    c.add_argument("--event", choices=SUPERVISOR_EVENTS, required=True)
    c.add_argument("--code", type=int)
    c.add_argument("--attempt", type=int)
    c.add_argument("--delay", type=float)
    c.add_argument("--seconds", type=float)
    c.add_argument("--failures", type=int)
    c = command("exit-record", cmd_exit_record, node_rank=True)
    c.add_argument("--code", type=int, required=True)
    c.add_argument("--launch-id", default="")
    c.add_argument("--stopped-by", default="")
    c = command("is-h100-80gb", cmd_is_h100_80gb, output_dir=False)
    c.add_argument("name")
    c.add_argument("memory_mib", type=int)
    c = command("watch", cmd_watch)
    c.add_argument("--launch-id", required=True)
    c.add_argument("--watch-steps", type=int, required=True)
    c.add_argument("--session-alive", choices=("0", "1"), required=True)
    c.add_argument("--session", required=True)
    c.add_argument("--tag", required=True)
    c.add_argument("--log", required=True)
    c.add_argument("--report-to", default="")
    c.add_argument("--final", action="store_true", help="no more waiting: a launch without a verdict is lost")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "train_args", None) and args.train_args[0] == "--":
        args.train_args = args.train_args[1:]
    try:
        return args.func(args)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
