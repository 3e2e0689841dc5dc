"""Problems: `id`, `problem`, `answer` (+ metadata), from a built-in generator or local files.

Gold answers are checked at load time (they must parse with math-verify once wrapped in `\\boxed{}`), so a
bad row is reported with its file and row number instead of being silently scored as wrong later.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcts_cot.config import ProblemsConfig
from mcts_cot.errors import UserError


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "problem": self.problem, "answer": self.answer, **({"meta": self.meta} if self.meta else {})}


@dataclass
class LoadReport:
    """What loading kept and skipped (skipped rows only with `skip_bad_rows`)."""

    source: str
    loaded: int = 0
    skipped: list[str] = field(default_factory=list)


def load_problems(cfg: ProblemsConfig) -> tuple[list[Problem], LoadReport]:
    """Load problems as configured; raises `UserError` naming the file and row of a bad row."""
    report = LoadReport(source=cfg.source)
    if cfg.source.startswith("builtin:"):
        problems = _builtin(cfg)
    else:
        problems = _from_rows(cfg, report)
    if cfg.limit is not None:
        problems = problems[: cfg.limit]
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{cfg.source}: problem id {dup!r} appears more than once; ids must be unique")
    report.loaded = len(problems)
    return problems, report


# --------------------------------------------------------------------------------------------- files


def _from_rows(cfg: ProblemsConfig, report: LoadReport) -> list[Problem]:
    from mcts_cot.verify import parse_gold

    path = Path(cfg.source)
    problems = []
    for row_no, row in _read_rows(path):
        where = f"{path}: row {row_no}"
        text = row.get(cfg.problem_field)
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{where}: missing problem field '{cfg.problem_field}' (set problems.problem_field)")
        answer = row.get(cfg.answer_field)
        answer = "" if answer is None else str(answer).strip()
        reason = None
        if not answer:
            reason = f"missing answer field '{cfg.answer_field}'"
        elif not parse_gold(answer):
            reason = f"gold answer {answer!r} does not parse with math-verify"
        if reason:
            if cfg.skip_bad_rows:
                report.skipped.append(f"row {row_no}: {reason}")
                continue
            raise UserError(f"{where}: {reason} (fix the row or pass --set problems.skip_bad_rows=true)")
        pid = str(row.get(cfg.id_field, row_no))
        meta = {k: v for k, v in row.items() if k not in (cfg.id_field, cfg.problem_field, cfg.answer_field)}
        problems.append(Problem(id=pid, problem=text, answer=answer, meta=meta))
    return problems


def _read_rows(path: Path):
    """Yield (1-based row number, dict) from JSONL, JSON, Parquet or a saved `datasets` folder."""
    if not path.exists():
        raise UserError(f"{path}: problem file not found (sources: builtin:arithmetic[:N], .jsonl, .json, .parquet, datasets folder)")
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure here means "not a saved dataset"
            raise UserError(f"{path}: not a saved datasets folder ({exc})") from None
        if isinstance(ds, datasets.DatasetDict):
            raise UserError(f"{path}: holds several splits ({', '.join(ds)}); point at one split's folder")
        yield from enumerate(ds, start=1)
    elif path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            for no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}: row {no}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}: row {no}: expected a JSON object")
                yield no, row
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a list of objects (or an object holding one)")
        yield from enumerate(data, start=1)
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(path).to_pylist(), start=1)
    else:
        raise UserError(f"{path}: unknown problem file type '{path.suffix}' (use .jsonl, .json, .parquet or a datasets folder)")


# --------------------------------------------------------------------------------------------- builtin

_NAMES = ["Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Max", "Nia"]
_ITEMS = ["apples", "marbles", "stickers", "books", "cookies", "pencils", "shells", "cards", "coins", "eggs"]

# Each step: (phrase with {k} for the operand, function). Steps keep every intermediate a positive integer.
_Step = tuple[str, Callable[[int, int], int]]
_STEPS: dict[str, list[_Step]] = {
    "add": [("then gets {k} more", lambda x, k: x + k), ("then finds {k} more", lambda x, k: x + k)],
    "sub": [("then gives {k} away", lambda x, k: x - k), ("then loses {k}", lambda x, k: x - k)],
    "mul": [("then the amount is multiplied by {k}", lambda x, k: x * k),
            ("then ends up with {k} times as many", lambda x, k: x * k)],
    "div": [("then splits them into {k} equal groups and keeps one group", lambda x, k: x // k)],
}


def _builtin(cfg: ProblemsConfig) -> list[Problem]:
    spec = cfg.source.split(":")
    if len(spec) not in (2, 3) or spec[1] != "arithmetic":
        raise UserError(f"problem source {cfg.source!r}: expected builtin:arithmetic or builtin:arithmetic:N")
    try:
        count = int(spec[2]) if len(spec) == 3 else 100
    except ValueError:
        raise UserError(f"problem source {cfg.source!r}: N must be a whole number") from None
    if not 1 <= cfg.difficulty <= 3:
        raise UserError(f"problems.difficulty must be 1, 2 or 3, got {cfg.difficulty}")
    return arithmetic_problems(count, cfg.split, cfg.difficulty, cfg.seed)


def arithmetic_problems(count: int, split: str, difficulty: int = 2, seed: int = 0) -> list[Problem]:
    """`count` one- to `difficulty`-step word problems with exact positive integer answers.

    One seeded stream of problems is split by a hash of each problem's text (1 in 5 goes to test), so the
    train and test splits can never share a problem, whatever their sizes.
    """
    rng = random.Random(f"arithmetic-{difficulty}-{seed}")
    seen: set[str] = set()
    out: list[Problem] = []
    while len(out) < count:
        text, answer, steps = _one_problem(rng, difficulty)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if text in seen or (int(digest, 16) % 5 == 0) != (split == "test"):
            continue
        seen.add(text)
        out.append(Problem(id=f"arith-{split}-{digest[:10]}", problem=text, answer=str(answer),
                           meta={"steps": steps, "source": f"builtin:arithmetic/{split}"}))
    return out


def _one_problem(rng: random.Random, difficulty: int) -> tuple[str, int, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    value = rng.randint(2, 20)
    steps = rng.randint(1, difficulty)
    parts = [f"{name} has {value} {item}"]
    for _ in range(steps):
        kind = rng.choice(list(_STEPS))
        phrase, fn = rng.choice(_STEPS[kind])
        if kind == "sub":
            k = rng.randint(1, max(1, value - 1))
        elif kind == "mul":
            k = rng.randint(2, 4) if value < 40 else 2
        elif kind == "div":
            divisors = [d for d in range(2, 6) if value % d == 0]
            if not divisors:
                phrase, fn, k = _STEPS["add"][0][0], _STEPS["add"][0][1], rng.randint(2, 12)
            else:
                k = rng.choice(divisors)
        else:
            k = rng.randint(2, 15)
        if value - k < 1 and kind == "sub":
            continue
        parts.append(phrase.format(k=k))
        value = fn(value, k)
    text = ", ".join(parts) + f". How many {item} does {name} have now?"
    return text, value, steps
