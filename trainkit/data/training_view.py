"""Chat examples exactly as the trainer tokenizes them: template, tools, loss mask, truncation.

TRL's SFTTrainer (1.16, `_prepare_dataset`) turns each `messages` example into tokens so:
the chat template is the model's own, or `chat_template_path` (a .jinja file, or a
tokenizer whose template and added tokens are cloned); with `assistant_only_loss` and a
template without `{% generation %}` marks it swaps in TRL's training version of the
template (`get_training_chat_template`: qwen2_5_training for Qwen2.5, …); it calls
`apply_chat_template(messages, tools=…, chat_template=…, return_assistant_tokens_mask=…,
**chat_template_kwargs)`, trains the tokens of the assistant mask (every token without
`assistant_only_loss`), cuts at `max_length` (`truncation_mode`), and silently drops an
example left with no trained token. The preflight, inspect_data.py and the tests all go
through `TrainingView`, so what they count is what trains:

    view = resolve_view(tokenizer, config.sft, report)   # None (with an ERROR) if it cannot train
    [tokenized] = view.tokenize([normalize_example(example)])
    tokenized.tokens, tokenized.trained, tokenized.truncated, tokenized.turns_cut

Examples that share their tools are tokenized in one batched call (the same
`apply_chat_template`, so the same ids and mask), which keeps a 16,000-example check
to seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from trainkit.core.report import Report

BATCH = 512
GENERATION_MARKS = "{% generation %}…{% endgeneration %}"


@dataclass
class Tokenized:
    """One example as the trainer gets it."""

    input_ids: list[int]  # after truncation
    mask: list[int]  # 1 where the token carries loss, after truncation
    length: int  # tokens before truncation
    turns: list[tuple[int, int]]  # [start, end) token spans of assistant text, before truncation
    kept: tuple[int, int]  # the [start, end) token range truncation keeps
    encoding: object = field(default=None, repr=False)  # (BatchEncoding, index) for character offsets

    @property
    def tokens(self) -> int:
        return len(self.input_ids)

    @property
    def trained(self) -> int:
        return sum(self.mask)

    @property
    def truncated(self) -> bool:
        return self.length > self.tokens

    @property
    def turns_cut(self) -> int:
        """Assistant turns not wholly inside the kept range."""
        start, end = self.kept
        return sum(s < start or e > end for s, e in self.turns)

    def spans(self) -> list[tuple[int, int]]:
        """[start, end) character spans of the trained text in the rendered conversation."""
        out, index = self.encoding
        start, _ = self.kept
        spans: list[tuple[int, int]] = []
        for position, trained in enumerate(self.mask):
            if not trained:
                continue
            chars = out.token_to_chars(index, start + position)
            if chars is None:
                continue
            if spans and spans[-1][1] >= chars.start:
                spans[-1] = (spans[-1][0], max(spans[-1][1], chars.end))
            else:
                spans.append((chars.start, chars.end))
        return spans


@dataclass
class TrainingView:
    """How the trainer will tokenize: the tokenizer, the template it renders with, the loss mask, truncation."""

    tokenizer: object
    chat_template: str | None = None  # passed as apply_chat_template(chat_template=...); None: the tokenizer's own
    assistant_only_loss: bool = True
    max_length: int | None = None
    truncation_mode: str | None = "keep_start"  # None: nothing is cut (packing that splits instead)
    template_source: str = "the model's chat template"

    @property
    def marked(self) -> bool:
        """Whether the rendering template marks the assistant's text with {% generation %}."""
        from trl.chat_template_utils import has_generation_markers

        template = self.chat_template or self.tokenizer.chat_template
        return bool(template) and has_generation_markers(template)

    def kept_range(self, length: int) -> tuple[int, int]:
        if self.max_length is None or self.truncation_mode is None or length <= self.max_length:
            return 0, length
        if self.truncation_mode == "keep_end":
            return length - self.max_length, length
        return 0, self.max_length

    def render(self, example: dict) -> str:
        """The text the template renders for one (normalised) example."""
        tools, kwargs = template_inputs(example)
        return self.tokenizer.apply_chat_template(example["messages"], tools=tools, chat_template=self.chat_template,
                                                  tokenize=False, **kwargs)

    def tokenize(self, examples: list[dict]) -> list[Tokenized | Exception]:
        """Each (normalised) example tokenized, or the exception its rendering raised."""
        results: list[Tokenized | Exception | None] = [None] * len(examples)
        groups: dict[str, list[int]] = {}
        for index, example in enumerate(examples):
            tools, kwargs = template_inputs(example)
            groups.setdefault(json.dumps([tools, kwargs], sort_keys=True, default=str), []).append(index)
        for indices in groups.values():
            for start in range(0, len(indices), BATCH):
                chunk = indices[start:start + BATCH]
                try:
                    for index, tokenized in zip(chunk, self.encode([examples[i] for i in chunk]), strict=True):
                        results[index] = tokenized
                except Exception:  # a template may raise anything; find which examples it refuses
                    for index in chunk:
                        try:
                            [results[index]] = self.encode([examples[index]])
                        except Exception as exc:
                            results[index] = exc
        return results

    def encode(self, examples: list[dict]) -> list[Tokenized]:
        tools, kwargs = template_inputs(examples[0])
        with_mask = self.marked
        out = self.tokenizer.apply_chat_template(
            [example["messages"] for example in examples], tools=tools, chat_template=self.chat_template,
            tokenize=True, return_dict=True, return_assistant_tokens_mask=with_mask, **kwargs)
        tokenized = []
        for index, ids in enumerate(out["input_ids"]):
            generation = out["assistant_masks"][index] if with_mask else [0] * len(ids)
            labels = generation if self.assistant_only_loss else [1] * len(ids)
            start, end = self.kept_range(len(ids))
            tokenized.append(Tokenized(ids[start:end], labels[start:end], len(ids), runs(generation),
                                       (start, end), (out, index)))
        return tokenized


