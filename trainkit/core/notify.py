"""Push notifications: a walk-away run tells a person (and an agent) the moment it needs one.

    export TRAINKIT_NOTIFY_URL="https://ntfy.sh/<topic> https://hooks.slack.com/services/<...>"
    notify("completed", output_dir, message="adapter saved to outputs/x/final", exit_code=0)

TRAINKIT_NOTIFY_URL (a secret: the URL carries the token) names one webhook or several, separated by
spaces. Each gets an HTTP POST per event:
- by default a JSON document (`payload`): event, state, step, max_steps, exit_code, message, text,
  output_dir, run_name, host, time, launch_id. `text` makes Slack- and Mattermost-style incoming webhooks
  show the message as it is;
- Discord (discord.com, discordapp.com): {"content": text};
- ntfy (a host named ntfy*): the text as a plain body, with Title and Priority headers.

Sending never costs training time and never keeps a process from exiting: `notify` hands the request to
a detached process (`python -m trainkit.core.notify`, the payload on its stdin, the URLs in its
environment, never on a command line) that posts with a timeout of TRAINKIT_NOTIFY_TIMEOUT seconds
(5) and one retry, and records each delivery in events.jsonl (`notify`: the URL's scheme and host
only, the HTTP status or the error). A URL that failed is also marked in output_dir/.trainkit-notify/,
so the run warns once per URL (`failed_urls_to_warn`), not once per event.
The events a run sends are `notify_events` in status.json (trainkit's `notify_events` key; default: all
but eval). Which process sends which event is in trainkit.train.notifications and scripts/supervise.sh.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

URL_ENV = "TRAINKIT_NOTIFY_URL"
TIMEOUT_ENV = "TRAINKIT_NOTIFY_TIMEOUT"
DEFAULT_TIMEOUT = 5.0
RETRY_WAIT = 1.0
MARK_DIR = ".trainkit-notify"
EVENTS = ("started", "eval", "completed", "interrupted", "crash_loop", "diverged", "input_error", "restarting",
          "stalled", "gave_up", "slow", "disk_low", "test")
DEFAULT_EVENTS = tuple(e for e in EVENTS if e not in ("eval", "test"))
# What a person should do first, by event, at the end of the text.
PRIORITY = {"crash_loop": "high", "diverged": "high", "input_error": "high", "gave_up": "high", "stalled": "high",
            "interrupted": "default", "completed": "default", "restarting": "default", "started": "low",
            "eval": "low", "slow": "default", "disk_low": "high", "test": "low"}


def urls(environ=None) -> list[str]:
    environ = os.environ if environ is None else environ
    return environ.get(URL_ENV, "").split()


def shown(url: str) -> str:
    """What may be printed of a webhook URL: its scheme and host; the path and query carry the token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…"


def url_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def payload(event: str, status: dict, *, message: str, exit_code: int | None = None, **extra) -> dict:
    """The JSON body of one event, from the run's status.json (`status`) and the event's own fields."""
    from trainkit.core.credentials import redact_strings

    output_dir = status.get("output_dir") or ""
    run_name = status.get("run_name") or Path(output_dir).name or "trainkit"
    step, max_steps = status.get("step"), status.get("max_steps")
    where = f" at step {step}/{max_steps}" if step is not None and max_steps else ""
    text = f"trainkit {run_name}: {event}{where}. {message}"
    body = {"event": event, "state": status.get("state"), "step": step, "max_steps": max_steps,
            "exit_code": exit_code, "message": message, "text": text, "output_dir": output_dir,
            "run_name": run_name, "host": socket.gethostname(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                       time.gmtime()),
            "launch_id": status.get("launch_id"), **extra}
    return redact_strings(body)


def request_for(url: str, body: dict) -> tuple[bytes, dict]:
    """(data, headers) for `url`: Discord and ntfy by host, JSON for the rest."""
    host = (urlsplit(url).hostname or "").lower()
    if host in ("discord.com", "discordapp.com") or host.endswith((".discord.com", ".discordapp.com")):
        return json.dumps({"content": body["text"]}).encode(), {"Content-Type": "application/json"}
    if host.startswith("ntfy") or ".ntfy." in host:
        return body["text"].encode(), {"Title": f"trainkit {body['run_name']}: {body['event']}",
                                       "Priority": PRIORITY.get(body["event"], "default"),
                                       "Content-Type": "text/plain; charset=utf-8"}
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


