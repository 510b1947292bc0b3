"""train.py --dry-run and train.sh --dry-run: the plan up to the first optimizer step, and nothing written."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, base_env, run_train


def test_a_dry_run_prints_the_plan_and_leaves_no_trace_in_the_output_dir(tmp_path):
    out = tmp_path / "dry"
    run = run_train(out, "--dry-run")
    assert run.returncode == 0, run.output
    assert "[DRY-RUN] models/tiny-chat on cpu, model on the meta device (no weights read)" in run.output
    assert "[DRY-RUN] trainer built: GuardedSFTTrainer" in run.output
    assert ("[DRY-RUN] effective batch 4 (4 per device x 1 accumulation x 1 process(es)); "
            "20 steps = 0.25 epochs of 320 examples (80 steps each)") in run.output
    assert "[DRY-RUN] checkpoints every 10 steps (2 in the run, plus the last step), keeping the newest 3" in run.output
    assert "[DRY-RUN] memory estimate: " in run.output and "[DRY-RUN] expected duration ~" in run.output
    assert run.verdict == f"✅ SUCCESS: dry run complete: nothing trained, nothing written to {out}"
    assert not out.exists()


def test_a_dry_run_with_load_reads_the_weights_and_says_where_a_resume_would_start(tmp_path, crashed_at_step_5):
    src, _ = crashed_at_step_5
    out = tmp_path / "crashed"
    subprocess.run(["cp", "-a", str(src), str(out)], check=True)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    run = run_train(out, "--max_steps", "8", "--save_steps", "2", "--dry-run=load")
    assert run.returncode == 0, run.output
    assert "model on the device (weights loaded)" in run.output
    assert "[DRY-RUN] a real run would resume from checkpoint-4 (step 4)" in run.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_a_dry_run_mode_that_does_not_exist_is_an_input_error(tmp_path):
    run = run_train(tmp_path / "x", "--dry-run=maybe")
    assert run.returncode == 1
    assert run.verdict.startswith("❌ ERROR: --dry-run=maybe: expected --dry-run or --dry-run=load")


def test_train_sh_dry_run_checks_then_plans_in_the_foreground_without_tmux(tmp_path):
    out = tmp_path / "sh"
    result = subprocess.run(["scripts/train.sh", "--platform", "cpu", "--output-dir", str(out), "--dry-run",
                             "--", "--report_to", "none"], cwd=ROOT, env=base_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[DRY-RUN] effective batch 4" in result.stdout
    assert "launched in tmux" not in result.stdout
    assert not out.exists() or not any(out.iterdir())


def test_a_dry_run_of_the_h100_config_plans_a_7b_run_offline_without_its_weights_or_tokenizer(tmp_path):
    out = tmp_path / "h100"
    cmd = [sys.executable, "train.py", "--config", "configs/training_config_h100.yaml", "--output_dir", str(out),
           "--train_file", "data/sample/train.jsonl", "--validation_file", "data/sample/validation.jsonl",
           "--dry-run"]
    result = subprocess.run(cmd, cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("[DRY-RUN] effective batch 8 packed rows of up to 2048 tokens (2 per device x 4 accumulation x "
            "1 process(es)); 3000 steps over 320 examples, several to a row") in result.stdout
    assert "⚠️ WARNING: dry run: no tokenizer or architecture for Qwen/Qwen2.5-7B-Instruct offline" in result.stdout
    assert "[DRY-RUN] memory estimate: estimated peak memory 54.5 GB is 78% of the 70 GB budget" in result.stdout
    assert not out.exists()


def test_the_dry_run_plan_states_the_preflights_own_duration_estimate(tmp_path):
    from trainkit.config.settings import parse
    from trainkit.core.report import Report
    from trainkit.preflight.checks import preflight
    from trainkit.train.callbacks import format_duration
    from trainkit.train.dryrun import plan

    config = parse(["--config", "configs/smoke.yaml", "--output_dir", str(tmp_path / "o")])
    report = Report("PREFLIGHT")
    preflight(config, report, data=False)
    assert config.duration_seconds is not None
    assert any(f.message.startswith("duration estimate (from FLOPs") for f in report.findings)
    lines = plan(config, 320, report, None)
    assert f"expected duration ~{format_duration(config.duration_seconds)} (estimated from FLOPs and the chip" in \
        " ".join(lines)
