"""The training run, top to bottom: config → resume point → data → crash-loop check → train → final adapter.

    python train.py --config configs/smoke.yaml
    python train.py --config configs/smoke.yaml --max_steps 40 --output_dir outputs/longer

Exit codes are the agent protocol's (trainkit.core.protocol.ExitCode): 0 done, 1 fix the
input, 2 crash loop, 3 diverged, 70 crashed mid-training, 75 interrupted after saving.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from trainkit import __version__
from trainkit.config.help import answer_help
from trainkit.core import protocol
from trainkit.core.errors import ConfigError, Diverged, TrainkitError, log_traceback
from trainkit.core.library_warnings import quiet_progress_bars, silence_unactionable
from trainkit.core.protocol import ExitCode
from trainkit.core.signals import StopBeforeStart, StopRequest, signal_name
from trainkit.core.status import RunStatus, is_main_process, read_json
from trainkit.train.launch import Claim, early_output_dir, early_value
from trainkit.train.notifications import announce_exit

FINAL_DIR = "final"
LOG_FILE = "trainkit.log"
RANK_EXIT_DIR_ENV = "TRAINKIT_RANK_EXIT_DIR"


def prepare_stdio() -> None:
    """Line-buffered stdout so a tailing agent sees each tag when it happens."""
    sys.stdout.reconfigure(line_buffering=True)
    if not is_main_process():
        sys.stdout = open(os.devnull, "w")  # only rank 0 speaks the protocol


def finished_state(config) -> dict | None:
    """The final adapter's trainer state when it already covers what the config asks for."""
    final = config.output_dir / FINAL_DIR
    state = read_json(final / "trainer_state.json")
    if not state or not (final / "adapter_model.safetensors").is_file():
        return None
    if config.sft.max_steps > 0:
        return state if state.get("global_step", 0) >= config.sft.max_steps else None
    return state if (state.get("epoch") or 0) >= config.sft.num_train_epochs - 1e-9 else None


def main(argv: list[str] | None = None) -> int:
    code = run(argv)
    record_rank_exit(int(code))
    return code


def record_rank_exit(code: int) -> None:
    """Under the supervisor's torchrun, each rank leaves its exit code in $TRAINKIT_RANK_EXIT_DIR:
    a rank that leaves none was killed. torchrun's own exit status hides the codes."""
    folder = os.environ.get(RANK_EXIT_DIR_ENV)
    if not folder:
        return
    try:
        (Path(folder) / f"rank-{os.environ.get('RANK', '0')}").write_text(f"{code}\n", encoding="utf-8")
    except OSError:
        pass


