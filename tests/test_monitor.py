"""scripts/monitor.py: one frame of a recorded run, drawn with rich or as plain lines, read-only."""

from __future__ import annotations

import hashlib
from pathlib import Path

from conftest import ANSI, ROOT, load_script
from trainkit.supervise.monitor import Snapshot, render_text, sparkline

MONITOR = load_script("monitor").main
RECORDED = ROOT / "tests" / "fixtures" / "recorded_run"


def digest(directory: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(directory.iterdir()))).hexdigest()


def test_a_frame_of_a_recorded_run_shows_progress_loss_speed_checkpoints_and_the_accelerator():
    text = render_text(Snapshot.read(RECORDED), width=100)
    assert "trainkit monitor: recorded_run (h100, cuda)" in text
    assert "1250/3000  42%" in text
    assert "loss         0.8123  lr 1.42e-04" in text
    assert "speed        15,230 tok/s  ETA 2:06:00  elapsed 1:30:00" in text
    assert "checkpoint   checkpoint-1000  (2 saved)  resumes 1" in text
    assert "accelerator  NVIDIA H100 80GB HBM3  util 97%  mem 55.1 GB/85.5 GB  64°C  612 W" in text
    assert "W&B          https://wandb.ai/weatherman/weatherman/runs/3f9a1c2e" in text
    assert "loss trend   █▇▇▆" in text and "(2.1331 -> 0.8104)" in text
    assert "eval loss    █▁  (last 0.8841)" in text
    assert "warning      no W&B API key found: logging offline" in text
    assert "read-only: Ctrl-C quits the view, never the run" in text
    assert not ANSI.search(text)


def test_without_a_terminal_the_monitor_prints_plain_lines_and_a_verdict_and_changes_nothing(capfd, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    before = digest(RECORDED)
    assert MONITOR(["--output-dir", str(RECORDED), "--once"]) == 0
    out = capfd.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "recorded_run: running"
    assert "  step         1250/3000  epoch 1.25" in lines
    assert lines[-1] == "✅ SUCCESS: monitor ended: recorded_run is running"
    assert not ANSI.search(out) and "╭" not in out
    assert digest(RECORDED) == before


def test_a_directory_without_status_json_is_an_input_error(tmp_path, capfd):
    assert MONITOR(["--output-dir", str(tmp_path)]) == 1
    assert capfd.readouterr().out.startswith(f"❌ ERROR: no status.json in {tmp_path}")


def test_the_sparkline_spans_the_lowest_to_the_highest_value_and_fits_its_width():
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    assert len(sparkline([float(i) for i in range(500)], width=40)) == 40
    assert sparkline([]) == ""


def test_a_cpu_run_shows_no_device_memory_it_does_not_have(tmp_path):
    import json

    status = json.loads((RECORDED / "status.json").read_text())
    status["memory"] = {"rss_bytes": 1_500_000_000}
    status["gpu"] = {**dict.fromkeys(status.get("gpu") or {}), "cpu_percent": 97.0}
    run = tmp_path / "cpu_run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps(status))
    text = render_text(Snapshot.read(run), width=100)
    assert "cpu 97%" in text and "device allocated" not in text
