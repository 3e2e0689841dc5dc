"""Where a trajectory may be branched: its paragraphs, its checkpoints, and which checkpoints to use.

A checkpoint is a paragraph break: the tree continues from the text before it. The breaks that matter most
are those followed by a reflection marker ("Wait", "Alternatively", "But"): there the model reconsiders, and a
continuation can go either way. A trajectory without such a break (the embedded model rarely writes one) is
cut at every paragraph break. Which checkpoints get continuations follows the deck: too early a cut is plain
DPO on whole responses, too late a cut is past saving, so short trajectories are cut early more often.
"""

from __future__ import annotations

import random
import re

EARLY_WEIGHTED = (1, 1, 1, 1, 1, 2, 2, 3, 3, 4, 5)  # the deck's draw for trajectories with <= 10 checkpoints
SHORT = 10


def paragraphs(text: str, breaks: list[str]) -> list[str]:
    """`text` cut after each run of the first break string that gives two or more paragraphs (each keeps its
    trailing break, so the pieces join back to `text`); the whole text when none does. GSM8K's reference
    solutions have no blank lines, so the default breaks fall back from a blank line to a line end."""
    for brk in breaks:
        pieces = [p for p in re.split(f"((?:{re.escape(brk)})+)", text)]
        joined = [pieces[i] + (pieces[i + 1] if i + 1 < len(pieces) else "") for i in range(0, len(pieces), 2)]
        joined = [p for p in joined if p]
        if joined and not joined[0].strip():  # leading breaks belong to the first paragraph
            joined[:2] = ["".join(joined[:2])]
        if sum(bool(p.strip()) for p in joined) >= 2:
            return _merge_empty_tail(joined)
    return [text]


def token_bounds(tokenizer, ids: list[int], parts: list[str]) -> list[int]:
    """Where the paragraphs `parts` of the text `ids` decode to begin and end, in tokens: [0, ..., len(ids)],
    each end the fewest leading tokens whose text covers the paragraphs so far (a break inside a token goes
    with that token). Cutting the ids there keeps them the model's own, token for token."""
    ends, at = [], 0
    for part in parts[:-1]:
        at += len(part)
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if len(tokenizer.decode(ids[:mid])) >= at:
                hi = mid
            else:
                lo = mid + 1
        ends.append(lo)
    return [0, *ends, len(ids)]


def _merge_empty_tail(parts: list[str]) -> list[str]:
    """A trailing piece of only whitespace is no paragraph: it joins the one before it."""
    if len(parts) > 1 and not parts[-1].strip():
        parts[-2:] = ["".join(parts[-2:])]
    return parts


def checkpoints(parts: list[str], markers: list[str]) -> list[int]:
    """Cut positions k (continue after the first k paragraphs, 1 <= k < len(parts)): the breaks followed by a
    reflection marker, else every break."""
    allowed = list(range(1, len(parts)))
    if not markers:
        return allowed
    rx = re.compile(r"\s*(?:" + "|".join(re.escape(m) for m in markers) + r")\b")
    marked = [k for k in allowed if rx.match(parts[k])]
    return marked or allowed


def choose(cuts: list[int], count: int, rng: random.Random) -> list[int]:
    """`count` of the cut positions, in order. With at most 10 candidates: draws without replacement from the
    early-weighted list 1,1,1,1,1,2,2,3,3,4,5 (an index into the candidates; indices past their number are
    dropped), so the first candidates are picked most often; a repeated draw is skipped. With more: one candidate per 10%
    quantile of the trajectory, `count` of those ten drawn uniformly."""
    if not cuts:
        return []
    if len(cuts) <= SHORT:
        pool = [i for i in EARLY_WEIGHTED if i <= len(cuts)]
        rng.shuffle(pool)
        picked = list(dict.fromkeys(pool))[:count]
        return sorted(cuts[i - 1] for i in picked)
    deciles = sorted({cuts[len(cuts) * q // 10] for q in range(10)})
    return sorted(rng.sample(deciles, min(count, len(deciles))))