def run(argv: list[str] | None = None) -> int:
    prepare_stdio()
    silence_unactionable()
    if (help_code := answer_help(sys.argv[1:] if argv is None else argv)) is not None:
        return help_code
    stop = StopRequest()
    stop.install()
    status: RunStatus | None = None
    started = time.time()
    claim = Claim()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # Claim the output dir (lock, then status.json `starting`) before anything heavy; a dry
        # run trains nothing and writes nothing, so it claims nothing either.
        dry = any(a.split("=")[0] in ("--dry-run", "--dry_run") for a in argv)
        early = None if dry else early_output_dir(argv)
        status = claim.take(early) if early else None
        # Before any library asks the Hub: a model whole on disk is read with the Hub off.
        from trainkit.config.hub_offline import offline_if_cached

        hub_note, model_snapshot = offline_if_cached(early_value(argv, "model_name_or_path"),
                                                     early_value(argv, "model_revision"))
        from trainkit.config.settings import parse

        config = parse(argv)
        if config.dry_run:  # nothing trained, nothing written: no status either
            from trainkit.train.dryrun import dry_run

            return dry_run(config, config.dry_run)
        status = claim.take(config.output_dir)
        from trainkit.core.notify import DEFAULT_EVENTS

        status.update(device=config.device, platform=config.platform, backend=config.trainkit.backend,
                      notify_events=list(config.trainkit.notify_events or DEFAULT_EVENTS),
                      max_steps=config.sft.max_steps,
                      stall_timeout_seconds=config.trainkit.stall_timeout_seconds,
                      stop_grace_seconds=config.trainkit.stop_grace_seconds,
                      first_step_timeout_seconds=config.trainkit.first_step_timeout_seconds)
        config.overrides = overrides_of(argv)
        config.hub_note, config.model_snapshot = hub_note, model_snapshot
        code = train(config, status, stop, started, claim)
        if code == ExitCode.ERROR and not claim.undo_if_fresh(code):  # the preflight's ERRORs are printed
            if not claim.undo_refused(code, "the preflight found errors (see the log)"):
                status.update(state="failed", exit_code=int(code), message="the preflight found errors (see the log)")
            announce_exit(code, status, "the preflight found errors: fix what the log's ERROR lines name, then "
                                        "re-run the same command")
        return code
    except StopBeforeStart as exc:
        # Nothing was trained by this start: nothing to save, and a long phase (a model load, a Hub that never
        # answers) must not hold a stop.
        message = f"stopped before training started ({signal_name(exc.signum)}); re-run the same command to start"
        protocol.error(message, "the newest complete checkpoint, if any, is where it resumes")
        # A run this start had not touched keeps its state (a completed run stays completed).
        if status is not None and not claim.undo_refused(ExitCode.INTERRUPTED, message, event="stopped_before_start"):
            status.update(state="interrupted", exit_code=int(ExitCode.INTERRUPTED), message=message)
            status.event("interrupted", signal=signal_name(exc.signum), message=message)
        return ExitCode.INTERRUPTED
    except TrainkitError as exc:
        return verdict(exc, status, claim)
    except Exception as exc:  # the supervisor resumes on 70; the log keeps the whole story
        log_path = Path(os.environ.get("TRAINKIT_LOG_FILE") or (status.output_dir if status else Path.cwd()) / LOG_FILE)
        logged = log_traceback(log_path, "train.py crashed")
        if status is not None:
            # A disk that filled outside the trainer's saves (the log, W&B's files, the HF cache).
            from trainkit.train.out_of_room import Context, classify

            room = classify(exc, Context(output_dir=status.output_dir))
            if room is not None:
                return verdict(room, status, claim)
        summary = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:300]
        protocol.error(
            f"training crashed: {summary}",
            (f"full traceback in {log_path}" if logged else f"the traceback could not be written to {log_path}")
            + "; re-run the same command to resume from the last checkpoint",
        )
        if status:
            status.update(state="failed", exit_code=int(ExitCode.CRASHED), message=summary)
            status.event("error", message=summary, log=str(log_path))
        return ExitCode.CRASHED
    finally:
        claim.release()  # the run is over: the lock goes now, not when the interpreter has wound down


def overrides_of(argv: list[str]) -> list[str]:
    """The command line without its --config: what the run was launched with beside the file."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif not arg.startswith("--config="):
            out.append(arg)
    return out


def verdict(exc: TrainkitError, status: RunStatus | None, claim: Claim) -> int:
    """An expected failure's one ERROR, its state and event, and its exit code."""
    protocol.error(exc.message, exc.hint)
    # A refused claim wrote nothing; after the claim, status.json belongs to this launch.
    if status and not claim.undo_if_fresh(exc.exit_code):
        if not claim.undo_refused(exc.exit_code, exc.message):
            status.update(state=exc.state, exit_code=int(exc.exit_code), message=exc.message)
            failure = getattr(exc, "failure", None)
            status.event(exc.state, message=exc.message, **({"failure": failure} if failure else {}))
        announce_exit(exc.exit_code, status, f"{exc.message}. {exc.hint}" if exc.hint else exc.message)
    return exc.exit_code


