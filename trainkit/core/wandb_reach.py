"""Whether W&B answers with this key, asked once with a bound: the setup check and each train.py start ask.

    reach = probe(timeout=10)          # Reach(ok, kind, detail); kind: ok, rejected, unreachable, failing
    reach.ok, reach.detail             # "api.wandb.ai answered HTTP 500", never the key

W&B's own wandb.init waits up to 90 s (init_timeout) and then raises, and an outage or a proxy that
never answers looks the same to it as a slow start. One GraphQL `viewer` query with a timeout tells the
three cases apart (answering, key rejected, not reachable) before a paid run depends on it. The key comes
from WANDB_API_KEY or ~/.netrc and is sent as W&B's SDK sends it (basic auth, user "api"); it is never
printed.
"""

from __future__ import annotations

import base64
import json
import netrc
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlparse

DEFAULT_BASE_URL = "https://api.wandb.ai"
VIEWER_QUERY = {"query": "query Viewer { viewer { id } }"}


@dataclass(frozen=True)
class Reach:
    ok: bool
    kind: str  # ok, rejected (the key), unreachable (no answer in time, DNS, refused), failing (5xx, a proxy)
    detail: str


def base_url() -> str:
    return (os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def api_key() -> str | None:
    """WANDB_API_KEY, else ~/.netrc's entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    try:
        entry = netrc.netrc().authenticators(urlparse(base_url()).hostname or "")
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry else None


def probe(timeout: float, key: str | None = None) -> Reach:
    """Ask W&B who this key belongs to, waiting at most TIMEOUT seconds."""
    url, key = base_url(), key or api_key()
    host = urlparse(url).netloc or url
    if not key:
        return Reach(False, "rejected", f"no W&B API key for {host}")
    auth = base64.b64encode(f"api:{key}".encode()).decode()
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps(VIEWER_QUERY).encode(), method="POST",
                                     headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json",
                                              "User-Agent": "trainkit"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read().decode("utf-8", "replace") or "{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return Reach(False, "rejected", f"{host} rejected the API key (HTTP {exc.code})")
        return Reach(False, "failing", f"{host} answered HTTP {exc.code}")
    except (TimeoutError, OSError) as exc:  # URLError, refused, DNS, a socket timeout
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return Reach(False, "unreachable", f"{host} did not answer within {timeout:g} s")
        return Reach(False, "unreachable", f"{host} could not be reached ({reason})")
    except ValueError:
        return Reach(False, "failing", f"{host} answered something that is not W&B's API (not JSON)")
    viewer = (body.get("data") or {}).get("viewer") if isinstance(body, dict) else None
    if not viewer:
        return Reach(False, "rejected", f"{host} does not know this API key")
    return Reach(True, "ok", f"{host} accepted the API key")
