"""Synthetic data dirs in the exact export format, for tests, dry runs and training benchmarks.

Token ids are random (seeded) over a given id range, with controllable lengths, so a benchmark can ask for
"600-token prompt + 100-token prefix + 50-token suffixes" without running a search. Row fields match what
`mcts-cot export-pairs` writes (pairs.jsonl / sft.jsonl rows); text fields hold placeholders.
"""

from __future__ import annotations

import random
from pathlib import Path

from mcts_cot.io import append_jsonl


def _ids(rng: random.Random, n: int, vocab: tuple[int, int]) -> list[int]:
    return [rng.randrange(*vocab) for _ in range(n)]


def _len(rng: random.Random, n: int, jitter: float) -> int:
    return max(1, round(n * (1 + rng.uniform(-jitter, jitter))))


def pair_rows(n: int, model: str, vocab: tuple[int, int], prompt_len: int = 24, prefix_len: int = 8,
              suffix_len: int = 6, jitter: float = 0.3, seed: int = 0, split: str = "train") -> list[dict]:
    """`n` pair rows; lengths vary by ±jitter, so suffixes differ in length; every third pair is partial."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        c = rng.random()
        rows.append({
            "problem_id": f"p{i // 2}", "strategy": "synthetic", "prompt": "", "chosen": "", "rejected": "",
            "prompt_ids": _ids(rng, _len(rng, prompt_len, jitter), vocab),
            "prefix_ids": _ids(rng, _len(rng, prefix_len, jitter), vocab) if prefix_len else [],
            "chosen_ids": _ids(rng, _len(rng, suffix_len, jitter), vocab),
            "rejected_ids": _ids(rng, _len(rng, suffix_len, jitter), vocab),
            "chosen_complete": i % 3 != 2, "rejected_complete": i % 3 == 0,
            "chosen_q": 1.0, "rejected_q": 0.0, "chosen_n": 4, "rejected_n": 2, "confidence": c,
            "epsilon": min(1 - c, 0.5), "model": model, "tokenizer": model, "split": split,
        })
    return rows


def sft_rows(n: int, model: str, vocab: tuple[int, int], prompt_len: int = 24, completion_len: int = 16,
             jitter: float = 0.3, seed: int = 0, split: str = "train") -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        completion = _ids(rng, _len(rng, completion_len, jitter), vocab)
        rows.append({"problem_id": f"p{i}", "prompt": "", "completion": "",
                     "prompt_ids": _ids(rng, _len(rng, prompt_len, jitter), vocab), "completion_ids": completion,
                     "complete": i % 4 != 3, "rank": "shortest", "num_tokens": len(completion), "model": model,
                     "tokenizer": model, "split": split})
    return rows


def write_data_dir(path: str | Path, model: str, vocab: tuple[int, int], pairs: int = 16, val_pairs: int = 4,
                   seed: int = 0, **lengths) -> Path:
    """pairs.jsonl, pairs_val.jsonl, sft.jsonl, sft_val.jsonl under `path` (replacing existing ones)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sft_keys = {k: v for k, v in lengths.items() if k in ("prompt_len", "jitter")}
    files = {
        "pairs.jsonl": pair_rows(pairs, model, vocab, seed=seed, **lengths),
        "pairs_val.jsonl": pair_rows(val_pairs, model, vocab, seed=seed + 1, split="val", **lengths),
        "sft.jsonl": sft_rows(pairs, model, vocab, seed=seed, **sft_keys),
        "sft_val.jsonl": sft_rows(val_pairs, model, vocab, seed=seed + 1, split="val", **sft_keys),
    }
    for name, rows in files.items():
        (path / name).unlink(missing_ok=True)
        append_jsonl(path / name, rows)
    return path