def train(config, status: RunStatus, stop: StopRequest, started: float, claim: Claim | None = None) -> int:
    from trainkit.train import checkpoints, resume

    out = config.output_dir
    main_proc = is_main_process()
    quiet_progress_bars()
    protocol.section(
        config.tag,
        f"trainkit {__version__}: {config.model.model_name_or_path} on {config.device} "
        f"({config.model.dtype}, "
        f"{'mlx' if config.trainkit.backend == 'mlx' else config.model.attn_implementation}) -> {out}",
    )
    from trainkit.train.continuation import apply as plan_continuation
    from trainkit.train.continuation import begin as begin_continuation

    # --more_steps raises max_steps before the fingerprint and "already complete" look at it.
    continuation = plan_continuation(config)
    from trainkit.train.out_of_room import apply_retry

    ran_out = apply_retry(config)  # before the preflight: its memory estimate includes the change
    if ran_out is not None and main_proc:
        message = (f"activation_checkpointing turned on: step {ran_out} ran out of memory without it "
                   "(oom_retry_with_checkpointing)")
        protocol.warning(message, "set activation_checkpointing: true in the config to make it the run's own setting")
        status.event("warning", message=message)
    # The same checks as validate_training_config.py, before anything heavy or any write.
    from trainkit.core.report import Report
    from trainkit.preflight.checks import preflight

    report = Report("PREFLIGHT")
    if config.hub_note:
        report.ok(config.hub_note)
    preflight(config, report, training=True)
    if main_proc:
        report.print_findings()
    if report.errors:
        return ExitCode.ERROR

    def warn(message: str, hint: str | None = None) -> None:
        if main_proc:
            protocol.warning(message, hint)
            status.event("warning", message=message)

    # Before "already complete": that verdict is only true for the config the run had.
    fingerprint = check_fingerprint(config)
    done = finished_state(config)
    if done:
        message = f"training already complete: step {done['global_step']}, adapter in {out / FINAL_DIR}"
        kept = ("max_steps", "epoch", "loss", "learning_rate", "last_checkpoint", "wandb_url", "resume_count")
        previous = getattr(status, "previous", {})
        status.update(**{k: previous[k] for k in kept if k in previous}, state="completed", step=done["global_step"],
                      exit_code=0, eta_seconds=0.0, already_complete=True, message=message)
        protocol.success(message)
        return ExitCode.OK
    record_fingerprint(config, fingerprint, warn, write=main_proc)

    def skipped(checkpoint, reasons):
        warn(f"skipping incomplete checkpoint {checkpoint.path.name}: {'; '.join(reasons)}",
             "it was probably cut off mid-save; resuming from the previous one (it is left in place for inspection)")

    save_only_model = bool(getattr(config.sft, "save_only_model", False))
    gather = gather_from_every_rank(config.sft)
    if gather is None:
        newest = checkpoints.newest_valid(out, on_skip=skipped, save_only_model=save_only_model)
    else:
        from trainkit.train import nodes

        if nodes.several_nodes():
            nodes.check_checkpoint_layout(nodes.sees_rank_0s_file(out, gather),
                                          bool(getattr(config.sft, "save_on_each_node", False)))
        newest, found = checkpoints.newest_valid_on_every_rank(out, gather, skipped, save_only_model)
        nodes.check_resume_point(found, newest, out)
        if len(set(found)) > 1:
            steps = ", ".join("none" if step < 0 else str(step) for step in sorted(set(found)))
            warn(f"the ranks' newest complete checkpoints differ (steps {steps}); every rank resumes from "
                 f"{newest.path.name if newest else 'the start'}, the newest one complete on all of them",
                 "a node was stopped mid-save or its copy is behind; the newer checkpoints are left in place")
    step = newest.step if newest else 0
    if newest is None:
        status.restart_run_clock()  # trained from its beginning: a new run's clock
    # Counted before anything that can crash: a start that dies while loading data or the
    # model is a start without progress like any other, and the crash-loop limit sees it.
    from trainkit.train import snapshot

    # What this start trains, for the supervisor's relaunches: a config edited from now on is for the next run.
    snapshot.write(config, config.overrides)
    if main_proc:
        record = snapshot.read(out)
        status.update(config_file=record.get("source") if record else config.config_path)
        if claim is not None:
            claim.touched_run = True  # from here a refusal is this run's verdict, not a start refused
        metadata = resume.record_start(out, step, newest.path if newest else None)
        status.update(step=step, start_step=step, starts_without_progress=metadata["resume_count"],
                      resume_count=status.data["resume_count"] + (1 if newest else 0),
                      last_checkpoint=str(newest.path) if newest else None)
        resume.check_crash_loop(out, metadata, config.trainkit.crash_loop_limit)
        status.event("resume" if newest else "start", resume_count=metadata["resume_count"])
        if continuation:
            begin_continuation(out, continuation, newest, status)
    if newest:
        protocol.resume(step)
    try:
        return train_from(newest, config, status, stop, started, warn, continuation)
    except TrainkitError as exc:
        if exc.exit_code == ExitCode.ERROR and main_proc:
            # Fix-the-input is a verdict, not a crash: the next start does not count as a retry.
            resume.record_clean_exit(out)
        raise


# What the libraries raise while the trainer is built when an argument combination is refused
# (TRL's padding_free without packing, a PEFT option for another model type, a missing extra).
BUILD_INPUT_ERRORS = (ValueError, TypeError, ImportError)


