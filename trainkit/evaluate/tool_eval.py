"""Does the model call tools right? Generate every assistant turn of a fixed sample of conversations and score it.

    from trainkit.evaluate import tool_eval as evaluation
    conversations = evaluation.sample(evaluation.read_conversations("data/sample/validation.jsonl"), 16)
    result = evaluation.evaluate(model, tokenizer, conversations, max_new_tokens=128)
    result.summary()    # the six figures of trainkit.evaluate.toolcalls plus counts and seconds

For each assistant turn, the conversation up to that turn (with the row's tools) goes through
the tokenizer's chat template with add_generation_prompt, the model generates greedily (at
most max_new_tokens), and the family's parser (trainkit.evaluate.toolcalls.parser_for) reads the reply.

During training, trainkit.train.eval_callback runs this at every evaluation; scripts/evaluate.py
runs it standalone. Nothing heavy is imported until a model is there to generate with.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainkit.core.errors import DataError, TrainkitError
from trainkit.evaluate import toolcalls

SAMPLE_SEED = 0  # the same conversations at every evaluation, and in scripts/evaluate.py
GENERATION_BATCH_SIZE = 8
DATA_HINT = 'each line must be one JSON object such as {"messages": [...], "tools": [...]}'


@dataclass(frozen=True)
class Conversation:
    id: str
    messages: list[dict]
    tools: list[dict] | None = None


@dataclass(frozen=True)
class Turn:
    conversation_id: str
    index: int  # position of the assistant message in the conversation
    prompt: list[dict]  # the messages before it
    tools: list[dict] | None
    expected: tuple[toolcalls.ToolCall, ...]
    expected_text: str

    @property
    def expected_reply(self) -> str:
        return "\n".join([self.expected_text.strip(), *(c.as_json() for c in self.expected)]).strip()


def normalised(messages: list[dict]) -> list[dict]:
    """A copy whose tool-call arguments given as JSON strings are objects, as trainkit trains them."""
    out = copy.deepcopy(messages)
    for message in out:
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and "arguments" in function:
                function["arguments"] = toolcalls.decoded_arguments(function["arguments"])
    return out


def read_conversations(path: str | Path) -> list[Conversation]:
    """JSONL rows with a "messages" list that holds an assistant turn; other rows are not evaluable and skipped.
    The file is read as train.py reads it (trainkit.data.reader): a bad line is one DataError naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"evaluation data not found: {path}", "pass --data with a JSONL chat file, e.g. "
                        "data/sample/validation.jsonl")
    from trainkit.data.reader import read_chat_file

    conversations = []
    for number, row in read_chat_file(path, "the evaluation data"):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            continue
        if not any(m.get("role") == "assistant" for m in messages):
            continue
        tools = row.get("tools") if isinstance(row.get("tools"), list) else None
        conversation_id = str(row.get("id") or f"{path.name}:{number}")
        conversations.append(Conversation(conversation_id, normalised(messages), tools))
    return conversations


def sample(conversations: list[Conversation], n: int, seed: int = SAMPLE_SEED) -> list[Conversation]:
    """n conversations drawn with a fixed seed, in file order; all of them when there are no more than n."""
    if n >= len(conversations):
        return list(conversations)
    picked = sorted(random.Random(seed).sample(range(len(conversations)), n))
    return [conversations[i] for i in picked]


def turns_of(conversations: list[Conversation]) -> list[Turn]:
    turns = []
    for conversation in conversations:
        for index, message in enumerate(conversation.messages):
            if message.get("role") != "assistant" or index == 0:
                continue
            turns.append(Turn(conversation.id, index, conversation.messages[:index], conversation.tools,
                              toolcalls.expected_calls(message), str(message.get("content") or "")))
    return turns


@dataclass
class TurnResult:
    turn: Turn
    generated: str
    reply: toolcalls.ParsedReply
    score: toolcalls.TurnScore

    def row(self) -> dict:
        return {"conversation_id": self.turn.conversation_id, "turn": self.turn.index, "verdict": self.score.verdict,
                "expected": self.turn.expected_reply, "generated": self.generated}


