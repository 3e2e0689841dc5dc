"""From one search tree to training rows: length-balanced SFT paths and preference pairs.

Everything here is a pure function of one `Tree`. A pair is two end nodes (chosen, rejected); a row keeps
the prompt + the two responses' longest common token prefix apart from the two divergent suffixes, as token
ids and as text, so the trainer masks exactly what both sides share (Marco-o1's masking, MCTS-DPO's
divergence index): that is more than the shared nodes when sibling steps open alike (one request's
children share its open tag and prefill). Pair strategies are small functions registered in `STRATEGIES`; each
returns its candidate (chosen, rejected) ends in order of preference plus the counts it dropped and why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mcts_cot.config import option
from mcts_cot.rows import LIMIT_ENDS, PairRow, SFTRow
from mcts_cot.tree import Node, Tree

Rank = Literal["shortest", "medium", "longest"]
Q_TOLERANCE = 1e-9  # Q values are float means: 0.7 - 0.4 must pass a 0.3 margin


@dataclass
class SftPaths:
    """Thoughts Length Balance (Marco-o1 §1.8): rank each problem's verified-correct paths by token length and
    keep chosen ranks. Short and long are relative to the problem, never a fixed token threshold."""

    select: list[Rank] = option(["longest"], "Ranks to keep: any of shortest, medium, longest (the paper uses the longest for SFT). [] = no SFT rows.")
    per_rank: int = option(1, "Paths taken at each selected rank (e.g. 2 with longest = the two longest).", ge=1)
    max_per_problem: int | None = option(None, "Most SFT rows per problem (null = no cap), taken in `select` order.", ge=0)


@dataclass
class PathPairs:
    """The paper's pairs (Marco-o1 §1.9): a correct path against the wrong path sharing the shortest prefix with it."""

    chosen: Literal["shortest", "longest", "all"] = option("shortest", "Which correct paths are chosen: the shortest (the paper, for DPO), the longest, or all (shortest first, up to max_chosen).")
    max_chosen: int = option(4, "With chosen=all: most correct paths used per problem.", ge=1)
    rejected_per_chosen: int = option(1, "Rejected paths per chosen path, fewest shared prefix tokens first.", ge=1)
    max_per_problem: int | None = option(4, "Most path pairs per problem (null = no cap).", ge=0)


@dataclass
class StepPairs:
    """MCTS-DPO / Step-DPO pairs: at a node whose children's Q differ by a margin, the best child against the worst."""

    margin: float = option(0.3, "Least Q difference between the best and the worst child (Q = mean reward, 0..1 with the default rewards).", ge=0)
    min_visits: int = option(2, "Children visited fewer times are not compared (their Q is too noisy).", ge=1)
    completion: Literal["step", "continuation"] = option("step", "step: each suffix is the one divergent step (Step-DPO). continuation: the step plus a continuation down to a terminal — the chosen side follows children leading to a correct answer (then highest Q), the rejected side children leading to a rejected end (then lowest Q).")
    max_per_problem: int | None = option(8, "Most step pairs per problem (null = no cap), largest Q gap first (MCTS-DPO keeps up to 8).", ge=0)


@dataclass
class LengthPairs:
    """Short vs long correct paths (SkyThought-Flash; reversed, Thinking Preference Optimization): the i-th
    shortest against the i-th longest correct path of a problem."""

    prefer: Literal["short", "long"] = option("short", "Which path of a pair is chosen: the short one or the long one.")
    min_ratio: float = option(1.5, "Least token-length ratio long / short of the two full paths.", ge=1)
    max_per_problem: int | None = option(2, "Most length pairs per problem (null = no cap).", ge=0)


@dataclass
class Facts:
    """What every selection rule needs about one tree, computed once."""

    tree: Tree
    correct: list[Node]  # ends of the distinct verified-correct paths, shortest first (ties: lower id)
    rejected: list[Node]  # terminals whose verdict is a rejected one, by id
    duplicates: int  # correct ends dropped because an earlier one has the same token ids
    to_correct: set[int]  # nodes with a correct end at or below them
    to_rejected: set[int]  # nodes with a rejected end at or below them
    limit_cut_rejected: bool = True  # whether a path cut by a length or depth limit may be a rejected side
    limit_cut_excluded: int = 0  # rejected ends left out because they were cut by a limit


