"""Problems: `id`, `problem`, `answer` (+ metadata), from a built-in generator or local files.

Gold answers are checked at load time (they must parse with math-verify once wrapped in `\\boxed{}`), so a
bad row is reported with its file and row number instead of being silently scored as wrong later. So is a
problem whose prompt cannot fit the model's context (given a `Context`), an unreadable file, and a file
with no problems at all: each is one line naming the file and row, never a traceback or an empty run.
"""

from __future__ import annotations

import hashlib
import json
import operator
import random
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from mcts_cot.config import ProblemsConfig, PromptConfig, VerifyConfig
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
    rows: dict[str, int] = field(default_factory=dict, repr=False)
    """Problem id -> row number in the source, for errors found after reading."""

    def where(self, problem: Problem) -> str:
        return f"row {self.rows[problem.id]} (id {_clip(problem.id)})"


@dataclass(frozen=True)
class Context:
    """What each prompt must fit: the chat prompt of a problem, rendered by `tokenizer`, must leave at least
    one of `max_model_len` tokens (backend.max_model_len) to generate. Checked at load time, so a problem
    that can never run is named up front rather than failing, or tokenising for minutes, mid-run."""

    tokenizer: Any
    prompt: PromptConfig
    max_model_len: int

    @classmethod
    def of(cls, cfg: Any) -> Context:
        """The context of a command config with `model`, `prompt` and `backend` sections."""
        from mcts_cot.models import load_tokenizer

        return cls(load_tokenizer(cfg.model.name), cfg.prompt, cfg.backend.max_model_len)

    @cached_property
    def _most_chars(self) -> int:
        """Most characters `max_model_len` tokens can hold: no token spells more than its vocab string."""
        return self.max_model_len * max(map(len, self.tokenizer.get_vocab()))

    def misfit(self, problem: Problem) -> str | None:
        """Why `problem` cannot fit, or None. The length in characters is checked first: a 50 MB problem
        is refused at once instead of being tokenised."""
        from mcts_cot.prompts import prompt_ids

        if len(problem.problem) > self._most_chars:
            return (f"the problem is {len(problem.problem)} characters, more than {self.max_model_len} tokens "
                    f"(backend.max_model_len) can hold")
        tokens = len(prompt_ids(self.tokenizer, self.prompt, problem.problem))
        if tokens >= self.max_model_len:
            return (f"the prompt is {tokens} tokens, more than fit in backend.max_model_len "
                    f"({self.max_model_len}) with room to generate")
        return None


def load_problems(cfg: ProblemsConfig, verify: VerifyConfig | None = None,
                  context: Context | None = None) -> tuple[list[Problem], LoadReport]:
    """Load problems as configured; raises `UserError` naming the file and row of a bad row.

    Gold answers are checked by a verify pool with `verify` (the run's settings); with a `context`, every
    prompt must fit it. `skip_bad_rows` turns a bad row into a reported skip.
    """
    report = LoadReport(source=cfg.source)
    if cfg.source.startswith("builtin:"):
        problems = _builtin(cfg)
        report.rows = {p.id: i for i, p in enumerate(problems, start=1)}
    else:
        problems = _from_rows(cfg, report, verify)
    if cfg.limit is not None:
        problems = problems[: cfg.limit]
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{cfg.source}: problem id {dup!r} appears more than once; ids must be unique")
    if context is not None:
        problems = [p for p in problems if _fits(p, context, cfg, report)]
    if not problems:
        raise UserError(_nothing_left(cfg.source, report))
    report.loaded = len(problems)
    return problems, report


def _fits(problem: Problem, context: Context, cfg: ProblemsConfig, report: LoadReport) -> bool:
    reason = context.misfit(problem)
    if reason and not cfg.skip_bad_rows:
        raise UserError(f"{cfg.source}: {report.where(problem)}: {reason} (shorten it, raise backend.max_model_len "
                        f"or pass --set problems.skip_bad_rows=true)")
    if reason:
        report.skipped.append(f"{report.where(problem)}: {reason}")
    return reason is None


def _nothing_left(source: str, report: LoadReport) -> str:
    if report.skipped:
        return f"{source}: every row was skipped ({len(report.skipped)}); first: {report.skipped[0]}"
    return f"{source}: the file holds no problems (it is empty)"


