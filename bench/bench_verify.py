"""Verification throughput: the math-verify worker pool against plain math-verify calls, in one run.

Inputs: the gold answers of GSM8K (test, train sample), MATH-500 and the MATH train sample (../shared/data),
each paired with itself, a restatement (`18.0`, `x+0`) and a perturbed wrong answer, deduplicated, so every
item is distinct and the pool's cache cannot flatter it.

  A. plain: `math_verify.parse` / `verify` in a loop in this process (each gold parsed once, as the pool's
     workers do, so the comparison is about processes and IPC, not about caching);
  B. pool: a fresh `Verifier(workers=2, cache_size=0).verify_batch` on the same items.
Both are warmed up on other answers (AIME, AMC) first; A and B alternate `--rounds` times and the best
time of each counts, since the machine is shared and its load moves under the run.

Then, separately, the cache: MCTS-like waves where each tree's leaves keep repeating a few answers, through
a pool with its cache and one without (cache_size=0; repeats within one wave are still merged).
Prints both rates and the ratio B/A last; writes bench/results/verify.json.

    .venv/bin/python bench/bench_verify.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcts_cot.io import write_json  # noqa: E402
from mcts_cot.verify import Verifier  # noqa: E402
from mcts_cot.versions import package_versions  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULT = ROOT / "bench" / "results" / "verify.json"
GOLD_FILES = ("gsm8k_test.jsonl", "math500.jsonl", "gsm8k_train_2k.jsonl", "math_train_2k.jsonl")
WARMUP_FILES = ("aime24.jsonl", "aime25.jsonl", "amc23.jsonl")  # other answers, to warm both sides up


def golds(files: tuple[str, ...]) -> list[str]:
    """Gold answers of `files`, in order."""
    rows = []
    for name in files:
        rows += [json.loads(line)["answer"] for line in (DATA / name).read_text().splitlines() if line]
    return rows


def perturb(answer: str) -> str:
    """A wrong answer of the same shape: an integer plus one, anything else plus one."""
    return str(int(answer) + 1) if answer.lstrip("-").isdigit() else f"{answer}+1"


def restate(answer: str) -> str:
    """The same value written differently, so verification has to compare rather than match text."""
    return f"{answer}.0" if answer.lstrip("-").isdigit() else f"{answer}+0"


def distinct_items(answers: list[str]) -> list[tuple[str, str]]:
    """Each gold with itself, a restatement and a perturbation; duplicates dropped, order kept."""
    return list(dict.fromkeys((a, pred) for a in answers for pred in (a, restate(a), perturb(a))))


def plain(items: list[tuple[str, str]]) -> tuple[list[str], float, float]:
    """Verdicts, seconds and CPU seconds of math-verify called directly (signal timeouts on: main thread)."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    start, cpu, parsed, verdicts = time.perf_counter(), time.process_time(), {}, []
    for gold, pred in items:
        if gold not in parsed:
            parsed[gold] = parse("\\boxed{" + gold + "}")
        same = verify(parsed[gold], parse("\\boxed{" + pred + "}"))
        verdicts.append("correct" if same else "wrong")
    return verdicts, time.perf_counter() - start, time.process_time() - cpu


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes (Linux /proc), to see work apart from the machine's load."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def pooled(items: list[tuple[str, str]], warmup: list[tuple[str, str]],
           workers: int) -> tuple[list[str], float, float]:
    """Verdicts, seconds and CPU seconds (workers and this process) of a fresh pool, warmed on other items."""
    with Verifier(workers=workers, cache_size=0) as verifier:
        verifier.verify_batch(warmup)
        start, cpu = time.perf_counter(), cpu_seconds([os.getpid(), *verifier.pids])
        verdicts = verifier.verify_batch(items)
        return verdicts, time.perf_counter() - start, cpu_seconds([os.getpid(), *verifier.pids]) - cpu


def mcts_waves(answers: list[str], trees: int, waves: int, leaves: int, seed: int = 0) -> list[list]:
    """Waves of terminal leaves: each tree's leaves draw from its gold, three wrong answers and no answer."""
    rng = random.Random(seed)
    golds_ = rng.sample(sorted(set(answers)), trees)
    choices = [[g, restate(g), perturb(g), perturb(perturb(g)), None] for g in golds_]
    weights = [4, 3, 2, 1, 1]  # a few answers dominate, as in real trees
    return [[(golds_[t], rng.choices(choices[t], weights)[0]) for t in range(trees) for _ in range(leaves)]
            for _ in range(waves)]


