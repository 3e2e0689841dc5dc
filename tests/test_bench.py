"""Smoke tests: the bench scripts import and run at toy size (no vLLM, no real model; well under 20 s)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_engine_runs_at_toy_size(tmp_path, capsys):
    figures = load("bench_engine").main(["--problems", "12", "--concurrent-trees", "4", "--max-rollouts", "8",
                                         "--tokenizer", "byte", "--no-real-verifier", "--out", str(tmp_path / "e.json")])
    assert figures["search_instant"]["trees"] == 12
    assert figures["expansions_per_s"] > 0
    assert (tmp_path / "e.json").is_file()
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("ratio:")


def test_bench_train_runs_at_toy_size_and_losses_agree(tmp_path, capsys):
    figures = load("bench_train").main(["--toy", "--steps", "1", "--out", str(tmp_path / "t.json")])
    assert figures["losses_agree"]
    assert set(figures["arms"]) == {"trl", "ours_two_sequences", "ours_prefix_sharing"}
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("ratio:")


def test_bench_search_and_run_all_import(monkeypatch):
    search = load("bench_search")
    with pytest.raises(SystemExit):
        search.main(["--help"])
    run_all = load("run_all")
    assert {"engine", "verify", "search", "train", "train_gpu"} <= set(run_all.BENCHES)