def train_from(newest, config, status: RunStatus, stop: StopRequest, started: float, warn, continuation=None) -> int:
    from trainkit.core.signals import EvaluationStopped
    from trainkit.train import out_of_room, resume
    from trainkit.train.backend import backend_for
    from trainkit.train.callbacks import TrainkitCallback
    from trainkit.train.divergence import LossDiverged
    from trainkit.train.eval_callback import eval_callbacks
    from trainkit.train.faults import Faults, InjectedCrash
    from trainkit.train.timed_saves import TimedSaveCallback
    from trainkit.train.tracking import finish_wandb, prepare_wandb, start_wandb

    out = config.output_dir
    main_proc = is_main_process()
    faults = Faults.from_env()
    if faults.crash_now(0):
        raise InjectedCrash("injected crash before the first step")
    faults.ignore_stop_if_set()
    faults.hang_before_first_step_if_set()
    backend = backend_for(config)
    data = backend.load_data(config)
    prepare_wandb(out, config.trainkit.wandb_project, config.sft.report_to, warn)
    callback = TrainkitCallback(status, stop, config.tag, faults, warn, verbose=main_proc,
                                estimate_after=config.trainkit.estimate_after_steps)
    timed_saves = TimedSaveCallback(config.trainkit.save_every_minutes)
    low_space = out_of_room.low_space_watch(out, status, warn)  # after timed_saves: it decides should_save
    evaluators = eval_callbacks(config, status, warn, lambda: stop.requested, verbose=main_proc)
    try:
        session = backend.build(config, data, [callback, timed_saves, low_space, *evaluators], faults)
    except BUILD_INPUT_ERRORS as exc:
        log_path = log_file(out)
        log_traceback(log_path, "the trainer refused the configuration")
        detail = " ".join(f"{exc.__class__.__name__}: {exc}".split())
        raise ConfigError(
            f"the trainer refused this configuration: {detail[:600]}",
            f"change the setting it names (config file or command line) and re-run; traceback in {log_path}",
        ) from None
    session.continuation = continuation
    session.stop_requested = lambda: stop.requested
    if stop.requested:
        return interrupted(out, status, stop, "before the first step; nothing new to save")
    # Bounded, and offline when W&B does not answer: W&B is how people watch a run, not what it is for.
    start_wandb(out, config.trainkit.wandb_project, config.sft.report_to, config.trainkit.wandb_timeout_seconds,
                status, warn)
    status.update(startup_seconds=round(time.time() - started, 2))
    try:
        session.train(newest.path if newest else None)
        state = session.state
        if state.global_step < state.max_steps:
            if stop.requested:
                return interrupted(out, status, stop, f"checkpoint saved at step {state.global_step}")
            raise RuntimeError(
                f"training ended at step {state.global_step} of {state.max_steps} without a stop request")
        session.check_weights()
    except EvaluationStopped:
        # The evaluation's figures are abandoned, not reported as if complete; the last finished step is kept.
        saved, why = session.save_last_good()
        where = f"evaluation abandoned; checkpoint saved at step {session.state.global_step}" if saved else \
            f"evaluation abandoned; {why or 'nothing new to save'}"
        return interrupted(out, status, stop, where)
    except LossDiverged as exc:
        saved, why = session.save_last_good()
        where = ""
        if saved:
            where = f"; last good state saved in {saved.name}"
        elif why:
            periodic = newest_checkpoint_name(out)
            where = f"; {why}" + (f": the newest periodic checkpoint is {periodic}" if periodic else "")
        raise Diverged(
            f"{exc.detail} at step {exc.step}: training diverged{where}",
            "lower learning_rate (or raise warmup), check the data around that step, then re-run to resume; "
            f"to restart from an earlier checkpoint: scripts/rollback.py --output-dir {out} --to-step <N>",
        ) from None
    except Exception as exc:
        room = out_of_room_error(exc, config, session)
        if room is not None:
            raise room from None
        raise

    final = out / FINAL_DIR
    try:
        session.save_final(final, write_state=main_proc)
    except Exception as exc:
        if main_proc:
            shutil.rmtree(final, ignore_errors=True)  # half an adapter is not one; the checkpoints stay
        room = out_of_room_error(exc, config, session)
        if room is not None:
            raise room from None
        raise
    if main_proc:
        resume.record_clean_exit(out)
        finish_wandb(config.trainkit.wandb_timeout_seconds, warn)
    status.update(state="completed", step=state.global_step, exit_code=0, eta_seconds=0.0,
                  message=f"adapter saved to {final}")
    status.event("completed", path=str(final))
    announce_exit(ExitCode.OK, status, f"training complete: adapter saved to {final}")
    protocol.section(f"{config.tag}-COMPLETE", f"step {state.global_step}/{state.max_steps}")
    protocol.success(f"training complete: adapter saved to {final}")
    return ExitCode.OK


