"""After setup, training needs no network but W&B: a model whole in the HF cache trains, evaluates and samples with
a Hub that never answers (HF_ENDPOINT on 127.0.0.1, HF_HUB_OFFLINE unset), and a model missing from the cache gets
one ERROR in bounded time."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import PYTHON, ROOT, SMOKE, base_env
from trainkit.config.hub_offline import cached_completely

REPO_ID = "trainkit-test/tiny-chat"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def silent_hub():
    """An HF_ENDPOINT that accepts connections and never answers: a Hub outage, a black-holed proxy."""

    class Handler(BaseHTTPRequestHandler):
        def handle_one_request(self):
            time.sleep(600)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory, tiny_model):
    """An HF cache holding the tiny model as the hub id trainkit-test/tiny-chat, as `hf download` lays it out."""
    home = tmp_path_factory.mktemp("hf")
    repo = home / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    shutil.copytree(tiny_model, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return home


def hub_env(hf_home, endpoint: str) -> dict:
    env = base_env(HF_HOME=hf_home, HF_ENDPOINT=endpoint)
    env.pop("HF_HUB_OFFLINE")
    env.pop("HF_DATASETS_OFFLINE", None)
    return env


def run(argv: list[str], env: dict, timeout: float = 180) -> tuple[int, str, float]:
    began = time.monotonic()
    done = subprocess.run([PYTHON, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - began


def test_a_model_whole_in_the_cache_trains_evaluates_and_samples_with_a_hub_that_never_answers(
        hf_home, silent_hub, tmp_path):
    env = hub_env(hf_home, silent_hub)
    out = tmp_path / "out"
    code, output, took = run(["train.py", "--config", str(SMOKE), "--model_name_or_path", REPO_ID, "--output_dir",
                              str(out), "--max_steps", "3", "--report_to", "none"], env)
    assert code == 0, output[-3000:]
    assert took < 90, f"{took:.0f} s"
    assert (f"[PREFLIGHT] model {REPO_ID} from the local cache (snapshot {COMMIT[:12]}); no Hub access during "
            "training (HF_HUB_OFFLINE=1 for this run)") in output
    adapter = out / "final"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == REPO_ID
    # The run is pinned to the snapshot it trained from (trainkit.train.fingerprint).
    assert json.loads((out / "run_fingerprint.json").read_text())["defining"]["model_snapshot"] == COMMIT

    code, output, _ = run(["scripts/sample.py", "--adapter", str(adapter), "--prompt", "hello", "--max-new-tokens",
                           "4"], env)
    assert code == 0 and output.splitlines()[-1].startswith("✅ SUCCESS:"), output[-3000:]
    code, output, _ = run(["scripts/evaluate.py", "--adapter", str(adapter), "--data",
                           "data/sample/validation.jsonl", "--n", "2", "--max-new-tokens", "4"], env)
    assert code == 0 and output.splitlines()[-1].startswith("✅ SUCCESS:"), output[-3000:]


def test_a_model_missing_from_the_cache_with_the_hub_silent_is_one_error_in_bounded_time(hf_home, silent_hub, tmp_path):
    env = hub_env(hf_home, silent_hub)
    env["HF_HUB_ETAG_TIMEOUT"] = "3"
    code, output, took = run(["train.py", "--config", str(SMOKE), "--model_name_or_path", "trainkit-test/absent",
                              "--output_dir", str(tmp_path / "out"), "--max_steps", "3", "--report_to", "none"], env)
    assert code == 1, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("❌ ERROR:")]
    assert len(errors) == 1 and "trainkit-test/absent" in errors[0], output[-3000:]
    assert took < 60, f"{took:.0f} s"
    assert "Traceback" not in output


def test_a_snapshot_missing_a_weight_shard_or_its_tokenizer_is_not_whole(tmp_path, tiny_model):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    assert cached_completely(str(folder)) == (True, "")
    (folder / "tokenizer_config.json").unlink()
    assert cached_completely(str(folder)) == (False, "no tokenizer_config.json")
    shutil.copy(tiny_model / "tokenizer_config.json", folder)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    whole, why = cached_completely(str(folder))
    assert not whole and why.startswith("weight shards missing: model-00001-of-00002.safetensors")


def test_a_cache_updated_under_a_run_is_refused_with_the_revision_the_run_trained_from(tmp_path, monkeypatch,
                                                                                      tiny_model):
    from huggingface_hub import constants

    from trainkit.train import fingerprint

    hub = tmp_path / "hub"
    repo = hub / f"models--{REPO_ID.replace('/', '--')}"
    newer = "89abcdef" * 5
    for commit in (COMMIT, newer):
        shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(newer)  # `hf download` again, after the run started from COMMIT
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    assert cached_completely(REPO_ID) == (True, newer)
    assert cached_completely(REPO_ID, revision=COMMIT) == (True, COMMIT)

    recorded = {"defining": {"model_snapshot": COMMIT}, "length": {}, "cadence": {}}
    current = {"defining": {"model_snapshot": newer}, "length": {}, "cadence": {}}
    changes = fingerprint.compare(recorded, current)
    assert changes.blocking == [f"model_snapshot: {COMMIT} -> {newer}"]
    assert fingerprint.resume_flags(changes.blocking) == f"--model_revision {COMMIT}"
