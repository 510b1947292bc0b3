"""Does the model call tools right? Generate every assistant turn of a fixed sample of conversations and score it.

    from trainkit import evaluation
    conversations = evaluation.sample(evaluation.read_conversations("data/sample/validation.jsonl"), 16)
    result = evaluation.evaluate(model, tokenizer, conversations, max_new_tokens=128)
    result.summary()    # the six figures of trainkit.toolcalls plus counts and seconds

For each assistant turn, the conversation up to that turn (with the row's tools) goes through
the tokenizer's chat template with add_generation_prompt, the model generates greedily (at
most max_new_tokens), and the family's parser (trainkit.toolcalls.parser_for) reads the reply.

During training, EvalCallback runs this at every evaluation (eval_strategy/eval_steps) on rank
0 and reports the figures with the eval loss: to status.json (`eval`), events.jsonl (`eval`),
W&B (scalars and a table of turns) and one tagged line. scripts/evaluate.py runs it standalone.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from trainkit import protocol, toolcalls
from trainkit.errors import DataError, TrainkitError
from trainkit.status import EVENTS_FILE, RunStatus, is_main_process

SAMPLE_SEED = 0  # the same conversations at every evaluation, and in scripts/evaluate.py
GENERATION_BATCH_SIZE = 8
SHARE_WARNING = 0.10  # twice the 5 % evaluation is meant to cost
TABLE_KEY = "eval/tool_calls"
TABLE_COLUMNS = ["step", "conversation_id", "turn", "verdict", "expected", "generated"]
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
    """JSONL rows with a "messages" list that holds an assistant turn; other rows are not evaluable and skipped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"evaluation data not found: {path}", "pass --data with a JSONL chat file, e.g. "
                        "data/sample/validation.jsonl")
    conversations = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"evaluation data {path} is not readable: {exc}", DATA_HINT) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno})", DATA_HINT) from None
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

    The reply ends at the first end-of-turn token and keeps special tokens (Mistral's
    [TOOL_CALLS] is one). The model is put back in training mode if it was in it.
    """
    import torch

    from trainkit.adapters import stop_token_ids

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


# --- during training ------------------------------------------------------------------------


def rate_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def headline(summary: dict) -> str:
    """The two figures the progress line shows: a call is well-formed, and its arguments are right."""
    return (f"tool_call_parse_rate {rate_text(summary['tool_call_parse_rate'])} | "
            f"tool_args_exact {rate_text(summary['tool_args_exact'])}")


class EvalCallback(TrainerCallback):
    """Each evaluation: tool-call figures on rank 0 (others wait), then status.json, events, W&B, a tagged line."""

    def __init__(self, status: RunStatus, tag: str, warn, *, conversations: list[Conversation],
                 max_new_tokens: int, should_stop: Callable[[], bool] = lambda: False, wandb: bool = False,
                 verbose: bool = True):
        self.status = status
        self.tag = tag
        self.warn = warn
        self.conversations = conversations
        self.max_new_tokens = max_new_tokens
        self.should_stop = should_stop
        self.wandb = wandb
        self.verbose = verbose
        self.main = is_main_process()
        self.parser = None
        self.t0 = None
        self.first_step = 0
        self.eval_seconds = 0.0
        self.warned_share = False

    def on_train_begin(self, args, state, control, processing_class=None, **kwargs):
        self.t0 = time.time()
        self.first_step = state.global_step
        if self.conversations and self.main:
            self.parser = toolcalls.parser_for(getattr(processing_class, "chat_template", None))
            if self.parser is None:
                self.warn("the chat template renders no tool-call format trainkit can parse: tool-call figures are off",
                          f"eval loss is still reported; known formats: {', '.join(toolcalls.PARSERS)}")

    def on_evaluate(self, args, state, control, metrics=None, model=None, processing_class=None, **kwargs):
        metrics = metrics if metrics is not None else {}
        result = None
        if self.main and self.parser and model is not None and processing_class is not None:
            result = evaluate(model, processing_class, self.conversations, max_new_tokens=self.max_new_tokens,
                              parser=self.parser, should_stop=self.should_stop)
        wait_for_rank_zero()
        if not self.main:
            return
        loss_seconds = float(metrics.get("eval_runtime") or 0.0)
        seconds = loss_seconds + (result.seconds if result else 0.0)
        self.eval_seconds += seconds
        elapsed = max(time.time() - (self.t0 or time.time()), seconds, 1e-9)
        share = self.eval_seconds / elapsed
        summary = result.summary() if result else {}
        block = {"step": state.global_step, "eval_loss": metrics.get("eval_loss"), **summary,
                 "seconds": round(seconds, 3), "share_of_training": round(share, 4)}
        metrics.update({f"eval_{k}": v for k, v in summary.items() if k in toolcalls.FIGURES and v is not None})
        self.status.update(eval=block)
        self.status.event("eval", **block)
        if self.wandb:
            log_to_wandb(block, result.rows() if result else [], state.global_step)
        if self.verbose:
            protocol.section(self.tag, eval_line(block, state.max_steps, loss_seconds, result))
        # eval_on_start has no training time to compare with yet.
        if share > SHARE_WARNING and state.global_step > self.first_step and not self.warned_share:
            self.warned_share = True
            self.warn(f"evaluation took {share:.0%} of the training time so far "
                      f"({self.eval_seconds:.1f} s of {elapsed:.1f} s)",
                      f"lower tool_eval_samples (now {len(self.conversations)}) or tool_eval_max_new_tokens "
                      f"(now {self.max_new_tokens}), raise eval_steps, or evaluate on a smaller validation_file")


def eval_line(block: dict, max_steps: int, loss_seconds: float, result: ToolEval | None) -> str:
    parts = [f"eval at step {block['step']}/{max_steps}:"]
    if result:
        parts.append(headline(block) + " |")
    if block.get("eval_loss") is not None:
        parts.append(f"eval_loss {block['eval_loss']:.4f} |")
    timing = f"{block['seconds']:.1f} s (eval loss {loss_seconds:.1f} s"
    if result:
        timing += (f", tool calls {result.seconds:.1f} s on {block['turns']} turns of "
                   f"{block['conversations']} conversations")
    parts.append(f"{timing}), {block['share_of_training']:.0%} of training time so far")
    return " ".join(parts)


def wait_for_rank_zero() -> None:
    """Under torch.distributed, every rank waits here while rank 0 generates."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def log_to_wandb(block: dict, rows: list[dict], step: int) -> None:
    """The figures as eval/<name> and a table of the turns, at the trainer's global step."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    if run is None:
        return
    logged = {f"eval/{k}": v for k, v in block.items()
              if k in (*toolcalls.FIGURES, "tool_eval_seconds", "seconds") and v is not None}
    if rows:
        logged[TABLE_KEY] = wandb.Table(columns=TABLE_COLUMNS,
                                        data=[[step, *(r[c] for c in TABLE_COLUMNS[1:])] for r in rows])
    run.log({**logged, "train/global_step": step})


def last_eval(output_dir: Path) -> dict | None:
    """The newest eval event of earlier launches, as status.json's eval block."""
    try:
        lines = (Path(output_dir) / EVENTS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") == "eval":
            return {k: v for k, v in event.items() if k not in ("time", "event")}
    return None


def eval_callbacks(config, status: RunStatus, warn, should_stop: Callable[[], bool], verbose: bool) -> list:
    """The callback when the run evaluates (eval_strategy is not "no"), with its fixed sample of conversations.

    A resumed run keeps showing its latest evaluation in status.json until the next one.
    """
    if status.enabled and "eval" not in status.data:
        previous = last_eval(status.output_dir)
        if previous:
            status.data["eval"] = previous
    strategy = getattr(config.sft.eval_strategy, "value", config.sft.eval_strategy)
    if strategy == "no":
        return []
    conversations = []
    samples = config.trainkit.tool_eval_samples
    if samples and config.trainkit.validation_file and is_main_process():
        every = read_conversations(config.trainkit.validation_file)
        if not every:
            warn(f"no chat conversations with an assistant turn in {config.trainkit.validation_file}: "
                 "tool-call figures are off", "the eval loss is still reported")
        conversations = sample(every, samples)
    return [EvalCallback(status, config.tag, warn, conversations=conversations,
                         max_new_tokens=config.trainkit.tool_eval_max_new_tokens, should_stop=should_stop,
                         wandb="wandb" in (config.sft.report_to or []), verbose=verbose)]