def post(url: str, body: dict, timeout: float) -> tuple[bool, str]:
    """One POST with one retry; (delivered, the HTTP status or the error)."""
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen

    data, headers = request_for(url, body)
    outcome = "not sent"
    for attempt in range(2):
        try:
            with urlopen(Request(url, data=data, headers=headers, method="POST"), timeout=timeout) as response:
                return True, f"HTTP {response.status}"
        except HTTPError as exc:
            outcome = f"HTTP {exc.code}"
            if exc.code < 500:
                break  # a refusal will not change on a retry
        except (OSError, ValueError) as exc:  # refused, unreachable, timed out, a malformed URL
            outcome = f"{exc.__class__.__name__}: {getattr(exc, 'reason', exc)}"
        if attempt == 0:
            time.sleep(RETRY_WAIT)
    return False, outcome


def timeout_from_env() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


def deliver(body: dict, output_dir: Path | None) -> list[dict]:
    """Post `body` to every URL, in this process; record each result in events.jsonl and mark failed URLs."""
    results = []
    for url in urls():
        ok, outcome = post(url, body, timeout_from_env())
        results.append({"url": shown(url), "ok": ok, "result": outcome, "sent": body["event"]})
        if output_dir is not None:
            record(output_dir, url, ok, outcome, body["event"])
    return results


def record(output_dir: Path, url: str, ok: bool, outcome: str, event: str) -> None:
    from trainkit.core.status import EVENTS_FILE, now_iso

    try:
        with (output_dir / EVENTS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"time": now_iso(), "event": "notify", "step": None, "sent": event,
                                 "url": shown(url), "ok": ok, "result": outcome}) + "\n")
        if not ok:
            marks = output_dir / MARK_DIR
            marks.mkdir(exist_ok=True)
            (marks / f"{url_id(url)}.failed").write_text(json.dumps({"url": shown(url), "result": outcome}) + "\n")
    except OSError:
        pass  # a notification is a courtesy; a full disk is reported by what writes the checkpoints


def wanted(event: str, status: dict) -> bool:
    chosen = status.get("notify_events")
    return event in (chosen if isinstance(chosen, list) else DEFAULT_EVENTS) or event == "test"


def notify(event: str, output_dir: Path | str, *, message: str, exit_code: int | None = None,
           status: dict | None = None, **extra) -> bool:
    """Hand the event to a detached sender; False when there is nothing to send (no URL, an event not chosen)."""
    from trainkit.core.status import read_json

    output_dir = Path(output_dir)
    if not urls():
        return False
    status = status if status is not None else (read_json(output_dir / "status.json") or {})
    status.setdefault("output_dir", str(output_dir))
    if not wanted(event, status):
        return False
    body = payload(event, status, message=message, exit_code=exit_code, **extra)
    try:
        sender = subprocess.Popen([sys.executable, "-m", "trainkit.core.notify", str(output_dir)],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True, close_fds=True)
        sender.stdin.write(json.dumps(body).encode())
        sender.stdin.close()
    except OSError:
        return False
    return True


def failed_urls_to_warn(output_dir: Path | str, already: set[str]) -> list[dict]:
    """URLs whose delivery failed that this process has not warned about yet (adds them to `already`)."""
    if not urls():
        return []  # called at every logging step: nothing to look at without a webhook
    marks = Path(output_dir) / MARK_DIR
    found = []
    for path in sorted(marks.glob("*.failed")) if marks.is_dir() else []:
        if path.stem in already:
            continue
        already.add(path.stem)
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return found


def test_main(argv: list[str] | None = None) -> int:
    """scripts/notify_test.py: one `test` event to each URL, synchronously, and which answered."""
    import argparse

    from trainkit.core import protocol

    argparse.ArgumentParser(prog="scripts/notify_test.py", description=__doc__.split("\n\n")[0]).parse_args(argv)
    if not urls():
        protocol.error(f"{URL_ENV} is not set: there is nowhere to send",
                       f'export {URL_ENV}="https://ntfy.sh/<topic>" (several: separated by spaces), then re-run')
        return 1
    body = payload("test", {"output_dir": "", "run_name": "notify_test", "state": None},
                   message="a test from scripts/notify_test.py: this webhook will hear from your runs")
    results = deliver(body, None)
    for result in results:
        protocol.section("NOTIFY", f"{result['url']}: {'answered' if result['ok'] else 'failed'} ({result['result']})")
    failed = [r["url"] for r in results if not r["ok"]]
    if failed:
        protocol.error(f"{len(failed)} of {len(results)} webhook(s) did not answer: {', '.join(failed)}",
                       f"check each URL in {URL_ENV} (the lines above say what each answered)")
        return 1
    protocol.success(f"{len(results)} webhook(s) answered the test event")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The detached sender: the payload on stdin, the URLs in the environment, output_dir as the argument."""
    argv = list(sys.argv[1:] if argv is None else argv)
    body = json.loads(sys.stdin.read())
    deliver(body, Path(argv[0]) if argv else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