def out_of_room_error(exc: BaseException, config, session):
    """DiskFull or OutOfMemory (exit 1) for EXC with what the run knows, or None (trainkit.train.out_of_room)."""
    from trainkit.preflight.gpu import memory_budget_gb
    from trainkit.train import out_of_room

    device = "mlx" if config.trainkit.backend == "mlx" else config.device
    state = getattr(session, "state", None)
    step = getattr(state, "global_step", None)
    try:
        budget = memory_budget_gb(config)[0]
    except Exception:  # a figure for the message only
        budget = None
    context = out_of_room.Context(
        output_dir=config.output_dir, save_total_limit=config.sft.save_total_limit,
        step=None if step is None else step + 1, batch_shape=getattr(session, "batch_shape", None), device=device,
        peak_bytes=out_of_room.peak_memory(device), estimate=getattr(config, "memory_estimate", None),
        budget_gb=budget, sft=config.sft, load_in_4bit=bool(getattr(config.model, "load_in_4bit", False)))
    error = out_of_room.classify(exc, context)
    if isinstance(error, out_of_room.OutOfMemory) and config.trainkit.oom_retry_with_checkpointing \
            and not config.sft.activation_checkpointing:
        return out_of_room.retry_with_checkpointing(error, context)
    return error


def gather_from_every_rank(sft=None):
    """Under torchrun, a function that returns one small value from every rank; else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized() and sft is not None:
        # TrainingArguments sets up the process group (ddp_backend, ddp_timeout) when its device is first
        # asked for, which parsing the config normally does already.
        _ = sft.device

    def gather(value):
        values = [None] * dist.get_world_size()
        dist.all_gather_object(values, value)
        return values

    return gather


def log_file(output_dir: Path) -> Path:
    return Path(os.environ.get("TRAINKIT_LOG_FILE") or output_dir / LOG_FILE)


def newest_checkpoint_name(output_dir: Path) -> str | None:
    from trainkit.train import checkpoints

    newest = checkpoints.newest_valid(output_dir)
    return newest.path.name if newest else None


def check_fingerprint(config):
    """Refuse to continue a run recorded with a different config: (current, recorded, changes)."""
    from trainkit.train import checkpoints, fingerprint

    out = config.output_dir
    current = fingerprint.fingerprint(config)
    # Until a checkpoint or the final adapter exists there is nothing to continue: a new
    # config simply replaces the old one (a refused first start is fixed and re-run).
    trained = bool(checkpoints.checkpoint_dirs(out)) or (out / FINAL_DIR).is_dir()
    recorded = fingerprint.read(out) if trained else None
    changes = fingerprint.compare(recorded, current)
    if changes.blocking:
        from trainkit.train import snapshot

        if snapshot.file_changed(out, config.config_path):
            one_shot = [a for a in config.overrides if a.split("=")[0] in snapshot.ONE_SHOT]
            raise ConfigError(
                f"{out} holds a run launched with another config ({config.config_path} changed since, or a "
                f"different one): {'; '.join(changes.blocking)}",
                f"resume the run as it was launched: {snapshot.resume_command(out, config.platform, one_shot)}; "
                "or train the edited config into a new output_dir: --output_dir outputs/<new-name>",
            )
        flags = fingerprint.resume_flags(changes.blocking)
        raise ConfigError(
            f"{out} holds a run started with a different config: {'; '.join(changes.blocking)}",
            "train this config into a new output_dir (--output_dir outputs/<new-name>), or resume with the "
            "settings it started with" + (f": add {flags} to the command" if flags else "")
            + f" (recorded in {out / fingerprint.FINGERPRINT_FILE})",
        )
    return current, recorded, changes


def record_fingerprint(config, checked, warn, write: bool) -> None:
    """Warn about the safe changes a resume continues with, and record what this start trains."""
    from trainkit.train import fingerprint

    current, recorded, changes = checked
    if changes.safe:
        warn(f"continuing {config.output_dir} with changed settings: {'; '.join(changes.safe)}",
             "these only change the run's length, cadence or reporting; the recorded fingerprint is updated")
    if changes.earlier:
        return  # the run already went past this length: the longer record stands
    current = fingerprint.with_history(current, recorded)
    if write and current != recorded:
        fingerprint.write(config.output_dir, current)


def interrupted(out: Path, status: RunStatus, stop: StopRequest, detail: str) -> int:
    from trainkit.train import resume

    if is_main_process():
        resume.record_clean_exit(out)
    message = f"interrupted by {stop.name}: {detail}"
    status.update(state="interrupted", exit_code=int(ExitCode.INTERRUPTED), message=message)
    status.event("interrupted", signal=stop.name)
    announce_exit(ExitCode.INTERRUPTED, status, f"{message}; re-run the same command to resume")
    protocol.error(message, "re-run the same command to resume")
    return ExitCode.INTERRUPTED
