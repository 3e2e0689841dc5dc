"""The export → train contract, defined once: the SFT and pair rows `export-pairs` writes, and the training
example the trainers' loaders make of them for the collators.

Rows are JSON lines, so they are `TypedDict`s: the keys a trainer cannot do without are `Required` (a row
missing one is refused with a line naming it), the rest are metadata for people, TRL and analysis.
"""

# No `from __future__ import annotations` here: TypedDict reads Required / NotRequired from evaluated annotations.
from typing import Literal, NotRequired, Required, TypedDict

# How one side of a pair ends: its path's terminal reason, or "step" when the side is a step the tree went on
# from (a step pair). "answer" and "eos" are the model ending its turn; the rest are cuts by a limit.
End = Literal["answer", "eos", "length", "max_depth", "max_tokens", "step"]
TURN_ENDS = ("answer", "eos")
LIMIT_ENDS = ("length", "max_depth", "max_tokens")


class SFTRow(TypedDict, total=False):
    """One correct path (`sft.jsonl`): the prompt and the whole response, as text and as token ids."""

    prompt_ids: Required[list[int]]
    completion_ids: Required[list[int]]
    complete: Required[bool]  # ends in a final answer: the trainer appends the end-of-turn token
    problem_id: str
    prompt: str
    completion: str
    rank: str  # shortest | medium | longest (Thoughts Length Balance)
    num_tokens: int


class PairRow(TypedDict, total=False):
    """One preference pair (`pairs.jsonl`): the shared prefix kept apart from the two divergent suffixes, so
    masking it is exact; `prompt` / `chosen` / `rejected` are the same as text, loadable by TRL as they are."""

    prompt_ids: Required[list[int]]
    prefix_ids: Required[list[int]]
    chosen_ids: Required[list[int]]
    rejected_ids: Required[list[int]]
    chosen_complete: Required[bool]  # ends in a final answer (what rows said before `*_end`)
    rejected_complete: Required[bool]
    chosen_end: End  # how the side ends; decides its end-of-turn token (`ends_turn`)
    rejected_end: End
    problem_id: str
    strategy: str  # path | step | length
    prompt: str
    chosen: str
    rejected: str
    chosen_q: float
    rejected_q: float
    chosen_n: int
    rejected_n: int
    confidence: float  # MCTS-DPO's visit confidence of the pair
    epsilon: float  # per-pair cDPO label smoothing derived from it (read with epsilon: pairs)


class Example(TypedDict):
    """What the collators see of a pair or an SFT row (see trainers/data.py)."""

    index: int  # the row's line in its file
    shared: list[int]  # prompt + shared prefix: written once with prefix sharing
    chosen: list[int]
    rejected: list[int] | None  # None for SFT rows
    epsilon: float
    response_start: int  # where the scored response begins inside `shared`
    prefix_len: int
    ref_chosen_logps: NotRequired[float]  # added by the cached reference (trainers/reference.py)
    ref_rejected_logps: NotRequired[float]


def required_keys(row_type: type) -> tuple[str, ...]:
    """The keys a trainer needs, in the order they are declared."""
    return tuple(k for k in row_type.__annotations__ if k in row_type.__required_keys__)


def ends_turn(row: dict, side: str) -> bool:
    """Whether a pair side's suffix ends with the end-of-turn token: when the model ended its turn there, with
    an answer or without one (an "eos" rejected side keeps it, so DPO learns not to stop without answering).
    A step or a path cut by a limit gets none: the model was still writing. Rows exported before `*_end`
    existed fall back to `*_complete`."""
    end = row.get(f"{side}_end")
    return end in TURN_ENDS if end is not None else bool(row[f"{side}_complete"])
