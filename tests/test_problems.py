"""Problems: the shared data files load as they are, the built-in generator, and bad rows named by row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcts_cot.config import ProblemsConfig
from mcts_cot.errors import UserError
from mcts_cot.problems import load_problems

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DATA_FILES = sorted(DATA.glob("*.jsonl")) if DATA.is_dir() else []


def _load(source, **kw):
    return load_problems(ProblemsConfig(source=str(source), **kw))


@pytest.mark.skipif(not DATA_FILES, reason="shared/data is not beside this checkout")
@pytest.mark.parametrize("path", DATA_FILES, ids=lambda p: p.name)
def test_shared_data_loads_as_it_is(path):
    problems, report = _load(path)
    rows = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    assert report.loaded == len(problems) == rows and not report.skipped
    assert all(p.id and p.problem and p.answer for p in problems)
    assert "source" in problems[0].meta


def test_builtin_is_deterministic_sized_and_well_formed():
    a, _ = _load("builtin:arithmetic:50")
    b, _ = _load("builtin:arithmetic:50")
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    assert len(a) == 50 and len({p.problem for p in a}) == 50 and len({p.id for p in a}) == 50
    assert all(p.answer.isdigit() and int(p.answer) > 0 for p in a)
    assert len(_load("builtin:arithmetic")[0]) == 100
    assert [p.id for p in _load("builtin:arithmetic:10")[0]] == [p.id for p in a[:10]]  # N takes a prefix
    assert [p.id for p in _load("builtin:arithmetic:50", seed=1)[0]] != [p.id for p in a]


def test_builtin_train_and_test_never_overlap():
    train, _ = _load("builtin:arithmetic:2000", split="train")
    test, _ = _load("builtin:arithmetic:500", split="test")
    assert len(train) == 2000 and len(test) == 500
    assert not {p.problem for p in train} & {p.problem for p in test}


@pytest.mark.parametrize("source, match", [("builtin:algebra", "expected builtin:arithmetic"),
                                           ("builtin:arithmetic:ten", "N must be a whole number")])
def test_builtin_bad_source(source, match):
    with pytest.raises(UserError, match=match):
        _load(source)


def _jsonl(tmp_path, rows, name="p.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = [{"id": "a", "problem": "1+1?", "answer": "2"}, {"id": "b", "problem": "2+2?", "answer": "4"}]


@pytest.mark.parametrize("bad, reason", [
    ({"id": "x", "problem": "?"}, "missing answer field 'answer'"),
    ({"id": "x", "problem": "?", "answer": "\\frac{"}, "gold answer .* does not parse with math-verify"),
    ("{not json", "not valid JSON"),
])
def test_bad_row_names_file_and_row(tmp_path, bad, reason):
    path = _jsonl(tmp_path, [*GOOD, bad])
    with pytest.raises(UserError, match=rf"p.jsonl: row 3: {reason}"):
        _load(path)


def test_skip_bad_rows_counts_them(tmp_path):
    path = _jsonl(tmp_path, [GOOD[0], {"id": "x", "problem": "?"}, {"id": "y", "problem": "?", "answer": "\\frac{"}, GOOD[1]])
    problems, report = _load(path, skip_bad_rows=True)
    assert [p.id for p in problems] == ["a", "b"] and report.loaded == 2
    assert len(report.skipped) == 2 and report.skipped[0].startswith("row 2")


def test_missing_problem_field_and_file(tmp_path):
    with pytest.raises(UserError, match="row 1: missing problem field 'problem'"):
        _load(_jsonl(tmp_path, [{"answer": "1"}]))
    with pytest.raises(UserError, match="problem file not found"):
        _load(tmp_path / "absent.jsonl")
    with pytest.raises(UserError, match="unknown problem file type"):
        _load(_jsonl(tmp_path, GOOD, name="p.csv"))


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(UserError, match="'a' appears more than once"):
        _load(_jsonl(tmp_path, [GOOD[0], GOOD[0]]))


def test_json_parquet_and_datasets_folder(tmp_path):
    import datasets

    expected = [("a", "1+1?", "2"), ("b", "2+2?", "4")]
    as_json = tmp_path / "p.json"
    as_json.write_text(json.dumps({"data": GOOD}))
    ds = datasets.Dataset.from_list(GOOD)
    ds.to_parquet(str(tmp_path / "p.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    for source in (as_json, tmp_path / "p.parquet", tmp_path / "saved"):
        problems, _ = _load(source)
        assert [(p.id, p.problem, p.answer) for p in problems] == expected, source
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(UserError, match="several splits"):
        _load(tmp_path / "dd")


def test_custom_field_names_row_number_ids_and_limit(tmp_path):
    rows = [{"question": f"{i}+1?", "final": i + 1, "level": 3} for i in range(5)]
    path = _jsonl(tmp_path, rows)
    problems, _ = _load(path, problem_field="question", answer_field="final", limit=3)
    assert [(p.id, p.problem, p.answer) for p in problems] == [("1", "0+1?", "1"), ("2", "1+1?", "2"), ("3", "2+1?", "3")]
    assert problems[0].meta == {"level": 3}