def template_inputs(example: dict) -> tuple[object, dict]:
    """The tools and extra template arguments TRL passes for an example."""
    tools = example.get("tools")
    tools = json.loads(tools) if isinstance(tools, str) else tools
    return tools, example.get("chat_template_kwargs") or {}


def runs(mask: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of ones."""
    spans, start = [], None
    for position, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = position
        elif not bit and start is not None:
            spans.append((start, position))
            start = None
    return spans


# ---------------------------------------------------------------------------
# Which template the trainer renders with


def apply_chat_template_path(tokenizer, path: str | None, report: Report) -> bool:
    """Set the template (and tokens) chat_template_path gives, as SFTTrainer does; False with an ERROR if it cannot."""
    if not path:
        return True
    if Path(path).is_file() and path.endswith((".jinja", ".j2")):
        tokenizer.chat_template = Path(path).read_text(encoding="utf-8")
        return True
    from transformers import AutoTokenizer

    try:
        source = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        report.error(f"chat_template_path {path} is neither a .jinja/.j2 file nor a tokenizer available offline "
                     f"({type(exc).__name__})", "point it at a .jinja template file or a local tokenizer directory")
        return False
    # trl.clone_chat_template: the source's template, its added tokens and its end-of-turn token.
    tokenizer.chat_template = source.get_chat_template()
    tokenizer.add_tokens([t for t in source.added_tokens_decoder.values() if t.content not in tokenizer.vocab])
    tokenizer.eos_token = source.eos_token
    return True


def resolve_view(tokenizer, sft, report: Report) -> TrainingView | None:
    """The TrainingView for a config's SFTConfig, with an OK line saying how the loss is masked.

    ERROR (and None) where the trainer could not build the mask: no chat template, or
    assistant_only_loss with a template that has no generation marks and no training
    version in TRL.
    """
    name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    path = getattr(sft, "chat_template_path", None)
    if not apply_chat_template_path(tokenizer, path, report):
        return None
    if not getattr(tokenizer, "chat_template", None):
        report.error(f"{name} has no chat template, so chat examples cannot be rendered",
                     "use an instruct/chat model, or set chat_template_path to a .jinja template")
        return None
    source = f"chat_template_path {path}" if path else f"{name}'s chat template"
    assistant_only = bool(getattr(sft, "assistant_only_loss", False))
    view = TrainingView(tokenizer, None, assistant_only, sft.max_length, truncation_of(sft), source)
    if assistant_only and not view.marked:
        from trl.chat_template_utils import get_training_chat_template

        try:
            view.chat_template = get_training_chat_template(tokenizer)
        except ValueError:
            report.error(f"assistant_only_loss needs {GENERATION_MARKS} marks around the assistant's turns; "
                         f"{source} has none, and TRL has no training version of it",
                         "set chat_template_path to a .jinja template with those marks, or assistant_only_loss: "
                         "false to train on whole conversations")
            return None
        view.template_source = f"TRL's training version of {source}"
    if assistant_only:
        from trl.chat_template_utils import is_chat_template_stop_token_trained

        if not is_chat_template_stop_token_trained(tokenizer, chat_template=view.chat_template):
            report.warning(f"{view.template_source} leaves the assistant's end-of-turn token out of the loss, "
                           "so the model may not learn to stop",
                           f"put the end-of-turn token inside {GENERATION_MARKS} in the template")
    return view


def truncation_of(sft) -> str | None:
    """How the trainer cuts an example longer than max_length (packing with bfd cuts like keep_start)."""
    if getattr(sft, "packing", False):
        return "keep_start" if getattr(sft, "packing_strategy", "bfd") == "bfd" else None
    return getattr(sft, "truncation_mode", "keep_start")


def load_view(config, report: Report) -> TrainingView | None:
    """The model's tokenizer (offline) resolved into the trainer's view of the data, or None with a finding."""
    from trainkit.config.model_source import load_tokenizer, locate_model

    tokenizer = load_tokenizer(locate_model(config.model.model_name_or_path), report)
    return resolve_view(tokenizer, config.sft, report) if tokenizer is not None else None


def tokenized_file(view: TrainingView, path: str | Path,
                   lines: set[int] | None = None) -> Iterator[tuple[int, dict, Tokenized | Exception]]:
    """(line, example, tokenized) for each valid example of a file (only `lines`, when given), in file order."""
    from trainkit.data.checks import valid_examples
    from trainkit.data.loading import normalize_example

    pending: list[tuple[int, dict]] = []
    for number, example in valid_examples(path):
        if lines is not None and number not in lines:
            continue
        pending.append((number, normalize_example(example)))
        if len(pending) >= 8 * BATCH:
            yield from zip_results(view, pending)
            pending = []
    yield from zip_results(view, pending)


def zip_results(view: TrainingView, pending: list[tuple[int, dict]]):
    if not pending:
        return []
    results = view.tokenize([example for _, example in pending])
    return [(number, example, result) for (number, example), result in zip(pending, results, strict=True)]