def facts(tree: Tree, rejected_verdicts: list[str], limit_cut_rejected: bool = True) -> Facts:
    correct_ends = [n for n in tree.nodes if n.terminal == "answer" and n.verdict == "correct"]
    candidates = [n for n in tree.nodes if n.terminal is not None and n.verdict in rejected_verdicts]
    rejected = [n for n in candidates if limit_cut_rejected or n.terminal not in LIMIT_ENDS]
    distinct: dict[tuple[int, ...], Node] = {}
    for end in correct_ends:
        distinct.setdefault(tuple(tree.path_ids(end)), end)
    correct = sorted(distinct.values(), key=lambda n: (len(tree.path_ids(n)), n.id))
    return Facts(tree, correct, rejected, len(correct_ends) - len(correct), _at_or_above(tree, correct_ends),
                 _at_or_above(tree, rejected), limit_cut_rejected, len(candidates) - len(rejected))


def _at_or_above(tree: Tree, ends: list[Node]) -> set[int]:
    return {n.id for end in ends for n in tree.path(end)}


def _text(nodes: list[Node]) -> str:
    return "".join(n.text for n in nodes)


def _ids(nodes: list[Node]) -> list[int]:
    return [t for n in nodes for t in n.token_ids]


# --------------------------------------------------------------------------------------------- SFT


