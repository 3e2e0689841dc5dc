"""`run_eval` metrics on a scripted backend with known right / wrong / missing answers, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from mcts_cot.backends import scripted_factory
from mcts_cot.config import load_config
from mcts_cot.evaluate import (
    EvalConfig,
    majority_score,
    paired_comparison,
    pass_at_k,
    reflection_counts,
    run_eval,
)
from mcts_cot.problems import arithmetic_problems

PROBLEMS = arithmetic_problems(3, "test")
GOLD = {p.problem: p.answer for p in PROBLEMS}

# Per problem, the four samples' kinds: R right, W wrong (always the same wrong number), N no answer.
PLAN = ["RRWN", "WWNR", "NNNN"]
TEXTS = {
    "R": "Step 1: Wait, let me check the numbers.\n\nThe answer is \\boxed{{{gold}}}.",
    "W": "Hmm. Alternatively we could double-check. Let's check: \\boxed{{{wrong}}}",
    "N": "I am not sure how to finish this.",
}


def script(prompt: str, index: int) -> str:
    problem = prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
    gold = GOLD[problem]
    kind = PLAN[[p.problem for p in PROBLEMS].index(problem)][index]
    return TEXTS[kind].format(gold=gold, wrong=int(gold) + 1)


def _cfg(tiny_model_dir, **sets) -> EvalConfig:
    sets = {"model.name": str(tiny_model_dir), "backend.name": "scripted", "problems.source": "builtin:arithmetic:3",
            "sampling.n": 4, "sampling.temperature": 0.7, "k": 2, "chunk": 2, "verify.workers": 1, **sets}
    return load_config(EvalConfig, None, None, **sets)


def test_pass_at_k_and_majority():
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 3, 2) == 1.0 and pass_at_k(1, 1, 1) == 1.0
    s = [{"answer": "7", "verdict": "wrong"}, {"answer": " 8", "verdict": "correct"},
         {"answer": "8 ", "verdict": "correct"}, {"answer": None, "verdict": "no_answer"}]
    def texts_only(a, b):
        return False

    assert majority_score(s, 4, texts_only) == 1.0 and majority_score(s, 1, texts_only) == 0.0
    assert majority_score(s[:2], 2, texts_only) == 0.5  # a 1-1 tie of 7 (wrong) and 8 (right) scores 1/2
    assert majority_score([{"answer": None, "verdict": "no_answer"}], 1, texts_only) == 0.0


def _greedy_eval(path: Path, solved: set[str], ids: str) -> Path:
    path.mkdir()
    (path / "samples.jsonl").write_text("".join(json.dumps({"id": i, "correct": int(i in solved)}) + "\n" for i in ids))
    return path


def test_paired_comparison_counts_discordant_problems_and_exact_mcnemar(tmp_path):
    base = _greedy_eval(tmp_path / "base", {"a", "b"}, "abcdefgh")
    one_each_way = paired_comparison(base, _greedy_eval(tmp_path / "x", {"b", "c", "d"}, "abcdefgh"))
    assert {k: one_each_way[k] for k in ("problems", "won", "lost", "p_value")} == {"problems": 8, "won": 2, "lost": 1, "p_value": 1.0}  # 2 * (1 + 3) / 2**3, capped
    assert one_each_way["difference"] == pytest.approx(1 / 8)
    six_up = paired_comparison(base, _greedy_eval(tmp_path / "y", {"a", "b", "c", "d", "e", "f", "g", "h"}, "abcdefgh"))
    assert (six_up["won"], six_up["lost"]) == (6, 0) and six_up["p_value"] == pytest.approx(2 / 2**6)
    only_shared = paired_comparison(base, _greedy_eval(tmp_path / "z", {"c"}, "cz"))  # a, b missing: not compared
    assert {k: only_shared[k] for k in ("problems", "won", "lost", "p_value")} == {"problems": 1, "won": 1, "lost": 0, "p_value": 1.0}


def test_reflection_counts_are_case_insensitive_whole_words():
    got = reflection_counts("Wait. WAIT, awaiting. Hmmm, let me check; Let’s check and double-check. alternatively")
    assert got == {"wait": 2, "alternatively": 1, "let me check": 1, "let's check": 1, "double-check": 1, "hmm": 1}


def test_run_eval_exact_metrics(tiny_model_dir, tmp_path):
    summary = run_eval(_cfg(tiny_model_dir), tmp_path, backends=scripted_factory(script))
    assert summary["accuracy"] == pytest.approx(3 / 12, abs=1e-4)
    assert summary["pass@2"] == pytest.approx((5 / 6 + 1 / 2 + 0) / 3, abs=1e-4)
    assert summary["maj@2"] == pytest.approx(1 / 3, abs=1e-4)  # RR → right; WW → wrong; NN → no vote
    assert summary["no_answer_rate"] == pytest.approx(6 / 12, abs=1e-4)
    assert summary["unverifiable_rate"] == 0.0
    markers = summary["reflection_per_response"]
    assert markers["wait"] == pytest.approx(3 / 12, abs=1e-4) and markers["let me check"] == pytest.approx(3 / 12, abs=1e-4)
    assert markers["hmm"] == markers["alternatively"] == markers["double-check"] == markers["let's check"] == pytest.approx(3 / 12, abs=1e-4)
    assert markers["total"] == pytest.approx(18 / 12, abs=1e-3)
    assert (summary["problem_count"], summary["sample_count"], summary["k"]) == (3, 12, 2)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [2, 1, 0]
    assert [s["verdict"] for s in rows[0]["samples"]] == ["correct", "correct", "wrong", "no_answer"]
    assert rows[0]["samples"][0]["answer"] == rows[0]["gold"]
    assert all(s["tokens"] > 0 and s["markers"] for r in rows for s in r["samples"])


def test_k_larger_than_n_is_a_user_error(tiny_model_dir, tmp_path):
    from mcts_cot.errors import UserError

    with pytest.raises(UserError, match="k"):
        run_eval(_cfg(tiny_model_dir, k=5), tmp_path, backends=scripted_factory(script))


def test_cli_eval_writes_every_output(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--backend", "scripted", "--model", str(tiny_model_dir),
                                      "--problems", "builtin:arithmetic:5", "--out", str(out), "--n", "2",
                                      "--temperature", "0.5", "--set", "verify.workers=1"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"samples.jsonl", "summary.json", "config.yaml", "manifest.json"}
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["sampling"] == {"n": 2, "temperature": 0.5, "top_p": 1.0, "max_tokens": 512}
    assert cfg["out"] == str(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sample_count"] == 10 and "pass@2" in summary and summary["backend"] == "scripted"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["problems"] == 5 and "torch" in manifest["versions"]
    assert len((out / "samples.jsonl").read_text().splitlines()) == 5


def test_cli_unknown_set_key_exits_2_with_one_line(tmp_path):
    result = CliRunner().invoke(app, ["eval", "--backend", "scripted", "--out", str(tmp_path),
                                      "--set", "sampling.temprature=0.5"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "sampling.temprature" in lines[0] and "sampling.temperature" in lines[0]


def test_shipped_eval_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs" / "eval"
    greedy = load_config(EvalConfig, root / "default.yaml")
    assert greedy.sampling.temperature == 0.0 and greedy.sampling.n == 1 and greedy.stop == []
    pass8 = load_config(EvalConfig, root / "pass8.yaml")
    assert (pass8.sampling.n, pass8.sampling.temperature, pass8.k) == (8, 0.7, 8)


@pytest.mark.slow
def test_cli_eval_through_vllm_on_the_embedded_model(tmp_path):
    """The real path: `mcts-cot eval` → vLLM engine on smollm2-135m → math-verify, on 4 built-in problems."""
    exe = Path(sys.executable).with_name("mcts-cot")
    out = tmp_path / "eval"
    proc = subprocess.run([str(exe), "eval", "--backend", "vllm", "--problems", "builtin:arithmetic:4",
                           "--out", str(out), "--set", "sampling.max_tokens=48", "--set", "backend.max_model_len=1024",
                           "--set", "backend.cpu_kv_cache_gib=1"],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problem_count"] == 4 and summary["sample_count"] == 4 and summary["backend"] == "vllm"
    assert 0.0 <= summary["accuracy"] <= 1.0 and 0 < summary["mean_generated_tokens"] <= 48
    assert summary["tokens_per_s"] > 0 and summary["unverifiable_rate"] == 0.0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert all(r["samples"][0]["text"] for r in rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend_stats"]["prompt_tokens"] > 0 and manifest["backend_stats"]["cache_hit_rate"] is not None


def test_cli_eval_help_lists_the_shortcuts():
    result = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--config", "--set", "--out", "--model", "--problems", "--backend", "--n", "--temperature"):
        assert flag in result.output
