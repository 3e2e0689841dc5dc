"""How an answer is read from a model's text: the one extractor of search, best-of-N, eval and the GRPO rewards.

A path ends with an answer only when it states one: a complete `\\boxed{}`, or a closing "the answer is X" whose
X is a mathematical expression. Wrong labels cost more than any search heuristic gains (docs/DESIGN.md, 13).
"""

from __future__ import annotations

import re
from typing import Literal

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_PHRASE = re.compile(r"answer\s*(?:is\b\s*:?|:)[ \t]*([^\n]*)", re.IGNORECASE)
_WRAPPERS = ("**", "$", "\\(", "\\)", "\\[", "\\]")
# A stated answer must read as mathematics: numbers, operators, brackets, single-letter variables and these
# LaTeX commands; no words (two letters in a row outside a command) and no "=" (an equation is a computation).
_LATEX = re.compile(r"\\(?:[dt]?frac|sqrt|pi|cdot|times|div|pm|mp|infty|circ|degree|left|right|%|,|!|;| )")
_MATH = re.compile(r"[\d\s.,+\-*/^()\[\]{}_%a-zA-Z]*")
_WORD = re.compile(r"[a-zA-Z]{2,}")
_CHOICE = re.compile(r"\(?[A-Z]\)?")  # a multiple-choice letter: B or (B)

AnswerSource = Literal["boxed", "phrase"]  # how an answer was recognised (counted per tree)


def extract_answer(text: str) -> str | None:
    """The model's final answer, or None (see `read_answer`): the one extractor of search, eval and rewards."""
    return read_answer(text)[0]


def read_answer(text: str) -> tuple[str | None, AnswerSource | None]:
    """The final answer and how it was recognised: the last complete `\\boxed{}`/`\\fbox{}` ("boxed"), else
    a closing "the answer is X" / "Answer: X" ("phrase").

    A box cut off by the token limit is skipped, so an earlier complete one still counts. The phrase counts
    only when it closes the text (its line is the last non-blank one and X runs to the line's end) and X is a
    mathematical expression (`_is_math`): "what the answer is by adding the numbers" states no answer, and
    neither does "the answer is 2 * 3 = 6" (its right-hand side would be a guess at what the model meant; the
    path goes on and the model can still state its answer). Such a step is not a terminal, so it never ends a
    path as a wrong answer.
    """
    if "\\" not in text and "answer" not in text.lower():  # no box, no phrase: skip the scans (every new step)
        return None, None
    for content, _ in reversed(boxes(text)):
        if content is not None:
            return (content.strip() or None), "boxed"
    lines = text.strip().splitlines()
    phrases = _PHRASE.findall(lines[-1]) if lines else []
    answer = _unwrap(phrases[-1]) if phrases else None
    return (answer, "phrase") if answer is not None and _is_math(answer) else (None, None)


def boxes(text: str) -> list[tuple[str | None, int]]:
    """Every `\\boxed{`/`\\fbox{` in order: its content (None when it never closes) and where the text after
    it starts."""
    out = []
    for match in _BOX.finditer(text):
        content = _braced(text, match.end())
        out.append((content, len(text) if content is None else match.end() + len(content) + 1))
    return out


def _is_math(answer: str) -> bool:
    """A number, fraction or simple expression (at least one digit), or a multiple-choice letter."""
    if _CHOICE.fullmatch(answer):
        return True
    bare = _LATEX.sub(" ", answer)
    return (any(c.isdigit() for c in bare) and "=" not in bare and _MATH.fullmatch(bare) is not None
            and _WORD.search(bare) is None)


def _braced(text: str, start: int) -> str | None:
    """The text from `start` up to the brace that closes the one before it; None if it never closes.

    Escaped braces (`\\{`, `\\}`) are content, so `\\boxed{\\{1,2\\}}` gives `\\{1,2\\}`.
    """
    depth, i = 1, start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        depth += (char == "{") - (char == "}")
        if depth == 0:
            return text[start:i]
        i += 1
    return None


def _unwrap(phrase: str) -> str | None:
    """Strip what models put around a stated answer: markdown bold, math delimiters, a final period."""
    answer = phrase.strip()
    while True:
        before = answer
        for wrapper in _WRAPPERS:
            answer = answer.removeprefix(wrapper).removesuffix(wrapper).strip()
        answer = answer.removesuffix(".").strip()
        if answer == before:
            return answer or None
