"""Trajectories to branch, from three kinds of source, grouped by problem.

- an eval dir or its `samples.jsonl` (the model's own samples: `id`, `problem`, `gold`, `samples[].text`);
- a search run dir (every terminal path of every finished tree, with the tree's own prompt and token ids);
- any JSONL of responses with `id` / `problem` / `answer` fields and a text field (`text_field`, e.g. the
  `solution` of `../shared/data/gsm8k_train_2k.jsonl`): trajectories from elsewhere.

Text is tokenised once here; a run's paths keep their token ids. Verdicts are given later, by one verifier
batch over every trajectory (`driver.py`), so every source is labelled by the same extractor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mcts_cot.answers import extract_answer
from mcts_cot.errors import UserError
from mcts_cot.io import iter_jsonl
from mcts_cot.problems import Problem


@dataclass
class Trajectory:
    """One response to one problem: its text and, when the source has them, its token ids and prompt."""

    problem: Problem
    text: str
    token_ids: list[int] | None = None
    prompt_ids: list[int] | None = None


def load(source: str, text_field: str = "solution", limit: int | None = None,
         per_problem: int | None = None, close_with_gold: bool = False) -> dict[str, list[Trajectory]]:
    """Trajectories by problem id, in source order (first `limit` problems, first `per_problem` of each);
    `close_with_gold`: see `TrajectorySource.close_with_gold`."""
    path = Path(source)
    if path.is_dir() and any(path.glob("trees*.jsonl")):
        found = _from_run(path)
    elif path.is_dir() and (path / "samples.jsonl").is_file():
        found = _from_samples(path / "samples.jsonl")
    elif path.is_file():
        found = _from_samples(path) if _is_samples(path) else _from_rows(path, text_field, close_with_gold)
    else:
        raise UserError(f"{source}: not a search run dir, an eval dir, or a JSONL file of responses")
    out: dict[str, list[Trajectory]] = {}
    for traj in found:
        out.setdefault(traj.problem.id, []).append(traj)
    if not out:
        raise UserError(f"{source}: holds no trajectories")
    ids = list(out)[:limit]
    return {pid: out[pid][:per_problem] for pid in ids}


def _is_samples(path: Path) -> bool:
    first = next(iter_jsonl(path), None)
    return first is not None and "samples" in first[1]


def _from_samples(path: Path) -> list[Trajectory]:
    out = []
    for line, row in iter_jsonl(path):
        try:
            problem = Problem(id=str(row["id"]), problem=row["problem"], answer=str(row["gold"]))
            out += [Trajectory(problem, s["text"]) for s in row["samples"]]
        except (KeyError, TypeError) as exc:
            raise UserError(f"{path}: line {line}: an eval sample row needs id, problem, gold and samples[].text "
                            f"(missing {exc})") from None
    return out


def _from_rows(path: Path, text_field: str, close_with_gold: bool) -> list[Trajectory]:
    out = []
    for line, row in iter_jsonl(path):
        missing = [k for k in ("problem", "answer", text_field) if not isinstance(row.get(k), str | int | float)]
        if missing:
            raise UserError(f"{path}: line {line}: lacks {', '.join(missing)} (the response text is "
                            f"trajectories.text_field = {text_field!r})")
        problem = Problem(id=str(row.get("id", line)), problem=row["problem"], answer=str(row["answer"]))
        text = str(row[text_field])
        if close_with_gold and extract_answer(text) is None:
            text = f"{text.rstrip()}\n\nThe answer is \\boxed{{{problem.answer}}}."
        out.append(Trajectory(problem, text))
    return out


def _from_run(path: Path) -> list[Trajectory]:
    from mcts_cot.store import iter_trees
    from mcts_cot.tree import STOPPED

    out = []
    for tree in iter_trees(path):
        if tree.status == STOPPED:
            continue
        p = tree.problem
        problem = Problem(id=str(p["id"]), problem=p["problem"], answer=str(p["answer"]))
        for end in tree.leaves():
            nodes = tree.path(end)
            out.append(Trajectory(problem, "".join(n.text for n in nodes), tree.path_ids(end), list(tree.prompt_ids)))
    return out
