"""Warnings a user cannot act on are silenced in one list; every other warning still reaches the log."""

from __future__ import annotations

import warnings

import pytest

from trainkit.core.library_warnings import UNACTIONABLE, silence_unactionable


@pytest.fixture
def recorded():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_unactionable()
        yield caught


def test_the_transformers_is_gradient_checkpointing_deprecation_is_silenced(recorded):
    import transformers

    config = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2)
    model = transformers.LlamaForCausalLM(config)
    assert model.is_gradient_checkpointing is False  # the real property, which warns
    assert [str(w.message) for w in recorded] == []


def test_every_other_warning_still_gets_through(recorded):
    warnings.warn("`is_gradient_checkpointing` is deprecated", DeprecationWarning, stacklevel=1)  # another category
    warnings.warn("something the user set is deprecated", FutureWarning, stacklevel=1)
    warnings.warn("tokenizer has no pad token", UserWarning, stacklevel=1)
    assert [str(w.message) for w in recorded] == [
        "`is_gradient_checkpointing` is deprecated", "something the user set is deprecated",
        "tokenizer has no pad token"]


def test_each_silenced_warning_is_listed_with_its_category_message_and_reason():
    for category, message, why in UNACTIONABLE:
        assert issubclass(category, Warning) and message and len(why) > 20


def test_the_smoke_run_log_has_no_silenced_warning(smoke_run):
    _, run = smoke_run
    assert "is_gradient_checkpointing" not in run.output
    assert "FutureWarning" not in run.output


def test_reading_the_m4_config_prints_no_deprecation_warning_a_config_cannot_fix():
    import warnings

    from conftest import ROOT
    from trainkit.config.settings import parse

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parse(["--config", str(ROOT / "configs" / "training_config_m4.yaml")])
    assert not [w for w in caught if "gradient_checkpointing` is deprecated" in str(w.message)]
