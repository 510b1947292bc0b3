"""At each evaluation of a training run: the eval loss with the tool-call figures, reported everywhere a run reports.

    callbacks = eval_callbacks(config, status, warn, lambda: stop.requested, verbose=main_proc)

EvalCallback generates on rank 0 (the other ranks wait at a barrier) with trainkit.evaluate.tool_eval
on a fixed sample of validation conversations, then writes status.json (`eval`),
events.jsonl (`eval`), W&B (eval/<figure> and the table eval/tool_calls) and one tagged
line with the two headline figures and what the evaluation cost.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from trainkit.core import protocol
from trainkit.core.status import RunStatus, is_main_process, last_event
from trainkit.evaluate import toolcalls
from trainkit.evaluate.tool_eval import Conversation, ToolEval, evaluate, read_conversations, sample
from trainkit.preflight.duration import EVAL_SHARE

SHARE_WARNING = 2 * EVAL_SHARE  # twice what evaluation is planned to cost
TABLE_KEY = "eval/tool_calls"
TABLE_COLUMNS = ["step", "conversation_id", "turn", "verdict", "expected", "generated"]



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
        self.wandb_failed = False  # W&B refused a table once: later evaluations skip it

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
        if self.wandb and not self.wandb_failed:
            try:
                log_to_wandb(block, result.rows() if result else [], state.global_step)
            except Exception as exc:  # W&B is how people watch the run, never a reason to stop it
                self.wandb_failed = True
                self.warn(f"W&B refused the evaluation table ({exc.__class__.__name__}: {str(exc)[:160]}): the "
                          "figures stay in status.json and events.jsonl", "nothing to do; later evaluations skip W&B")
        if self.verbose:
            protocol.section(self.tag, eval_line(block, state.max_steps, loss_seconds, result))
        from trainkit.train.notifications import announce

        announce("eval", self.status, eval_line(block, state.max_steps, loss_seconds, result),
                 **{k: v for k, v in summary.items() if k in toolcalls.FIGURES}, eval_loss=block.get("eval_loss"))
        # eval_on_start has no training time to compare with yet.
        if share > SHARE_WARNING and state.global_step > self.first_step and not self.warned_share:
            self.warned_share = True
            self.warn(f"evaluation took {share:.0%} of the training time so far "
                      f"({self.eval_seconds:.1f} s of {elapsed:.1f} s)",
                      f"lower tool_eval_samples (now {len(self.conversations)}) or tool_eval_max_new_tokens "
                      f"(now {self.max_new_tokens}), raise eval_steps, or cap the eval loss with "
                      "eval_max_examples")


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
    event = last_event(output_dir, "eval")
    return {k: v for k, v in event.items() if k not in ("time", "event")} if event else None


def generation_would_hang(config) -> bool:
    """FSDP shards the parameters over the ranks; generation on rank 0 alone would wait forever for the others."""
    from trainkit.core.status import world_size

    strategy = getattr(config, "strategy", None)
    return world_size() > 1 and getattr(strategy, "name", None) == "fsdp"


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
    if samples and config.trainkit.validation_file and generation_would_hang(config):
        warn("tool-call figures are off under FSDP: rank 0 generating alone on sharded parameters would start "
             "all-gathers the other ranks never join", "the eval loss is still reported; score the adapter after "
             "training: scripts/evaluate.py --adapter <output_dir>/final")
        samples = 0
    if samples and config.trainkit.validation_file and is_main_process():
        every = read_conversations(config.trainkit.validation_file)
        if not every:
            warn(f"no chat conversations with an assistant turn in {config.trainkit.validation_file}: "
                 "tool-call figures are off", "the eval loss is still reported")
        conversations = sample(every, samples)
    return [EvalCallback(status, config.tag, warn, conversations=conversations,
                         max_new_tokens=config.trainkit.tool_eval_max_new_tokens, should_stop=should_stop,
                         wandb="wandb" in (config.sft.report_to or []), verbose=verbose)]