def _rank_slice(rank: Rank, n: int, k: int) -> range:
    start = {"shortest": 0, "medium": max(0, (n - k) // 2), "longest": max(0, n - k)}[rank]
    return range(start, min(n, start + k))


def sft_rows(f: Facts, cfg: SftPaths) -> tuple[list[SFTRow], Counter]:
    """The selected ranks of the problem's distinct correct paths; a path picked by two ranks is kept once,
    labelled with the first rank in `select` that picked it."""
    picked: dict[int, Rank] = {}
    for rank in cfg.select:
        for i in _rank_slice(rank, len(f.correct), cfg.per_rank):
            picked.setdefault(i, rank)
    kept = list(picked.items())[:cfg.max_per_problem]
    counts = Counter(kept=len(kept), duplicate=f.duplicates, not_selected=len(f.correct) - len(picked),
                     cap=len(picked) - len(kept))
    rows = []
    for i, rank in kept:
        end = f.correct[i]
        path = f.tree.path(end)
        ids = _ids(path)
        rows.append(SFTRow(problem_id=f.tree.problem["id"], prompt=f.tree.prompt_text, completion=_text(path),
                           prompt_ids=list(f.tree.prompt_ids), completion_ids=ids,
                           complete=end.terminal == "answer", rank=rank, num_tokens=len(ids)))
    return rows, +counts


# --------------------------------------------------------------------------------------------- pair strategies

Ends = list[tuple[Node, Node]]


def path_pairs(f: Facts, cfg: PathPairs) -> tuple[Ends, Counter]:
    """Each chosen correct path against the rejected paths that share the fewest prefix tokens with it, so the
    pair overlaps as little as the tree allows (ties: the shorter rejected path, then the lower id)."""
    chosen = {"shortest": f.correct[:1], "longest": f.correct[-1:], "all": f.correct[:cfg.max_chosen]}[cfg.chosen]
    drops = Counter(chosen_not_selected=(len(f.correct) - len(chosen)) * len(f.rejected))
    out: Ends = []
    for c in chosen:
        ranked = sorted(f.rejected, key=lambda r: (_shared_tokens(f.tree, c, r), len(f.tree.path_ids(r)), r.id))
        out += [(c, r) for r in ranked[:cfg.rejected_per_chosen]]
        drops["longer_shared_prefix"] += len(ranked[cfg.rejected_per_chosen:])
    return out, drops


def _shared_tokens(tree: Tree, a: Node, b: Node) -> int:
    return _common_prefix(tree.path_ids(a), tree.path_ids(b))


def step_pairs(f: Facts, cfg: StepPairs) -> tuple[Ends, Counter]:
    """At every node with two or more comparable children, the highest-Q child against the lowest-Q one
    (MCTS-DPO's choose_worst), kept when their Q differ by `margin`; largest gap first."""
    drops: Counter = Counter()
    found = []
    for node in f.tree.nodes:
        kids = [k for k in f.tree.children(node) if k.verdict != "unverifiable"]
        if len(kids) < 2:
            continue
        kids = [k for k in kids if k.N >= cfg.min_visits]
        if len(kids) < 2:
            drops["min_visits"] += 1
            continue
        best = max(kids, key=lambda k: (k.Q, k.N, -k.id))
        worst = min(kids, key=lambda k: (k.Q, -k.N, k.id))
        if best.Q - worst.Q + Q_TOLERANCE < cfg.margin:
            drops["margin"] += 1
            continue
        found.append((best.Q - worst.Q, node.id, best, worst))
    found.sort(key=lambda item: (-item[0], item[1]))
    if cfg.completion == "step":
        return [(best, worst) for _, _, best, worst in found], drops
    return [(_follow(f.tree, best, f.to_correct, 1), _follow(f.tree, worst, f.to_rejected, -1))
            for _, _, best, worst in found], drops


def _follow(tree: Tree, node: Node, toward: set[int], sign: int) -> Node:
    """Walk down to a leaf, preferring children that lead to `toward` ends, then by Q (highest with sign 1,
    lowest with -1), then the most visited: the representative continuation of a chosen / rejected step."""
    while node.children:
        node = max(tree.children(node), key=lambda k: (k.id in toward, sign * k.Q, k.N, -k.id))
    return node


def length_pairs(f: Facts, cfg: LengthPairs) -> tuple[Ends, Counter]:
    """The i-th shortest correct path against the i-th longest, when the long one is `min_ratio` times longer."""
    drops: Counter = Counter()
    out: Ends = []
    n = len(f.correct)
    for short, long in zip(f.correct[:n // 2], f.correct[::-1][:n // 2], strict=True):
        if len(f.tree.path_ids(long)) < cfg.min_ratio * max(1, len(f.tree.path_ids(short))):
            drops["min_ratio"] += 1
            continue
        out.append((short, long) if cfg.prefer == "short" else (long, short))
    return out, drops


@dataclass
class CheckpointPairs:
    """Checkpoint DPO pairs from a checkpoint run (`mcts-cot checkpoints`, method branch): at a checkpoint of a
    correct trajectory, the original continuation against a sampled one that went wrong (right-to-wrong); at
    a checkpoint of a wrong trajectory, a sampled continuation that came out right against the original
    (wrong-to-right). Trees without continuation nodes give none."""

    max_per_problem: int | None = option(8, "Most checkpoint pairs per problem (null = no cap), earliest continuation first.", ge=0)


@dataclass
class DtoPairs:
    """DTO pairs from a checkpoint run (method dto): the shortest verified truncated trajectory of a problem
    against its longest original one (correct or wrong). Trees without a kept truncation give none."""

    max_per_problem: int | None = option(1, "Most DTO pairs per problem (null = no cap).", ge=0)


def _original_end(tree: Tree, node: Node) -> Node:
    """The end of the original trajectory a checkpoint node lies on."""
    while (kids := [k for k in tree.children(node) if k.kind == "original"]):
        node = kids[0]
    return node


def checkpoint_pairs(f: Facts, cfg: CheckpointPairs) -> tuple[Ends, Counter]:
    """Each continuation whose verdict differs from its trajectory's: the correct side chosen."""
    rejected = {n.id for n in f.rejected}
    drops: Counter = Counter()
    out: Ends = []
    for node in f.tree.nodes:
        if node.kind != "continuation" or node.terminal is None:
            continue
        original = _original_end(f.tree, f.tree.nodes[node.parent])
        if original.verdict == "correct" and node.id in rejected:
            out.append((original, node))
        elif original.id in rejected and node.verdict == "correct":
            out.append((node, original))
        else:
            drops["same_outcome" if node.verdict == original.verdict else "not_comparable"] += 1
    return out, drops


def dto_pairs(f: Facts, cfg: DtoPairs) -> tuple[Ends, Counter]:
    """The shortest kept truncation against the longest original trajectory of the problem."""
    kept = [n for n in f.correct if n.kind == "exit"]
    originals = [n for n in f.tree.leaves() if n.kind == "original" and n.verdict in ("correct", *{r.verdict for r in f.rejected})]
    if not kept or not originals:
        return [], Counter(no_truncation=1) if not kept else Counter(no_original=1)
    longest = max(originals, key=lambda n: (len(f.tree.path_ids(n)), -n.id))
    return [(kept[0], longest)], Counter(more_truncations=len(kept) - 1)


STRATEGIES: dict[str, Callable[[Facts, Any], tuple[Ends, Counter]]] = {
    "path": path_pairs, "step": step_pairs, "length": length_pairs, "checkpoint": checkpoint_pairs, "dto": dto_pairs,
}


# --------------------------------------------------------------------------------------------- pair rows


def _divergence(a: list[Node], b: list[Node]) -> int:
    """Index of the first differing node of two root paths."""
    k = 0
    while k < min(len(a), len(b)) and a[k].id == b[k].id:
        k += 1
    return k


def _common_prefix(a: list | str, b: list | str) -> int:
    """Length of the longest common prefix of two sequences."""
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def pair_row(tree: Tree, strategy: str, chosen: Node, rejected: Node) -> PairRow | None:
    """The TRL-loadable row of a pair, or None when a suffix would be empty (one response starts the other).

    prefix_ids is the two responses' longest common token prefix, and prompt_ids + prefix_ids + chosen_ids the
    exact token ids of the full chosen path. The text is split at the longest common character prefix (TRL
    re-tokenises text; prompt + chosen is the full chosen text): the same split wherever tokens are whole
    characters, a few characters later otherwise. `*_end` says how each side ends (`rows.End`). Q, N and
    the visit-count confidence (MCTS-DPO: c = 1 / (1 + N_l / max(1, N_w)), ε = min(1 - c, 0.5)) are those of
    the first divergent node on each side.
    """
    a, b = tree.path(chosen), tree.path(rejected)
    k = _divergence(a, b)
    ids_a, ids_b = _ids(a), _ids(b)
    shared = _common_prefix(ids_a, ids_b)
    if shared in (len(ids_a), len(ids_b)):  # also when one path holds the other (k reaches an end)
        return None
    text_a, text_b = _text(a), _text(b)
    chars = _common_prefix(text_a, text_b)
    cw, cl = a[k], b[k]
    confidence = 1 / (1 + cl.N / max(1, cw.N))
    return PairRow(
        problem_id=tree.problem["id"], strategy=strategy,
        prompt=tree.prompt_text + text_a[:chars], chosen=text_a[chars:], rejected=text_b[chars:],
        prompt_ids=list(tree.prompt_ids), prefix_ids=ids_a[:shared], chosen_ids=ids_a[shared:],
        rejected_ids=ids_b[shared:],
        chosen_complete=chosen.terminal == "answer", rejected_complete=rejected.terminal == "answer",
        chosen_end=chosen.terminal or "step", rejected_end=rejected.terminal or "step",
        chosen_q=cw.Q, rejected_q=cl.Q, chosen_n=cw.N, rejected_n=cl.N,
        confidence=confidence, epsilon=min(1 - confidence, 0.5),
    )


def pair_rows(f: Facts, strategies: list[str], configs: dict[str, Any],
              max_per_problem: int | None) -> tuple[list[PairRow], dict[str, Counter]]:
    """Run the strategies in order and keep their candidates unless a suffix is empty (one response starts or
    equals the other), an end is unverifiable, the rejected side was cut by a limit and may not be used, an
    earlier strategy already made the same pair, or a cap is reached."""
    rows: list[PairRow] = []
    seen: set[tuple] = set()
    counts: dict[str, Counter] = {}
    for name in strategies:
        cfg = configs[name]
        ends, counts[name] = STRATEGIES[name](f, cfg)
        kept = 0
        for chosen, rejected in ends:
            row = pair_row(f.tree, name, chosen, rejected)
            reason = _drop_reason(row, chosen, rejected, seen, kept, cfg.max_per_problem, len(rows), max_per_problem,
                                  f.limit_cut_rejected)
            counts[name][reason or "kept"] += 1
            if reason is None:
                seen.add(_key(row))
                rows.append(row)
                kept += 1
    return rows, {name: +c for name, c in counts.items()}


def _key(row: PairRow) -> tuple:
    return tuple(row["prefix_ids"]), tuple(row["chosen_ids"]), tuple(row["rejected_ids"])


def _drop_reason(row, chosen: Node, rejected: Node, seen: set, kept: int, cap: int | None, total: int,
                 total_cap: int | None, limit_cut_rejected: bool) -> str | None:
    if row is None:
        return "empty_suffix"
    if "unverifiable" in (chosen.verdict, rejected.verdict):
        return "unverifiable"
    if not limit_cut_rejected and row["rejected_end"] in LIMIT_ENDS:
        return "limit_cut"
    if _key(row) in seen:
        return "duplicate"
    if cap is not None and kept >= cap:
        return "cap"
    if total_cap is not None and total >= total_cap:
        return "problem_cap"
    return None
