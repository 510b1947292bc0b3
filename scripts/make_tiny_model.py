"""Build the tiny local chat model that the smoke config, the demo and the tests train.

    python scripts/make_tiny_model.py                  # models/tiny-chat/ (skips when up to date)
    python scripts/make_tiny_model.py --force --out models/tiny-chat

A Llama-style causal LM with random weights and a byte-level BPE tokenizer trained on
data/sample/, with a chat template that renders system/user/assistant/tool turns, tool
schemas and tool calls. Nothing is downloaded. The build is deterministic, and a stamp
of the inputs makes a second run a no-op.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainkit.core import protocol
from trainkit.core.report import CheckerArgumentParser

# ChatML-style turns. {% generation %} marks what the assistant says, so TRL's
# assistant_only_loss works with this template too. transformers renders with
# trim_blocks, which eats a newline straight after a tag, hence {{ '\n' }} there.
CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n{% endif %}"
    "You can call these tools:\n<tools>\n"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "</tools><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'assistant' %}<|im_start|>assistant\n{% generation %}"
    "{% if message.content %}{{ message.content }}{% endif %}"
    "{% for call in message.tool_calls or [] %}"
    "<tool_call>{{ {'name': call.function.name, 'arguments': call.function.arguments} | tojson }}</tool_call>"
    "{% endfor %}<|im_end|>{% endgeneration %}{{ '\\n' }}"
    "{% elif message.role != 'system' %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
MARKUP_TOKENS = ["<tool_call>", "</tool_call>", "<tools>", "</tools>"]
VOCAB_SIZE = 2048
# Small enough to train in seconds on a laptop CPU, and still with every module a
# 7-8B Llama has, so LoRA targets and configs carry over unchanged.
MODEL_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
)


def corpus(files: list[Path]):
    """Every string a chat template can render from the sample data."""
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for message in row.get("messages", []):
                yield f"{message.get('role', '')}\n{message.get('content') or ''}"
                for call in message.get("tool_calls") or []:
                    yield json.dumps(call.get("function", {}), ensure_ascii=False)
            for tool in row.get("tools") or []:
                yield json.dumps(tool, ensure_ascii=False)


def stamp_of(files: list[Path]) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_tokenizer(files: list[Path]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(files), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
    )
    fast.add_tokens(MARKUP_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **MODEL_SHAPE,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def main(argv: list[str] | None = None) -> int:
    parser = CheckerArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "tiny-chat")
    parser.add_argument("--data", type=Path, nargs="+", default=sorted((ROOT / "data" / "sample").glob("*.jsonl")))
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)

    files = [p for p in args.data if p.is_file()]
    if not files:
        protocol.error("no sample data to train the tokenizer on", "restore data/sample/*.jsonl from git")
        return protocol.ExitCode.ERROR
    stamp_file = args.out / ".trainkit-stamp"
    stamp = stamp_of(files)
    if not args.force and stamp_file.is_file() and stamp_file.read_text() == stamp:
        protocol.success(f"tiny model up to date in {args.out}")
        return protocol.ExitCode.OK

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = build_tokenizer(files)
    model = build_model(tokenizer)
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(args.out)
    model.save_pretrained(args.out)
    stamp_file.write_text(stamp)
    params = sum(p.numel() for p in model.parameters())
    protocol.success(f"tiny model built in {args.out} ({params:,} parameters, vocab {len(tokenizer)})")
    return protocol.ExitCode.OK


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