def waves_rate(batches: list[list], warmup: list[tuple[str, str]], workers: int, cache_size: int) -> dict:
    """Throughput and cache hits of a fresh pool over the waves in order."""
    with Verifier(workers=workers, cache_size=cache_size) as verifier:
        verifier.verify_batch(warmup)
        start, hits_before = time.perf_counter(), verifier.stats.cache_hits
        for batch in batches:
            verifier.verify_batch(batch)
        seconds = time.perf_counter() - start
        items, hits = sum(map(len, batches)), verifier.stats.cache_hits - hits_before
        return {"items": items, "cache_hits": hits, "hit_rate": round(hits / items, 3),
                "seconds": round(seconds, 3), "answers_per_s": round(items / seconds, 1)}


def machine() -> dict:
    """Where it ran: the machine is shared, so its load average is part of the result."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "versions": package_versions()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternate A and B this often; keep each best")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N gold answers (0: all)")
    args = parser.parse_args(argv)

    answers = golds(GOLD_FILES)[: args.limit or None]
    items, warmup = distinct_items(answers), distinct_items(golds(WARMUP_FILES))
    print(f"{len(items)} distinct items from {len(answers)} gold answers; {args.workers} workers, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

    plain(warmup)
    best_a = best_b = float("inf")
    for _ in range(args.rounds):  # alternating, so both see the same (shared, noisy) machine
        verdicts_a, seconds, cpu_a = plain(items)
        best_a = min(best_a, seconds)
        verdicts_b, seconds, cpu_b = pooled(items, warmup, args.workers)
        best_b = min(best_b, seconds)
    agree = sum(a == b for a, b in zip(verdicts_a, verdicts_b, strict=True))
    rate_a, rate_b = len(items) / best_a, len(items) / best_b

    batches = mcts_waves(answers, trees=32, waves=8, leaves=32)
    with_cache = waves_rate(batches, warmup, args.workers, cache_size=100_000)
    per_wave = waves_rate(batches, warmup, args.workers, cache_size=0)  # repeats within a wave still merge

    figures = {
        "items": len(items), "workers": args.workers, "rounds": args.rounds, "verdicts_agree": agree,
        "correct": verdicts_b.count("correct"), "unverifiable": verdicts_b.count("unverifiable"),
        "plain": {"best_seconds": round(best_a, 3), "answers_per_s": round(rate_a, 1),
                  "cpu_ms_per_answer": round(1e3 * cpu_a / len(items), 3)},
        "pool": {"best_seconds": round(best_b, 3), "answers_per_s": round(rate_b, 1),
                 "cpu_ms_per_answer": round(1e3 * cpu_b / len(items), 3)},
        "pool_over_plain": round(rate_b / rate_a, 3),
        "mcts_waves": {"with_cache": with_cache, "cache_size_0": per_wave,
                       "cache_speedup": round(with_cache["answers_per_s"] / per_wave["answers_per_s"], 2)},
    }
    write_json(RESULT, {"bench": "verify", "machine": machine(), **figures})
    print(f"verdicts agree on {agree}/{len(items)}; {figures['correct']} correct, "
          f"{figures['unverifiable']} unverifiable")
    print(f"MCTS-like waves ({with_cache['items']} items): cache hit rate {with_cache['hit_rate']:.0%}, "
          f"{with_cache['answers_per_s']:,.0f} answers/s; with cache_size=0 (repeats merged within a wave "
          f"only, hit rate {per_wave['hit_rate']:.0%}) {per_wave['answers_per_s']:,.0f} answers/s: "
          f"{figures['mcts_waves']['cache_speedup']}x")
    print(f"CPU per answer (last round, load-independent): plain {1e3 * cpu_a / len(items):.2f} ms, "
          f"pool {1e3 * cpu_b / len(items):.2f} ms (workers + driver)")
    print(f"plain math-verify: {rate_a:,.0f} answers/s; pool ({args.workers} workers): {rate_b:,.0f} answers/s "
          f"(best of {args.rounds})")
    print(f"pool / plain: {rate_b / rate_a:.2f}x  -> {RESULT.relative_to(ROOT)}")
    return figures


if __name__ == "__main__":
    main()
