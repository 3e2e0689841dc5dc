"""Chat prompts as token ids: system line, few-shot turns, the problem, and assistant continuation.

The prompt is rendered once per problem with the model's chat template and `add_generation_prompt`; the
search then appends the token ids of earlier steps to it (an open assistant turn), so a step is generated
as a continuation of the model's own reasoning rather than as a new turn.
"""

from __future__ import annotations

from mcts_cot.config import PromptConfig


def messages(cfg: PromptConfig, problem: str) -> list[dict[str, str]]:
    """The chat messages for one problem: system, few-shot user/assistant pairs, then the problem."""
    out = [{"role": "system", "content": cfg.system}] if cfg.system else []
    for shot in cfg.few_shot:
        out.append({"role": "user", "content": cfg.template.format(problem=shot["problem"])})
        out.append({"role": "assistant", "content": shot["solution"]})
    out.append({"role": "user", "content": cfg.template.format(problem=problem)})
    return out


def prompt_ids(tokenizer, cfg: PromptConfig, problem: str) -> list[int]:
    """Token ids of the rendered chat prompt, ending with the open assistant turn."""
    ids = tokenizer.apply_chat_template(messages(cfg, problem), add_generation_prompt=True, tokenize=True,
                                        return_dict=False)
    return list(ids)

