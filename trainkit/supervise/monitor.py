"""A live view of one run for a person at a terminal, drawn with rich from status.json and events.jsonl.

    frame = render(Snapshot.read(Path("outputs/smoke")))      # a rich renderable
    plain_lines(Snapshot.read(Path("outputs/smoke")))          # the same as text lines

It only reads: the two files the trainer writes atomically (status.json) or appends to
(events.jsonl), so quitting it, or running several, never touches the run. rich draws the
progress bar and the panels and honours NO_COLOR and a non-terminal stdout by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trainkit.core.status import STATUS_FILE, read_events, read_json

SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 48
TERMINAL_STATES = ("completed", "failed", "crash_loop", "diverged", "interrupted", "dead")
RECENT_WARNINGS = 3
GB = 1e9


@dataclass
class Snapshot:
    output_dir: Path
    status: dict
    losses: list[float] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    last_event: dict | None = None

    @classmethod
    def read(cls, output_dir: Path) -> Snapshot | None:
        status = read_json(output_dir / STATUS_FILE)
        if status is None:
            return None
        snap = cls(output_dir, status)
        for event in read_events(output_dir):
            kind = event.get("event")
            if kind == "log" and isinstance(event.get("loss"), (int, float)):
                snap.losses.append(float(event["loss"]))
            if isinstance(event.get("eval_loss"), (int, float)):
                snap.eval_losses.append(float(event["eval_loss"]))
            if kind == "checkpoint" and event.get("path"):
                snap.checkpoints.append(Path(event["path"]).name)
            if kind == "warning" and event.get("message"):
                snap.warnings.append(event["message"])
            snap.last_event = event
        return snap

    @property
    def state(self) -> str:
        return self.status.get("state") or "unknown"


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    if not values:
        return ""
    if len(values) > width:  # the mean of each of `width` buckets
        size = len(values) / width
        values = [sum(b) / len(b) for b in (values[int(i * size):int((i + 1) * size)] for i in range(width)) if b]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * (len(SPARK) - 1) + 0.5))] for v in values)


def duration(seconds) -> str:
    """H:MM:SS, as the trainer's progress lines write it (trainkit.train.callbacks imports transformers: seconds)."""
    if not isinstance(seconds, (int, float)):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def number(value, fmt: str, unit: str = "") -> str:
    return f"{value:{fmt}}{unit}" if isinstance(value, (int, float)) else "?"


def gigabytes(value) -> str:
    return f"{value / GB:.1f} GB" if isinstance(value, (int, float)) else "?"


def figures(snap: Snapshot) -> list[tuple[str, str]]:
    s = snap.status
    rows = [
        ("state", snap.state + (f" (exit {s['exit_code']})" if s.get("exit_code") is not None else "")),
        ("step", f"{s.get('step', 0)}/{s.get('max_steps') or '?'}  epoch {number(s.get('epoch'), '.2f')}"),
        ("loss", f"{number(s.get('loss'), '.4f')}  lr {number(s.get('learning_rate'), '.2e')}"),
        ("speed", f"{number(s.get('tokens_per_second'), ',.0f', ' tok/s')}  ETA {duration(s.get('eta_seconds'))}  "
                  f"elapsed {duration(s.get('elapsed_seconds'))}"),
        ("checkpoint", f"{Path(s['last_checkpoint']).name if s.get('last_checkpoint') else '-'}  "
                       f"({len(snap.checkpoints)} saved)  resumes {s.get('resume_count', 0)}"),
    ]
    gpu = s.get("gpu") or {}
    memory = s.get("memory") or {}
    if gpu.get("memory_total_bytes") or gpu.get("utilization_percent") is not None:
        util = number(gpu.get("utilization_percent"), ".0f", "%")
        rows.append(("accelerator", f"{gpu.get('name') or '?'}  util {util}"
                                    f"  mem {gigabytes(gpu.get('memory_used_bytes'))}/"
                                    f"{gigabytes(gpu.get('memory_total_bytes'))}  "
                                    f"{number(gpu.get('temperature_c'), '.0f', '°C')}  "
                                    f"{number(gpu.get('power_watts'), '.0f', ' W')}"))
    device = memory.get("device_allocated_bytes")
    rows.append(("host", f"cpu {number(gpu.get('cpu_percent'), '.0f', '%')}  rss {gigabytes(memory.get('rss_bytes'))}"
                         + (f"  device allocated {gigabytes(device)}" if device is not None else "")))
    if s.get("wandb_url"):
        rows.append(("W&B", s["wandb_url"]))
    if s.get("continuation"):
        rows.append(("continuation", f"{s['continuation'].get('from_step')} -> {s['continuation'].get('max_steps')}: "
                                     f"{s['continuation'].get('lr_schedule')}"))
    if s.get("message"):
        rows.append(("message", s["message"]))
    return rows


def plain_lines(snap: Snapshot) -> list[str]:
    """The frame as text lines, for a log file or a pipe."""
    lines = [f"{snap.output_dir.name}: {snap.state}"]
    lines += [f"  {name:<12} {value}" for name, value in figures(snap)]
    if snap.losses:
        lines.append(f"  {'loss trend':<12} {sparkline(snap.losses)}  ({snap.losses[0]:.4f} -> {snap.losses[-1]:.4f})")
    if snap.eval_losses:
        lines.append(f"  {'eval loss':<12} {sparkline(snap.eval_losses)}  (last {snap.eval_losses[-1]:.4f})")
    lines += [f"  warning      {w}" for w in snap.warnings[-RECENT_WARNINGS:]]
    return lines


def render(snap: Snapshot):
    from rich.console import Group
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    s = snap.status
    step, total = s.get("step") or 0, s.get("max_steps") or 0
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(total, 1), completed=min(step, total or step), width=50),
                Text(f"{step}/{total or '?'}" + (f"  {step / total:.0%}" if total else "")))
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, value in figures(snap):
        style = "red" if name == "state" and snap.state in ("failed", "crash_loop", "diverged", "dead") else None
        table.add_row(name, Text(value, style=style))
    if snap.losses:
        table.add_row("loss trend", Text(f"{sparkline(snap.losses)}  ({snap.losses[0]:.4f} -> {snap.losses[-1]:.4f})",
                                         style="cyan"))
    if snap.eval_losses:
        table.add_row("eval loss", Text(f"{sparkline(snap.eval_losses)}  (last {snap.eval_losses[-1]:.4f})",
                                        style="magenta"))
    for warning in snap.warnings[-RECENT_WARNINGS:]:
        table.add_row("warning", Text(warning, style="yellow"))
    title = f"trainkit monitor: {snap.output_dir.name} ({s.get('platform') or '?'}, {s.get('device') or '?'})"
    return Panel(Group(bar, table), title=title, subtitle="read-only: Ctrl-C quits the view, never the run")


def render_text(snap: Snapshot, width: int = 100) -> str:
    """One frame as the terminal would show it, without colour: for tests and closing notes."""
    import io

    from rich.console import Console

    console = Console(width=width, record=True, force_terminal=False, no_color=True, file=io.StringIO())
    console.print(render(snap))
    return console.export_text()