def _clip(text: str, most: int = 60) -> str:
    """`repr(text)`, shortened in the middle: an error stays one readable line whatever the row holds."""
    return repr(text) if len(text) <= most else repr(text[: most // 2]) + f"...({len(text)} chars)..." + repr(text[-most // 2:])


# --------------------------------------------------------------------------------------------- files


def _from_rows(cfg: ProblemsConfig, report: LoadReport, verify: VerifyConfig | None) -> list[Problem]:
    """Read every row, then check all gold answers in one batch (the verify pool works them in parallel)."""
    from mcts_cot.verify import check_golds

    path = Path(cfg.source)
    rows = []
    for row_no, row in _read_rows(path):
        text = row.get(cfg.problem_field)
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{path}: row {row_no}: missing problem field '{cfg.problem_field}' (set problems.problem_field)")
        answer = row.get(cfg.answer_field)
        rows.append((row_no, row, text, "" if answer is None else str(answer).strip()))
    parses = iter(check_golds([answer for *_, answer in rows if answer], verify))
    problems = []
    for row_no, row, text, answer in rows:
        reason = None
        if not answer:
            reason = f"missing answer field '{cfg.answer_field}'"
        elif not next(parses):
            reason = f"gold answer {_clip(answer)} does not parse with math-verify"
        if reason:
            if cfg.skip_bad_rows:
                report.skipped.append(f"row {row_no}: {reason}")
                continue
            raise UserError(f"{path}: row {row_no}: {reason} (fix the row or pass --set problems.skip_bad_rows=true)")
        pid = str(row.get(cfg.id_field, row_no))
        meta = {k: v for k, v in row.items() if k not in (cfg.id_field, cfg.problem_field, cfg.answer_field)}
        problems.append(Problem(id=pid, problem=text, answer=answer, meta=meta))
        report.rows[pid] = row_no
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
        yield from _jsonl_rows(path)
    elif path.suffix == ".json":
        data = _decode(path.read_bytes(), path, "line")
        try:
            data = json.loads(data, parse_int=_int_or_digits)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a list of objects (or an object holding one)")
        yield from enumerate(data, start=1)
    elif path.suffix == ".parquet":
        yield from _parquet_rows(path)
    else:
        raise UserError(f"{path}: unknown problem file type '{path.suffix}' (use .jsonl, .json, .parquet or a datasets folder)")


def _jsonl_rows(path: Path):
    with open(path, "rb") as fh:
        for no, raw in enumerate(fh, start=1):
            line = _decode(raw, path, f"row {no}", bom=no == 1)
            if not line.strip():
                continue
            try:
                row = json.loads(line, parse_int=_int_or_digits)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: row {no}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}: row {no}: expected a JSON object")
            yield no, row


def _decode(data: bytes, path: Path, where: str, bom: bool = True) -> str:
    """UTF-8 text (a leading BOM dropped); else an error naming the row (or line), byte and column."""
    try:
        return data.decode("utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError as exc:
        if where == "line":
            line_start = data.rfind(b"\n", 0, exc.start) + 1
            line_no = data.count(b"\n", 0, exc.start) + 1
            where = f"line {line_no}"
        else:
            line_start = 0
        raise UserError(f"{path}: {where}: not UTF-8 (byte 0x{data[exc.start]:02x} at column "
                        f"{exc.start - line_start + 1}); save the file as UTF-8") from None


def _int_or_digits(text: str) -> int | str:
    """A JSON integer, kept as its digits when it is past Python's int() limit (4,300 digits): a gold
    answer can be that long."""
    limit = sys.get_int_max_str_digits()
    return text if limit and len(text.lstrip("-")) > limit else int(text)


def _parquet_rows(path: Path):
    """Rows one row group at a time, so damage is reported with the rows it hides."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    first = 1
    for group in range(parquet.num_row_groups):
        count = parquet.metadata.row_group(group).num_rows
        try:
            rows = parquet.read_row_group(group).to_pylist()
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: rows {first}-{first + count - 1}: corrupt ({_first_line(exc)})") from None
        yield from enumerate(rows, start=first)
        first += count


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


# --------------------------------------------------------------------------------------------- builtin

_NAMES = ["Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Max", "Nia"]
_ITEMS = ["apples", "marbles", "stickers", "books", "cookies", "pencils", "shells", "cards", "coins", "eggs"]
MOST_STEPS = 6

# Each step kind: its phrases (with {k} for the operand) and what it does. Steps keep every value a
# positive integer (a division only by a divisor of the value).
_STEPS: dict[str, list[str]] = {
    "add": ["then gets {k} more", "then finds {k} more"],
    "sub": ["then gives {k} away", "then loses {k}"],
    "mul": ["then the amount is multiplied by {k}", "then ends up with {k} times as many"],
    "div": ["then splits them into {k} equal groups and keeps one group"],
}
_APPLY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.floordiv}


def _builtin(cfg: ProblemsConfig) -> list[Problem]:
    spec = cfg.source.split(":")
    if len(spec) not in (2, 3) or spec[1] != "arithmetic":
        raise UserError(f"problem source {cfg.source!r}: expected builtin:arithmetic or builtin:arithmetic:N")
    try:
        count = int(spec[2]) if len(spec) == 3 else 100
    except ValueError:
        raise UserError(f"problem source {cfg.source!r}: N must be a whole number") from None
    if count < 1:
        raise UserError(f"problem source {cfg.source!r}: N must be at least 1")
    return arithmetic_problems(count, cfg.split, cfg.difficulty, cfg.seed)


def step_range(difficulty: int | str) -> tuple[int, int]:
    """`problems.difficulty` as (fewest, most) steps: `N` is 1 to N (its meaning before ranges existed, so
    old configs draw the same problems), `'A-B'` is A to B (`'5-5'`: exactly five)."""
    text = str(difficulty).strip()
    low, _, high = text.partition("-") if "-" in text else ("1", "", text)
    try:
        low, high = int(low), int(high)
    except ValueError:
        low = high = 0
    if isinstance(difficulty, bool) or not 1 <= low <= high <= MOST_STEPS:
        raise UserError(f"problems.difficulty: expected N (1 to N steps) or a range 'A-B' within 1 to "
                        f"{MOST_STEPS}, got {difficulty!r}")
    return low, high


def arithmetic_problems(count: int, split: str, difficulty: int | str = 2, seed: int = 0) -> list[Problem]:
    """`count` chained word problems of `difficulty` steps (see `step_range`) with exact positive integer answers.

    One seeded stream per difficulty is split by a hash of each problem's text (1 in 5 goes to test), so the
    train and test splits never share a problem, whatever their sizes or difficulties. `meta` records the
    chain (`start`, `ops` as [kind, operand], `steps`), so the answer can be recomputed from it.
    """
    low, high = step_range(difficulty)
    rng = random.Random(f"arithmetic-{high}-{seed}" if low == 1 else f"arithmetic-{low}-{high}-{seed}")
    seen: set[str] = set()
    out: list[Problem] = []
    while len(out) < count:
        text, answer, chain = _one_problem(rng, low, high)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if chain["steps"] < low or text in seen or (int(digest, 16) % 5 == 0) != (split == "test"):
            continue
        seen.add(text)
        out.append(Problem(id=f"arith-{split}-{digest[:10]}", problem=text, answer=str(answer),
                           meta={**chain, "source": f"builtin:arithmetic/{split}"}))
    return out


def _one_problem(rng: random.Random, low: int, high: int) -> tuple[str, int, dict[str, Any]]:
    """A problem's text, answer and chain. The order of draws from `rng` is the original generator's: it
    fixes every built-in problem (and its id) that earlier runs were made on."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    start = value = rng.randint(2, 20)
    parts, ops = [f"{name} has {value} {item}"], []
    for _ in range(rng.randint(low, high)):
        step = _one_step(rng, value)
        if step is None:
            continue
        phrase, kind, k = step
        parts.append(phrase)
        ops.append([kind, k])
        value = _APPLY[kind](value, k)
    text = ", ".join(parts) + f". How many {item} does {name} have now?"
    return text, value, {"steps": len(ops), "start": start, "ops": ops}


def _one_step(rng: random.Random, value: int) -> tuple[str, str, int] | None:
    """One step on `value` as (phrase, kind, operand); None when it would leave nothing (subtracting from 1),
    and then the problem has one step fewer (a chain that falls short of its range is drawn again)."""
    kind = rng.choice(list(_STEPS))
    phrase = rng.choice(_STEPS[kind])
    if kind == "sub":
        k = rng.randint(1, max(1, value - 1))
        if value - k < 1:
            return None
    elif kind == "mul":
        k = rng.randint(2, 4) if value < 40 else 2
    elif kind == "div":
        divisors = [d for d in range(2, 6) if value % d == 0]
        if divisors:
            k = rng.choice(divisors)
        else:
            kind, phrase, k = "add", _STEPS["add"][0], rng.randint(2, 12)
    else:
        k = rng.randint(2, 15)
    return phrase.format(k=k), kind, k
