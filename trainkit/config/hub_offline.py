"""After setup, training needs no network but W&B: a model whole on disk is read with the Hub switched off.

transformers, the tokenizer and datasets each ask the Hugging Face Hub for commit hashes and files at
every start, and a Hub that accepts connections but never answers (an outage, a black-holed proxy)
holds a start for good. When the model's config, every weight file and the tokenizer are on this
machine (a local folder, or a complete snapshot in the HF cache), a start switches the Hub off for
itself and its children (HF_HUB_OFFLINE=1) before any library asks: no round trip, no wait, and the
snapshot the cache's ref names (the commit setup downloaded) is what the run trains: the run's fingerprint
records it, and a relaunch that would load another snapshot (the cache updated under the run) is refused
with the --model_revision that loads the recorded one.

    note, commit = offline_if_cached("Qwen/Qwen2.5-7B-Instruct", revision=None)  # a preflight line and the
                                                                                # snapshot, or (None, None)
    whole, why = cached_completely(name, revision)                         # from disk only
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

WEIGHTS = ("model.safetensors", "pytorch_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER = ("tokenizer_config.json",)
# Bounds on the Hub for what must still be fetched (huggingface_hub reads them once, at import).
HUB_TIMEOUTS = {"HF_HUB_ETAG_TIMEOUT": "10", "HF_HUB_DOWNLOAD_TIMEOUT": "60"}


def bound_hub_waits() -> None:
    """Timeouts on every Hub request this process and its children make, unless the user set their own."""
    for key, value in HUB_TIMEOUTS.items():
        os.environ.setdefault(key, value)


def _weights_complete(folder: Path) -> tuple[bool, str]:
    for index in INDEXES:
        if (folder / index).is_file():
            try:
                shards = set(json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError):
                return False, f"{index} is unreadable"
            missing = sorted(s for s in shards if not (folder / s).is_file())
            return (not missing), (f"weight shards missing: {', '.join(missing[:3])}" if missing else "")
    if any((folder / w).is_file() for w in WEIGHTS):
        return True, ""
    return False, "no weight files"


def cached_completely(name: str, revision: str | None = None) -> tuple[bool, str]:
    """Whether NAME (a local folder or a hub id) is whole on this disk: config.json, every weight file and the
    tokenizer. Returns (whole, the snapshot's commit hash for a cached hub id, or why not)."""
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        whole, why = _weights_complete(path)
        if whole and not all((path / t).is_file() for t in TOKENIZER):
            whole, why = False, "no tokenizer_config.json"
        return whole, "" if whole else why
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # a malformed id or revision: not in the cache, as far as this check can tell
        return False, "not in the HF cache"
    if not isinstance(config, str):
        return False, "not in the HF cache"
    snapshot = Path(config).parent
    whole, why = _weights_complete(snapshot)
    if whole and not all((snapshot / t).is_file() for t in TOKENIZER):
        whole, why = False, "no tokenizer_config.json in the cached snapshot"
    return whole, snapshot.name if whole else why


def go_offline() -> None:
    """HF_HUB_OFFLINE=1 for this process (the libraries already imported included) and its children."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    for module in ("huggingface_hub.constants", "datasets.config"):
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, "HF_HUB_OFFLINE"):
            loaded.HF_HUB_OFFLINE = True


def offline_if_cached(name: str | None, revision: str | None = None) -> tuple[str | None, str | None]:
    """Switch the Hub off when NAME is whole on disk: (the line that says so, the cached snapshot's commit hash);
    (None, None) when it is not, and the Hub stays as it was."""
    bound_hub_waits()
    if not name:
        return None, None
    whole, detail = cached_completely(name, revision)
    if not whole:
        return None, None
    already = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    go_offline()
    where = f"the local cache (snapshot {detail[:12]})" if detail else f"the local folder {name}"
    return (f"model {name} from {where}; no Hub access during training"
            + (" (HF_HUB_OFFLINE=1 was already set)" if already else " (HF_HUB_OFFLINE=1 for this run)")), \
        detail or None
