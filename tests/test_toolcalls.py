"""The tool-call parsers and figures on hand-written generations: no model, no training."""

from __future__ import annotations

import json

import pytest

from trainkit.evaluate import toolcalls
from trainkit.evaluate.toolcalls import Figures, ToolCall, parse_hermes, parse_llama3, parse_mistral, score_turn

WEATHER = ToolCall("get_current_weather", {"location": "Oslo, Norway", "unit": "celsius"})


def call_message(arguments) -> dict:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "get_current_weather", "arguments": arguments}}]}


def figures_of(expected: tuple[ToolCall, ...], generated: str) -> dict:
    figures = Figures()
    figures.add(score_turn(expected, parse_hermes(generated)))
    return figures.rates()


def test_a_valid_qwen_call_parses_and_scores_full_marks():
    text = ('<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "Oslo, Norway", '
            '"unit": "celsius"}}\n</tool_call>')
    reply = parse_hermes(text)
    assert reply.well_formed and reply.calls == (WEATHER,)
    assert figures_of((WEATHER,), text) == {
        "tool_call_parse_rate": 1.0, "tool_name_accuracy": 1.0, "tool_args_exact": 1.0, "tool_args_keys": 1.0,
        "false_call_rate": None, "arguments_as_string_rate": 0.0,
    }


def test_the_tiny_models_call_without_newlines_parses_the_same_way():
    text = ('<tool_call>{"name": "get_current_weather", "arguments": {"unit": "celsius", '
            '"location": "Oslo, Norway"}}</tool_call>')
    assert parse_hermes(text).calls == (WEATHER,)
    assert score_turn((WEATHER,), parse_hermes(text)).verdict == "ok"


def test_invalid_json_inside_the_tags_is_an_attempt_that_did_not_parse():
    reply = parse_hermes('<tool_call>{"name": "get_current_weather", "arguments": {"location": "Oslo"</tool_call>')
    assert reply.attempted and not reply.well_formed and reply.errors[0].startswith("invalid JSON")
    score = score_turn((WEATHER,), reply)
    assert (score.parsed, score.name_matches, score.verdict) == (False, 0, "malformed call")


def test_a_call_cut_off_before_its_closing_tag_does_not_parse():
    reply = parse_hermes('<tool_call>{"name": "get_current_weather", "arguments": {}}')
    assert reply.attempted and reply.errors == ("no closing </tool_call>",)


def test_a_call_to_the_wrong_function_parses_but_scores_no_name_and_no_arguments():
    text = ('<tool_call>{"name": "get_forecast", "arguments": {"location": "Oslo, Norway", '
            '"unit": "celsius"}}</tool_call>')
    assert figures_of((WEATHER,), text) == {
        "tool_call_parse_rate": 1.0, "tool_name_accuracy": 0.0, "tool_args_exact": 0.0, "tool_args_keys": 0.0,
        "false_call_rate": None, "arguments_as_string_rate": 0.0,
    }
    assert score_turn((WEATHER,), parse_hermes(text)).verdict == "wrong name"


def test_arguments_as_a_json_string_are_the_double_encoding_failure():
    inner = json.dumps({"location": "Oslo, Norway", "unit": "celsius"})
    text = "<tool_call>" + json.dumps({"name": "get_current_weather", "arguments": inner}) + "</tool_call>"
    reply = parse_hermes(text)
    assert reply.well_formed and reply.calls[0].arguments == inner
    rates = figures_of((WEATHER,), text)
    assert rates["arguments_as_string_rate"] == 1.0
    assert rates["tool_name_accuracy"] == 1.0 and rates["tool_args_exact"] == rates["tool_args_keys"] == 0.0
    assert score_turn((WEATHER,), reply).verdict == "arguments as string"


def test_text_where_a_call_was_due_scores_zero_and_is_no_false_call():
    rates = figures_of((WEATHER,), "It is sunny in Oslo, probably.")
    assert rates["tool_call_parse_rate"] == 0.0 and rates["tool_name_accuracy"] == 0.0
    assert rates["false_call_rate"] is None and rates["arguments_as_string_rate"] is None
    assert score_turn((WEATHER,), parse_hermes("It is sunny.")).verdict == "no call"


def test_a_call_where_text_was_due_is_a_false_call_even_when_malformed():
    good = '<tool_call>{"name": "get_current_weather", "arguments": {"location": "Oslo"}}</tool_call>'
    assert figures_of((), good)["false_call_rate"] == 1.0
    assert figures_of((), "<tool_call>{not json")["false_call_rate"] == 1.0
    assert figures_of((), "Lovely day for it!")["false_call_rate"] == 0.0
    assert score_turn((), parse_hermes(good)).verdict == "false call"


