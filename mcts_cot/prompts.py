"""Chat prompts as token ids: system line, few-shot turns, the problem, and assistant continuation.

The prompt is rendered once per problem with the model's chat template and `add_generation_prompt`; the
search then appends the token ids of earlier steps to it (an open assistant turn), so a step is generated
as a continuation of the model's own reasoning rather than as a new turn. `Prompter` renders the chat template
once per config rather than once per problem (a jinja render per tree start was ~8% of the engine's cost).
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



_SLOT = "\x00problem\x00"  # stands for the problem in the one render a Prompter does


class Prompter:
    """`prompt_ids` for many problems of one prompt config, without a chat-template render per problem (it was ~8% of
    the engine's cost): the template is rendered once with a placeholder, each problem's text is spliced in, and
    only the part after the shared header (system line, few-shot turns) is tokenised when the header ends a line.
    Both shortcuts are checked once against the template's own render and tokenisation, and never used for a
    problem with surrounding whitespace (which a template may trim, or a tokenizer join across the line end)."""

    def __init__(self, tokenizer, cfg: PromptConfig):
        self.tok, self.cfg = tokenizer, cfg
        self.parts: tuple[str, str] | None = None  # the render before and after the problem's user text
        self.head_ids: list[int] | None = None  # token ids of parts[0], when it may be tokenised on its own
        self.checked = False

    def __call__(self, problem: str) -> list[int]:
        if not self.checked:
            self._check(problem)
        if self.parts is None or problem != problem.strip():
            return prompt_ids(self.tok, self.cfg, problem)
        head, tail = self.parts
        if self.head_ids is None:
            return self._encode(head + self._user(problem) + tail)
        return self.head_ids + self._encode(self._user(problem) + tail)

    def _check(self, problem: str) -> None:
        self.checked = True
        head, slot, tail = self._render(_SLOT).partition(self._user(_SLOT))
        if not slot or problem != problem.strip() or head + self._user(problem) + tail != self._render(problem):
            return
        self.parts = head, tail
        whole = prompt_ids(self.tok, self.cfg, problem)
        head_ids = self._encode(head)
        if head.endswith("\n") and head_ids + self._encode(self._user(problem) + tail) == whole:
            self.head_ids = head_ids

    def _encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def _user(self, problem: str) -> str:
        return self.cfg.template.format(problem=problem)

    def _render(self, problem: str) -> str:
        return self.tok.apply_chat_template(messages(self.cfg, problem), add_generation_prompt=True, tokenize=False)
