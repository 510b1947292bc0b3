"""A config preflight that passed, remembered so that the next launch need not repeat it.

`make demo` and an agent's setup-then-launch run validate_training_config.py twice on the same
inputs within a minute: once from setup.sh, once from train.sh. Each costs the library imports
and a pass over the data. The checker records a pass here; train.sh asks (without importing
torch) whether the same inputs passed recently, and then prints one line and the warnings the
pass found instead of the whole preflight. train.py still checks everything at its own start.

"The same inputs": the command line, the config file's bytes, the size and modification time of
every file or folder the config or the command line names (data, model, chat template), the
trainkit source, the Python and the installed library versions, and the environment variables
the checks read. Anything else changed since counts as unchanged, which is why a record expires
after MAX_AGE_SECONDS.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path

from trainkit.config.settings import load_yaml
from trainkit.core.errors import ConfigError
from trainkit.core.report import OK, WARNING, Finding
from trainkit.core.status import world_size

MAX_AGE_SECONDS = 3600
# Environment the checks read: the platform's size, Hub access and tokens (presence only), W&B.
ENV_KEYS = ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE",
            "WANDB_MODE", "CUDA_VISIBLE_DEVICES")
SECRET_KEYS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY")
OUTPUTS = ("output_dir", "logging_dir")
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "mlx", "mlx-lm")
PACKAGE = Path(__file__).resolve().parents[1]


def _stat(path: Path) -> list:
    try:
        st = path.stat()
    except OSError:
        return [str(path), None]
    entry = [str(path.resolve()), st.st_size, st.st_mtime_ns]
    if path.is_dir():
        entry.append(sorted((child.name, *_stat(child)[1:]) for child in path.iterdir() if child.is_file()))
    return entry


def _named_paths(values) -> list[Path]:
    """Every string among VALUES (nested) that names an existing file or folder."""
    found: list[Path] = []
    stack = [values]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, str) and value and len(value) < 4096 and "\n" not in value:
            path = Path(value).expanduser()
            try:
                if path.exists():
                    found.append(path)
            except OSError:
                pass
    return found


def _versions() -> dict[str, str | None]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def inputs_digest(argv: list[str]) -> str | None:
    """A digest of everything the config preflight of ARGV reads; None without a readable --config."""
    configs = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"]
    config = configs[-1] if configs else None
    if not config or not Path(config).is_file():
        return None
    try:
        values = load_yaml(config)
    except ConfigError:
        return None
    # The output dir changes as runs train in it, and train.py checks its disk again at its start.
    inputs = {key: value for key, value in values.items() if key not in OUTPUTS}
    argv_inputs = [arg for i, arg in enumerate(argv) if not (i and argv[i - 1] in ("--output_dir", "--remember"))]
    source = sorted((str(p.relative_to(PACKAGE)), p.stat().st_size, p.stat().st_mtime_ns)
                    for p in PACKAGE.rglob("*.py"))
    state = {
        # Not the output dir: the checks of a config do not depend on it (train.py checks its disk at its start).
        "argv": [a for i, a in enumerate(argv) if a not in ("--config", config, "--output_dir")
                 and not a.startswith("--output_dir=") and not (i and argv[i - 1] == "--output_dir")],
        "config": [str(Path(config).resolve()), Path(config).read_bytes().hex()],
        "paths": sorted(_stat(p) for p in _named_paths([inputs, argv_inputs])),
        "env": {key: os.environ.get(key) for key in ENV_KEYS},
        "world_size": world_size(),
        "secrets": {key: bool(os.environ.get(key)) for key in SECRET_KEYS},
        "python": sys.executable,
        "libraries": _versions(),
        "source": source,
        "cwd": os.getcwd(),
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def remember(folder: Path, argv: list[str], findings: list[Finding]) -> None:
    """Record that ARGV's preflight passed with FINDINGS (no errors); a failure to write is no error."""
    digest = inputs_digest(argv)
    if digest is None:
        return
    record = {"passed_at": time.time(), "findings": [[f.level, f.message, f.hint] for f in findings]}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f"{digest}.json.partial"
        partial.write_text(json.dumps(record), encoding="utf-8")
        partial.replace(folder / f"{digest}.json")
    except OSError:
        pass


def recalled(folder: Path, argv: list[str], now: float | None = None) -> dict | None:
    """The record of a pass on exactly ARGV's inputs within MAX_AGE_SECONDS, or None."""
    digest = inputs_digest(argv)
    if digest is None:
        return None
    try:
        record = json.loads((folder / f"{digest}.json").read_text(encoding="utf-8"))
        age = (time.time() if now is None else now) - float(record["passed_at"])
        findings = [Finding(level, message, hint) for level, message, hint in record["findings"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not 0 <= age <= MAX_AGE_SECONDS or any(f.level not in (OK, WARNING) for f in findings):
        return None
    return {"age": age, "passed_at": float(record["passed_at"]), "findings": findings}