@dataclass
class ToolEval:
    family: str
    conversations: int
    results: list[TurnResult] = field(default_factory=list)
    skipped_turns: int = 0
    seconds: float = 0.0

    @property
    def figures(self) -> toolcalls.Figures:
        figures = toolcalls.Figures()
        for result in self.results:
            figures.add(result.score)
        return figures

    def summary(self) -> dict:
        figures = self.figures
        return {
            **figures.rates(),
            "format": self.family,
            "conversations": self.conversations,
            "turns": figures.turns,
            "call_turns": figures.call_turns,
            "text_turns": figures.text_turns,
            "skipped_turns": self.skipped_turns,
            "tool_eval_seconds": round(self.seconds, 3),
        }

    def rows(self) -> list[dict]:
        return [result.row() for result in self.results]


def prompt_ids(tokenizer, turn: Turn) -> list[int] | None:
    """The turn's prompt through the chat template, as token ids; None when the template refuses it."""
    import jinja2

    kwargs = {"tools": turn.tools} if turn.tools else {}
    try:
        text = tokenizer.apply_chat_template(turn.prompt, add_generation_prompt=True, tokenize=False, **kwargs)
    except (jinja2.TemplateError, TypeError, ValueError):
        return None
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def generate(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int,
             batch_size: int = GENERATION_BATCH_SIZE,
             should_stop: Callable[[], bool] = lambda: False) -> list[str] | None:
    """Greedy replies to token-id prompts, left-padded in batches of similar length; None when stopped midway.
    An mlx-lm model (backend: mlx) generates through trainkit.evaluate.mlx_generation instead.

    The reply ends at the first end-of-turn token and keeps special tokens (Mistral's
    [TOOL_CALLS] is one). The model is put back in training mode if it was in it.
    """
    from trainkit.evaluate import mlx_generation

    if mlx_generation.is_mlx_model(model):
        return mlx_generation.generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                       should_stop=should_stop)
    import torch

    from trainkit.evaluate.adapters import stop_token_ids

    config = copy.deepcopy(model.generation_config)
    config.max_new_tokens, config.max_length = max_new_tokens, None
    config.do_sample, config.num_beams, config.temperature, config.top_p, config.top_k = False, 1, None, None, None
    config.use_cache = True
    stops = stop_token_ids(model, tokenizer)
    config.eos_token_id = stops or None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops or [0])[0]
    config.pad_token_id = pad
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                if should_stop():
                    return None
                batch = order[start:start + batch_size]
                width = max(len(prompts[i]) for i in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i], dtype=torch.long)
                    mask[row, width - len(prompts[i]):] = 1
                output = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                        generation_config=config)
                for row, i in enumerate(batch):
                    new = output[row, width:].tolist()
                    end = next((k for k, token in enumerate(new) if token in stops), len(new))
                    texts[i] = tokenizer.decode(new[:end], skip_special_tokens=False).strip()
    finally:
        if was_training:
            model.train()
    return texts


def evaluate(model, tokenizer, conversations: list[Conversation], *, max_new_tokens: int,
             batch_size: int = GENERATION_BATCH_SIZE, parser: tuple[str, toolcalls.Parser] | None = None,
             should_stop: Callable[[], bool] = lambda: False) -> ToolEval | None:
    """Generate and score every assistant turn of `conversations`; None when should_stop() turned true."""
    started = time.time()
    parser = parser or parser_or_error(tokenizer)
    family, parse = parser
    result = ToolEval(family, len(conversations))
    turns, prompts = [], []
    for turn in turns_of(conversations):
        ids = prompt_ids(tokenizer, turn)
        if ids is None:
            result.skipped_turns += 1
            continue
        turns.append(turn)
        prompts.append(ids)
    texts = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                     should_stop=should_stop) if prompts else []
    if texts is None:
        return None
    for turn, text in zip(turns, texts, strict=True):
        reply = parse(text)
        result.results.append(TurnResult(turn, text, reply, toolcalls.score_turn(turn.expected, reply)))
    result.seconds = time.time() - started
    return result


def parser_or_error(tokenizer) -> tuple[str, toolcalls.Parser]:
    found = toolcalls.parser_for(tokenizer.chat_template)
    if found is None:
        raise TrainkitError("the chat template renders no tool-call format trainkit can parse",
                            f"known formats: {', '.join(toolcalls.PARSERS)} (<tool_call> tags, Llama 3 JSON, "
                            "[TOOL_CALLS]); use a tool-calling chat model")
    return found
