"""Push notifications: one POST per event to each TRAINKIT_NOTIFY_URL, in the shape its host reads, off the
training path, the URL's secret nowhere; a failing webhook is one WARNING per URL. Real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import jsonschema
import pytest

from conftest import ROOT, base_env, load_script, read_json, run_train
from trainkit.core import notify
from trainkit.core.credentials import redact
from trainkit.core.status import EVENTS_FILE, RunStatus

SECRET = "T0KEN-in-the-path-42"


class Hook:
    """A webhook on 127.0.0.1: `answer` is an HTTP status, or None to accept and never answer."""

    def __init__(self, answer: int | None = 200):
        self.posts: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                hook.posts.append({"path": self.path, "headers": dict(self.headers), "raw": raw})
                if answer is None:
                    time.sleep(30)
                    return
                self.send_response(answer)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{SECRET}"

    def bodies(self) -> list[dict]:
        return [json.loads(p["raw"]) for p in self.posts]

    def close(self):
        self.server.shutdown()


@pytest.fixture
def hook():
    served = Hook()
    yield served
    served.close()


STATUS = {"state": "completed", "step": 20, "max_steps": 20, "output_dir": "/runs/weather", "launch_id": "L1"}


def test_the_payload_carries_the_fields_an_agent_reads_and_a_text_a_chat_shows():
    body = notify.payload("completed", STATUS, message="adapter saved to /runs/weather/final", exit_code=0)
    assert {k: body[k] for k in ("event", "state", "step", "max_steps", "exit_code", "output_dir", "run_name",
                                 "launch_id")} == {"event": "completed", "state": "completed", "step": 20,
                                                   "max_steps": 20, "exit_code": 0, "output_dir": "/runs/weather",
                                                   "run_name": "weather", "launch_id": "L1"}
    assert body["text"] == "trainkit weather: completed at step 20/20. adapter saved to /runs/weather/final"
    assert body["host"] and body["time"].endswith("Z")


@pytest.mark.parametrize(("url", "kind"), [
    ("https://discord.com/api/webhooks/1/abc", "discord"), ("https://ntfy.sh/my-topic", "ntfy"),
    ("https://ntfy.example.org/topic", "ntfy"), ("https://hooks.slack.com/services/T/B/x", "json"),
])
def test_discord_and_ntfy_are_recognised_by_host_and_the_rest_get_json(url, kind):
    body = notify.payload("diverged", STATUS, message="loss became nan at step 7", exit_code=3)
    data, headers = notify.request_for(url, body)
    if kind == "discord":
        assert json.loads(data) == {"content": body["text"]}
    elif kind == "ntfy":
        assert data.decode() == body["text"]
        assert headers["Title"] == "trainkit weather: diverged" and headers["Priority"] == "high"
    else:
        assert json.loads(data) == body and json.loads(data)["text"] == body["text"]


def test_only_the_scheme_and_host_of_a_url_are_ever_shown_and_each_url_is_redacted(monkeypatch):
    two = f"https://hooks.slack.com/services/{SECRET} https://ntfy.sh/{SECRET}-2"
    monkeypatch.setenv(notify.URL_ENV, two)
    assert notify.shown(two.split()[0]) == "https://hooks.slack.com/…"
    text = redact(f"failed: {two.split()[1]} and {two.split()[0]}")
    assert SECRET not in text and text == "failed: <TRAINKIT_NOTIFY_URL> and <TRAINKIT_NOTIFY_URL>"


def test_a_delivery_posts_and_is_recorded_in_events(hook, tmp_path, monkeypatch):
    monkeypatch.setenv(notify.URL_ENV, hook.url)
    results = notify.deliver(notify.payload("completed", STATUS, message="done", exit_code=0), tmp_path)
    assert results == [{"url": "http://127.0.0.1/…", "ok": True, "result": "HTTP 200", "sent": "completed"}]
    assert hook.bodies()[0]["event"] == "completed" and hook.posts[0]["path"] == f"/hooks/{SECRET}"
    [event] = [json.loads(line) for line in (tmp_path / EVENTS_FILE).read_text().splitlines()]
    assert (event["event"], event["sent"], event["ok"]) == ("notify", "completed", True)
    jsonschema.validate(event, json.loads((ROOT / "docs" / "events.schema.json").read_text()))
    assert SECRET not in (tmp_path / EVENTS_FILE).read_text()


def test_a_server_error_is_retried_once_and_a_refusal_is_not(tmp_path, monkeypatch):
    monkeypatch.setattr(notify, "RETRY_WAIT", 0.0)
    for answer, tries in ((503, 2), (403, 1)):
        served = Hook(answer)
        monkeypatch.setenv(notify.URL_ENV, served.url)
        [result] = notify.deliver(notify.payload("test", STATUS, message="x"), tmp_path)
        assert (result["ok"], result["result"], len(served.posts)) == (False, f"HTTP {answer}", tries)
        served.close()


def test_a_webhook_that_never_answers_costs_its_timeout_and_no_more(tmp_path, monkeypatch):
    silent = Hook(None)
    monkeypatch.setenv(notify.URL_ENV, silent.url)
    monkeypatch.setenv(notify.TIMEOUT_ENV, "0.5")
    monkeypatch.setattr(notify, "RETRY_WAIT", 0.0)
    started = time.monotonic()
    [result] = notify.deliver(notify.payload("test", STATUS, message="x"), tmp_path)
    assert time.monotonic() - started < 3
    assert not result["ok"] and "timed out" in result["result"]
    silent.close()


def test_a_failed_url_is_warned_about_once_however_many_events_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(notify, "RETRY_WAIT", 0.0)
    monkeypatch.setenv(notify.URL_ENV, f"http://127.0.0.1:9/{SECRET}")  # discard port: refused
    for event in ("started", "slow", "completed"):
        notify.deliver(notify.payload(event, STATUS, message="x"), tmp_path)
    warned: set[str] = set()
    [failed] = notify.failed_urls_to_warn(tmp_path, warned)
    assert failed["url"] == "http://127.0.0.1/…" and "Connection" in failed["result"]
    assert notify.failed_urls_to_warn(tmp_path, warned) == []
    assert SECRET not in "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())


def test_notify_hands_the_post_to_a_detached_sender_and_returns_at_once(hook, tmp_path, monkeypatch):
    monkeypatch.setenv(notify.URL_ENV, hook.url)
    started = time.monotonic()
    assert notify.notify("diverged", tmp_path, message="loss became nan", exit_code=3, status=dict(STATUS))
    assert time.monotonic() - started < 1.0
    deadline = time.time() + 20
    while not hook.posts and time.time() < deadline:
        time.sleep(0.05)
    assert hook.bodies()[0]["exit_code"] == 3


def test_events_the_run_did_not_choose_and_runs_without_a_url_send_nothing(hook, tmp_path, monkeypatch):
    assert not notify.notify("completed", tmp_path, message="x", status=dict(STATUS))  # no URL
    monkeypatch.setenv(notify.URL_ENV, hook.url)
    assert not notify.notify("eval", tmp_path, message="x", status=dict(STATUS)), "eval is off by default"
    assert not notify.notify("slow", tmp_path, message="x", status={**STATUS, "notify_events": ["completed"]})


def test_an_unknown_event_in_notify_events_is_refused_naming_the_choices():
    from trainkit.config.settings import parse
    from trainkit.core.errors import ConfigError

    with pytest.raises(ConfigError, match="notify_events: unknown event.s. finished") as refused:
        parse(["--config", str(ROOT / "configs" / "smoke.yaml"), "--notify_events", "completed", "finished"])
    assert "crash_loop" in refused.value.hint


def test_with_w_and_b_on_the_same_events_become_alerts(tmp_path, monkeypatch):
    import sys

    from trainkit.train import notifications

    alerts = []
    fake = SimpleNamespace(run=SimpleNamespace(alert=lambda **kw: alerts.append(kw)))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    status = RunStatus(tmp_path)
    status.update(step=7, max_steps=20)
    notifications.announce("diverged", status, "loss became nan at step 7", exit_code=3)
    notifications.announce("eval", status, "eval at step 7/20")  # not chosen by default
    assert alerts == [{"title": "trainkit: diverged", "text": "loss became nan at step 7", "level": "ERROR",
                       "wait_duration": notifications.ALERT_WAIT_SECONDS}]


def test_notify_test_reports_each_webhook_and_fails_when_one_does_not_answer(hook, monkeypatch, capsys):
    test_main = load_script("notify_test")
    monkeypatch.setattr(notify, "RETRY_WAIT", 0.0)
    monkeypatch.setenv(notify.URL_ENV, hook.url)
    assert test_main.test_main([]) == 0
    out = capsys.readouterr().out
    assert "[NOTIFY] http://127.0.0.1/…: answered (HTTP 200)" in out and SECRET not in out
    assert hook.bodies()[0]["event"] == "test"
    monkeypatch.setenv(notify.URL_ENV, f"{hook.url} http://127.0.0.1:9/{SECRET}")
    assert test_main.test_main([]) == 1
    assert capsys.readouterr().out.splitlines()[-2].startswith("❌ ERROR: 1 of 2 webhook(s) did not answer")


def test_a_run_posts_started_and_completed_and_writes_the_url_nowhere(hook, tmp_path):
    out = tmp_path / "run"
    run = run_train(out, "--max_steps", "3", env=base_env(TRAINKIT_NOTIFY_URL=hook.url))
    assert run.returncode == 0, run.output[-3000:]
    deadline = time.time() + 20
    while len(hook.posts) < 2 and time.time() < deadline:
        time.sleep(0.05)
    by_event = {b["event"]: b for b in hook.bodies()}
    assert by_event["completed"]["step"] == 3 and by_event["completed"]["exit_code"] == 0
    assert by_event["started"]["message"] == "training started: step 1/3"
    status = read_json(out / "status.json")
    assert status["notify_events"] == list(notify.DEFAULT_EVENTS)
    jsonschema.validate(status, json.loads((ROOT / "docs" / "status.schema.json").read_text()))
    assert SECRET not in run.output
    assert not [p for p in out.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
