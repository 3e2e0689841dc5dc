"""Rule-based rewards for GRPO, in the form TRL's `GRPOTrainer` calls: `f(completions, answer, **kwargs)`.

Three rewards, as in DeepSeek-R1 / the Thinking-LLM reports (accuracy, format, optional reflection):

- accuracy: 1 when the verifier pool says the extracted answer equals the gold, else 0. The answer comes
  from the same extractor as search and eval (`answers.extract_answer`), so a GRPO reward and an eval score
  mean the same thing. "unverifiable" (gold or prediction that math-verify cannot read, or a hostile one
  that the pool killed at its timeout) is 0, never 1, and no answer can stall a step past that timeout.
- format: 1 for exactly one complete, non-empty `\\boxed{}` with nothing but closing punctuation after it.
  Two boxes hedge between answers; the accuracy reward takes the last, so format is what discourages it.
- reflection: 1 when the completion has a self-reflection marker (the eval's list). Easy to game ("Wait."
  costs nothing), which is why its weight defaults to 0.

TRL logs each as `rewards/<function name>/mean`. Completions arrive as strings (plain prompts) or as `[{"role": "assistant", "content": ...}]` (chat prompts).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mcts_cot.answers import boxes, extract_answer
from mcts_cot.evaluate import REFLECTION_MARKERS
from mcts_cot.verify import Verifier

Reward = Callable[..., list[float]]
_CLOSING = re.compile(r"(?:\s|\.|\$|\*|\\\]|\\\))*")  # what may follow a final box: ". $ ** \] \)"


def completion_text(completion: str | list[dict]) -> str:
    """The generated text of one completion, plain or chat-formatted."""
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content") or "" for message in completion)


def accuracy_reward(verifier: Verifier) -> Reward:
    """A reward function bound to a running verifier pool (one batch call per step)."""

    def accuracy_reward(completions: list, answer: list[str], **_) -> list[float]:
        items = [(gold, extract_answer(completion_text(c))) for c, gold in zip(completions, answer, strict=True)]
        return [float(verdict == "correct") for verdict in verifier.verify_batch(items)]

    return accuracy_reward


def one_final_box(text: str) -> bool:
    """Exactly one `\\boxed{}`/`\\fbox{}`, closed, non-empty, and only closing punctuation after it."""
    found = boxes(text)
    if len(found) != 1:
        return False
    content, end = found[0]
    if content is None or not content.strip():
        return False
    return _CLOSING.fullmatch(text[end:]) is not None


def format_reward(completions: list, **_) -> list[float]:
    """1 per completion with one final boxed answer."""
    return [float(one_final_box(completion_text(c))) for c in completions]


def reflection_reward(completions: list, **_) -> list[float]:
    """1 per completion with at least one self-reflection marker."""
    return [float(any(rx.search(completion_text(c)) for rx in REFLECTION_MARKERS.values())) for c in completions]

