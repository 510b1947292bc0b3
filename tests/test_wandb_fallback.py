"""W&B is never a reason to stop training: one that fails, refuses the key or never answers costs a WARNING, and
the run logs offline under the same run id (stand-ins on 127.0.0.1 as WANDB_BASE_URL; no network)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT, base_env, load_script, read_json, run_train
from trainkit.core import wandb_reach
from trainkit.train import tracking

FAKE_KEY = "f" * 40
validate_environment = load_script("validate_environment")


@pytest.fixture
def standin():
    """start(answer) -> base URL of a local W&B stand-in: an HTTP status to answer every POST with, or None to
    accept and never answer."""
    servers = []

    def start(answer: int | None, body: bytes = b"oops") -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if answer is None:
                    time.sleep(120)
                    return
                self.send_response(answer)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()


def online_env(url: str, **extra) -> dict:
    env = base_env(WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=url, **extra)
    env.pop("WANDB_MODE")
    return env


@pytest.mark.parametrize("answer", [500, None], ids=["answers-500", "never-answers"])
def test_a_failing_or_silent_w_and_b_costs_one_warning_and_the_run_trains_offline_under_its_run_id(
        answer, standin, tmp_path):
    url = standin(answer)
    out = tmp_path / "out"
    began = time.monotonic()
    run = run_train(out, "--max_steps", "5", "--report_to", "wandb", "--wandb_timeout_seconds", "2",
                    env=online_env(url))
    took = time.monotonic() - began
    assert run.returncode == 0, run.output[-3000:]
    assert took < 60, f"{took:.0f} s: W&B's own defaults wait 90 s and more"
    [warning] = [line for line in run.lines if line.startswith("⚠️ WARNING: W&B")]
    host = url.removeprefix("http://")
    why = f"{host} answered HTTP 500" if answer else f"{host} did not answer within 2 s"
    run_id = read_json(out / "wandb_run.json")["run_id"]
    assert warning.startswith(f"⚠️ WARNING: W&B is not answering ({why}): the run logs offline in {out}/wandb/"
                              f"offline-run-")
    assert warning.endswith(f"under run id {run_id}")
    assert "upload it later with: wandb sync " in run.output
    status = read_json(out / "status.json")
    assert (status["state"], status["wandb_mode"], status["wandb_url"]) == ("completed", "offline", None)
    [event] = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()
               if '"wandb_offline"' in line]
    assert event["run_id"] == run_id and event["reason"] == why
    assert list((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert FAKE_KEY not in run.output


def test_a_relaunch_with_w_and_b_answering_continues_the_same_run_online(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / tracking.RUN_FILE).write_text(json.dumps({"run_id": "5eed1d00", "project": "p"}))
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.delenv("WANDB_MODE")
    for name in ("WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    import wandb

    started = []
    monkeypatch.setattr(wandb_reach, "probe", lambda timeout: wandb_reach.Reach(True, "ok", "accepted"))
    monkeypatch.setattr(wandb, "init", lambda **kwargs: started.append(kwargs))

    class Status:
        data = {}

        def update(self, **fields):
            self.data.update(fields)

        def event(self, *args, **fields):
            raise AssertionError("no fallback event when W&B answers")

    assert tracking.prepare_wandb(out, "p", ["wandb"]) == "5eed1d00"
    status = Status()
    assert tracking.start_wandb(out, "p", ["wandb"], 5.0, status, warn=pytest.fail) == "online"
    [kwargs] = started
    assert (kwargs["id"], kwargs["resume"], kwargs["settings"].init_timeout) == ("5eed1d00", "allow", 5.0)
    assert status.data["wandb_mode"] == "online"


@pytest.mark.parametrize(("answer", "body", "expected"), [
    (500, b"oops", "W&B is not answering (HOST answered HTTP 500): the run will log offline and can be synced later"),
    (None, b"", "W&B is not answering (HOST did not answer within 1 s): the run will log offline and can be synced "
                "later"),
    (401, b"", "W&B API key found (WANDB_API_KEY) but HOST rejected the API key (HTTP 401): training will log "
               "offline"),
    (200, b'{"data": {"viewer": {"id": "u1"}}}', None),
])
def test_the_setup_check_asks_w_and_b_about_the_key_warns_and_goes_on(answer, body, expected, standin, monkeypatch,
                                                                      capsys):
    url = standin(answer, body)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    monkeypatch.setenv("TRAINKIT_WANDB_CHECK_SECONDS", "1")
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.chdir(ROOT)
    assert validate_environment.main(["--env", "cpu"]) == 0
    out = capsys.readouterr().out
    host = url.removeprefix("http://")
    if expected is None:
        assert f"[PREFLIGHT] W&B API key found (WANDB_API_KEY); {host} accepted the API key" in out
        assert "⚠️ WARNING: W&B" not in out
    else:
        assert f"⚠️ WARNING: {expected.replace('HOST', host)}" in out
    if answer == 401:
        assert "wandb login --relogin" in out
    assert FAKE_KEY not in out


def test_a_finish_that_cannot_upload_in_time_is_a_warning_with_the_sync_command(tmp_path, monkeypatch):
    import wandb

    class Run:
        dir = str(tmp_path / "wandb" / "run-1" / "files")

        def finish(self):
            raise TimeoutError("Timed out waiting for the run to finish")

    monkeypatch.setattr(wandb, "run", Run())
    said = []
    tracking.finish_wandb(2.0, lambda message, hint: said.append((message, hint)))
    [(message, hint)] = said
    assert message.startswith("W&B did not finish uploading within 2 s (TimeoutError: ")
    assert hint == f"upload it with: wandb sync {tmp_path / 'wandb' / 'run-1'}"