def test_other_arguments_with_the_same_keys_score_keys_but_not_exact():
    text = ('<tool_call>{"name": "get_current_weather", "arguments": {"location": "Bergen, Norway", '
            '"unit": "celsius"}}</tool_call>')
    rates = figures_of((WEATHER,), text)
    assert (rates["tool_args_exact"], rates["tool_args_keys"]) == (0.0, 1.0)
    assert score_turn((WEATHER,), parse_hermes(text)).verdict == "wrong arguments"


def test_expected_arguments_given_as_a_json_string_compare_as_objects():
    as_string = toolcalls.expected_calls(call_message(json.dumps(WEATHER.arguments)))
    as_object = toolcalls.expected_calls(call_message(WEATHER.arguments))
    assert as_string == as_object == (WEATHER,)
    text = "<tool_call>" + WEATHER.as_json() + "</tool_call>"
    assert figures_of(as_string, text)["tool_args_exact"] == 1.0


def test_parallel_calls_are_paired_whatever_their_order():
    forecast = ToolCall("get_forecast", {"location": "Oslo, Norway", "days": 2})
    text = f"<tool_call>{forecast.as_json()}</tool_call>\n<tool_call>{WEATHER.as_json()}</tool_call>"
    rates = figures_of((WEATHER, forecast), text)
    assert rates["tool_name_accuracy"] == rates["tool_args_exact"] == 1.0


def test_json_equality_tells_booleans_from_numbers_and_ignores_key_order():
    assert toolcalls.json_equal({"a": 1, "b": [1.0, "x"]}, {"b": [1, "x"], "a": 1.0})
    assert not toolcalls.json_equal({"metric": True}, {"metric": 1})
    assert not toolcalls.json_equal({"a": None}, {"a": 0})


def test_llama3_replies_are_json_objects_with_parameters():
    reply = parse_llama3('<|python_tag|>{"name": "get_current_weather", "parameters": {"location": "Oslo, Norway", '
                         '"unit": "celsius"}}')
    assert reply.well_formed and reply.calls == (WEATHER,)
    assert not parse_llama3("It is sunny.").attempted
    assert parse_llama3('{"name": "get_current_weather", "parameters": ').errors


def test_mistral_replies_follow_the_tool_calls_token_in_either_layout():
    listed = parse_mistral('[TOOL_CALLS][{"name": "get_current_weather", "arguments": {"location": "Oslo, Norway", '
                           '"unit": "celsius"}}]')
    named = parse_mistral('[TOOL_CALLS]get_current_weather[ARGS]{"location": "Oslo, Norway", "unit": "celsius"}')
    assert listed.calls == named.calls == (WEATHER,)
    assert not parse_mistral("It is sunny.").attempted
    assert parse_mistral("[TOOL_CALLS][{oops").errors


@pytest.mark.parametrize(
    ("template", "family"),
    [
        ("{% for call in message.tool_calls %}<tool_call>\n{{ call | tojson }}\n</tool_call>{% endfor %}", "hermes"),
        ("{{- '[TOOL_CALLS][' }}{% for call in calls %}{{ call | tojson }}{% endfor %}", "mistral"),
        ("<|start_header_id|>ipython<|end_header_id|> {\"name\": ..., \"parameters\": ...}", "llama3"),
        ({"default": "plain", "tool_use": "<tool_call>{{ x }}</tool_call>"}, "hermes"),
    ],
)
def test_the_parser_is_chosen_by_what_the_chat_template_renders(template, family):
    assert toolcalls.parser_for(template)[0] == family


def test_a_template_without_tool_calls_has_no_parser():
    assert toolcalls.parser_for("{% for m in messages %}{{ m.content }}{% endfor %}") is None
    assert toolcalls.parser_for(None) is None


def test_the_tiny_models_template_renders_calls_the_hermes_parser_reads_back(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    family, parse = toolcalls.parser_for(tokenizer.chat_template)
    assert family == "hermes"
    messages = [{"role": "user", "content": "Weather in Oslo?"}, call_message(WEATHER.arguments)]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    reply = rendered.split("<|im_start|>assistant\n", 1)[1].removesuffix("\n").removesuffix("<|im_end|>")
    assert parse(reply).calls == (WEATHER,)


def test_qwen2_5s_own_tool_call_rendering_is_read_by_the_hermes_parser():
    qwen_template = ('{%- for tool_call in message.tool_calls %}{{- \'\\n<tool_call>\\n{"name": "\' }}'
                     '{{- tool_call.name }}{{- \'", "arguments": \' }}{{- tool_call.arguments | tojson }}'
                     '{{- \'}\\n</tool_call>\' }}{%- endfor %}')
    assert toolcalls.parser_for(qwen_template)[0] == "hermes"
