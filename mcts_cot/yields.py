"""What a search yields per generated token, read at several budgets from one growing run.

Yield = Σ over problems of min(distinct correct responses, K), K the export's per-problem cap: correct paths past
K are never exported, and paraphrased copies ("distinct" after whitespace and number normalisation) teach
nothing new. Budgets come from one run: an allocator run is, at each of its checkpoints, exactly a run with that
smaller budget (`search/allocator.py`), so `at_checkpoint` cuts each tree back to where checkpoint k found it; a
plain best-of-N run with a per-problem share is cut by `at_share` to what a smaller share would have drawn.
Intervals are 95% percentile bootstraps over problems (paired where two arms ran the same problems).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence

from mcts_cot.tree import Node, Tree

_SPACE = re.compile(r"\s+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DECIMAL = re.compile(r"\b(\d+)\.(\d*?)0+\b")


def normalise(text: str) -> str:
    """The text with runs of whitespace made one space and numbers written one way (1,000 → 1000, 3.50 → 3.5,
    4.0 → 4), so copies that differ only there count once."""
    text = _THOUSANDS.sub("", _SPACE.sub(" ", text).strip())
    return _DECIMAL.sub(lambda m: m[1] + ("." + m[2] if m[2] else ""), text)


def correct_responses(tree: Tree) -> list[str]:
    """The response text of every verified-correct end (the path from the root's child to it)."""
    return ["".join(n.text for n in tree.path(end)) for end in tree.nodes if end.verdict == "correct"]


def distinct_correct(tree: Tree) -> int:
    return len({normalise(t) for t in correct_responses(tree)})


def truncated(tree: Tree, n_nodes: int, reward: Callable[[str], float]) -> Tree:
    """The tree as it was when it had `n_nodes` nodes (ids are creation order), its values backed up again."""
    nodes = [Node(**{**n.to_row(), "N": 0, "W": 0.0}) for n in tree.nodes[:n_nodes]]
    for node in nodes[1:]:
        nodes[node.parent].children.append(node.id)
    for node in nodes:
        if node.verdict is not None:
            up: Node | None = node
            while up is not None:
                up.N += 1
                up.W += reward(node.verdict)
                up = nodes[up.parent] if up.parent is not None else None
    return Tree(problem=tree.problem, prompt_ids=tree.prompt_ids, prompt_text=tree.prompt_text, nodes=nodes,
                status=tree.status, reason=tree.reason, stats={})


def checkpoint_state(tree: Tree, k: int) -> tuple[int, int]:
    """(generated tokens, nodes) of `tree` at allocator checkpoint k (1 = the first grant, at 0 tokens); a tree
    that was finished or closed before checkpoint k is whole."""
    marks = tree.stats.get("checkpoints", [])
    if k - 1 < len(marks):
        return marks[k - 1][0], marks[k - 1][1]
    return tree.stats["generated_tokens"], len(tree.nodes)


def checkpoints(trees: Sequence[Tree]) -> int:
    """How many checkpoints the run had: the last one closed every tree still open, so there the trees are whole."""
    return max((len(t.stats.get("checkpoints", [])) for t in trees), default=0) + 1


def at_checkpoint(trees: Sequence[Tree], k: int, reward: Callable[[str], float]) -> tuple[list[Tree], int]:
    """The allocator run's trees at checkpoint k and the tokens they had generated."""
    states = [checkpoint_state(t, k) for t in trees]
    return [truncated(t, n, reward) for t, (_, n) in zip(trees, states, strict=True)], sum(s[0] for s in states)


def nearest_share(trees: Sequence[Tree], tokens: float, wave: int, reward: Callable[[str], float]) -> tuple[list[Tree], int]:
    """`at_share` at the per-problem share whose read-back total is nearest `tokens` (a share draws whole waves,
    so share = tokens / problems would overshoot by up to a wave per problem)."""
    lo, hi = 0, max((t.stats.get("generated_tokens", 0) for t in trees), default=0) + 1
    while lo < hi:  # the largest share whose total stays at or below `tokens`
        mid = (lo + hi + 1) // 2
        if at_share(trees, mid, wave, reward)[1] <= tokens:
            lo = mid
        else:
            hi = mid - 1
    below, above = at_share(trees, lo, wave, reward), at_share(trees, lo + 1, wave, reward)
    return min(below, above, key=lambda cut: abs(cut[1] - tokens))


def at_share(trees: Sequence[Tree], share: int, wave: int, reward: Callable[[str], float]) -> tuple[list[Tree], int]:
    """A best-of-N run's trees as a run with `tokens_per_problem = share` would have drawn them: `wave` samples
    at a time while the tree had generated less than `share` tokens."""
    out, tokens = [], 0
    for tree in trees:
        spent, n = 0, 1
        samples = tree.nodes[1:]
        while n - 1 < len(samples) and spent < share:
            batch = samples[n - 1:n - 1 + wave]
            spent += sum(len(s.token_ids) for s in batch)
            n += len(batch)
        out.append(truncated(tree, n, reward))
        tokens += spent
    return out, tokens


def bootstrap(values: Sequence[float], stat: Callable[[list[float]], float] = sum, n: int = 2000,
              seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of `stat` over problems resampled with replacement."""
    rng = random.Random(seed)
    draws = sorted(stat([values[rng.randrange(len(values))] for _ in values]) for _ in range(n))
    return draws[int(0.025 * n)], draws[int(0.975 * n) - 1]


def paired_ratio(a: Sequence[float], b: Sequence[float], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Σa / Σb and its 95% interval, problems resampled in pairs (a[i] and b[i] are the same problem); a
    resample with Σb = 0 counts as infinite (nan when Σa is 0 too, left out)."""
    rng = random.Random(seed)
    draws = []
    for _ in range(n):
        idx = [rng.randrange(len(a)) for _ in a]
        draws.append(_ratio(sum(a[i] for i in idx), sum(b[i] for i in idx)))
    draws = sorted(d for d in draws if not math.isnan(d)) or [math.nan]
    return _ratio(sum(a), sum(b)), draws[int(0.025 * len(draws))], draws[max(0, int(0.975 * len(draws)) - 1)]


def _ratio(a: float, b: float) -> float:
    if b:
        return a / b
    return math.inf if a else math.nan
