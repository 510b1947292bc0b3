"""Where the config's model is, as far as can be known offline: a local folder, the HF cache, or the
architectures trainkit ships (configs/architectures/); and its tokenizer from local files only.

    source = locate_model(config.model.model_name_or_path)
    tokenizer = load_tokenizer(source, report)      # None with a WARNING when it is not on disk
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainkit.core.report import Report

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURES_DIR = ROOT / "configs" / "architectures"
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors")

@dataclass
class ModelSource:
    """Where the model's files are, as far as can be known offline."""

    name: str
    config_dir: Path | None  # a directory holding config.json (and maybe tokenizer files)
    where: str  # "local", "cache", "shipped" or "" when nothing was found
    weights_present: bool


def locate_model(name: str) -> ModelSource:
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return ModelSource(name, path, "local", any((path / f).is_file() for f in WEIGHT_FILES))
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        weights = any(isinstance(try_to_load_from_cache(name, f), str) for f in WEIGHT_FILES)
        return ModelSource(name, Path(cached).parent, "cache", weights)
    shipped = ARCHITECTURES_DIR / name.replace("/", "--")
    if (shipped / "config.json").is_file():
        return ModelSource(name, shipped, "shipped", False)
    return ModelSource(name, None, "", False)


def load_tokenizer(source: ModelSource, report: Report):
    """The model's tokenizer from local files only, or None with a WARNING."""
    from transformers import AutoTokenizer

    if source.where in ("local", "cache"):
        try:
            return AutoTokenizer.from_pretrained(source.config_dir if source.where == "local" else source.name,
                                                 local_files_only=True)
        except (OSError, ValueError):
            pass
    report.warning(f"no tokenizer for {source.name} offline: chat-template and token-length checks skipped",
                   "they run once the model is in the HF cache")
    return None


def known_model_names() -> list[str]:
    """Hub ids this machine knows of: the shipped architectures and the HF cache, for a did-you-mean."""
    names = [d.name.replace("--", "/") for d in ARCHITECTURES_DIR.iterdir() if d.is_dir()]
    try:
        from huggingface_hub import scan_cache_dir

        names += [repo.repo_id for repo in scan_cache_dir().repos if repo.repo_type == "model"]
    except Exception:  # no cache yet, or one huggingface_hub cannot read: no suggestions
        pass
    return sorted(set(names))
