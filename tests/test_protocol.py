"""The tagged-line grammar is one contract whether bash or Python prints it."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import pytest

from conftest import ROOT, TAGGED, base_env
from trainkit.core.protocol import ExitCode

MESSAGES = [
    ("success", "tk_success", ["training complete"]),
    ("warning", "tk_warning", ["no W&B API key found", "export WANDB_API_KEY=..."]),
    ("warning", "tk_warning", ["low memory: 24 GB"]),
    ("error", "tk_error", ["config not found: x.yaml", "pass --config configs/smoke.yaml"]),
    ("resume", "tk_resume", ["500"]),
    ("section", "tk_section", ["TRAINING-CPU", "step 3/20 | loss 2.5"]),
    ("section", "tk_section", ["PREFLIGHT"]),
]


def python_cmd(func, args):
    call = f"protocol.{func}({', '.join(repr(int(a) if func == 'resume' else a) for a in args)})"
    return [sys.executable, "-c", f"from trainkit.core import protocol; {call}"]


def bash_cmd(func, args):
    return ["bash", "-c", 'source scripts/lib/protocol.sh; "$@"', "bash", func, *args]


def through_pipe(cmd, env):
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, check=True).stdout


def through_tty(cmd, env):
    """Run with stdout on a pseudo-terminal, as in an SSH session or tmux."""
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execvpe(cmd[0], cmd, env)
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    return b"".join(chunks).replace(b"\r\n", b"\n")


@pytest.mark.parametrize(("py", "sh", "args"), MESSAGES)
@pytest.mark.parametrize("stream", ["pipe", "tty", "tty+NO_COLOR"])
def test_bash_and_python_print_identical_bytes(py, sh, args, stream):
    env = base_env(PYTHONPATH=str(ROOT))
    if stream == "tty+NO_COLOR":
        env["NO_COLOR"] = "1"
    capture = through_pipe if stream == "pipe" else through_tty
    from_python = capture(python_cmd(py, args), env)
    from_bash = capture(bash_cmd(sh, args), env)
    assert from_python == from_bash
    assert from_python.endswith(b"\n")


def test_colour_only_on_a_terminal_and_never_with_no_color():
    env = base_env(PYTHONPATH=str(ROOT))
    cmd = bash_cmd("tk_error", ["boom", "fix it"])
    assert through_tty(cmd, env) == "\x1b[31m❌ ERROR: boom\x1b[0m\n  ↳ fix it\n".encode()
    assert through_pipe(cmd, env) == "❌ ERROR: boom\n  ↳ fix it\n".encode()
    assert through_tty(cmd, {**env, "NO_COLOR": "1"}) == "❌ ERROR: boom\n  ↳ fix it\n".encode()


def test_every_verdict_keyword_matches_the_agent_regex():
    env = base_env(PYTHONPATH=str(ROOT))
    for func, args in [("success", ["x"]), ("warning", ["x"]), ("error", ["x"]), ("resume", ["7"])]:
        first_line = through_pipe(python_cmd(func, args), env).decode().splitlines()[0]
        assert TAGGED.match(first_line), first_line


def test_bash_exit_codes_match_python():
    script = "source scripts/lib/protocol.sh; " + "; ".join(
        f'echo {name}=$TK_EXIT_{name}' for name in ExitCode.__members__
    )
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert dict(line.split("=") for line in out.split()) == {n: str(int(c)) for n, c in ExitCode.__members__.items()}


def test_tk_die_prints_the_error_and_exits_with_its_code():
    proc = subprocess.run(["bash", "-c", 'source scripts/lib/protocol.sh; tk_die "$TK_EXIT_DIVERGED" bad "lower lr"'],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 3
    assert proc.stdout == "❌ ERROR: bad\n  ↳ lower lr\n"
    assert not re.search(r"\x1b", proc.stdout)


def test_a_reader_that_goes_away_does_not_stop_the_writer(tmp_path):
    code = (
        "import time\n"
        "from trainkit.core import protocol\n"
        "protocol.section('TRAINING-CPU', 'step 1/3')\n"
        "time.sleep(0.5)\n"
        "for step in (2, 3):\n"
        "    protocol.section('TRAINING-CPU', f'step {step}/3')\n"
        "protocol.success('training complete')\n"
        "open('done', 'w').write('yes')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                            env={**base_env(), "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline() == b"[TRAINING-CPU] step 1/3\n"
    proc.stdout.close()  # the tee or terminal that read it is gone
    assert proc.wait(timeout=30) == 0
    assert (tmp_path / "done").read_text() == "yes"


def test_ctrl_c_during_a_check_is_one_error_line_and_exit_130_never_a_traceback_or_a_success(tmp_path):
    import signal
    import time

    from conftest import PYTHON

    proc = subprocess.Popen([PYTHON, "scripts/validate_training_config.py", "--config", "configs/smoke.yaml",
                             "--output_dir", str(tmp_path / "o")], cwd=ROOT, env=base_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.0)  # inside main(): importing torch and transformers, or already checking
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the check finished before Ctrl-C arrived")
    assert proc.returncode == 130, out[-2000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    tagged = [line for line in out.splitlines() if TAGGED.match(line)]
    assert tagged[-1] == "❌ ERROR: interrupted (Ctrl-C) before it finished: its checks and results are incomplete"
