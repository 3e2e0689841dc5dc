"""`mcts-cot compare-bon`: does tree search give more training data per generated token than sampling?

The arms grow on each problem set from one search config: MCTS (and, where listed, fork: `search/fork.py`) under
the run-level allocator, best-of-N under the same allocator (so tree structure and allocation are separated), and
plain best-of-N (an equal share per problem). Each arm is one growing run; its smaller budgets are read back from
it (`yields.py`), so every budget is measured at the tokens the arms actually generated. Per set and budget: the
yield (distinct correct responses capped at the export's K), problems solved, pairs that pass the export rules, tokens, with 95% bootstrap
intervals over problems, in a table and a plot. Optionally a model is trained on each arm's data at the largest
budget (several search and training seeds) and evaluated greedily on test problems of the same difficulty.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from mcts_cot.backends import BackendFactory, make_backend
from mcts_cot.config import option, save_config, section
from mcts_cot.loop.compare_report import TREE_ARMS, compare_table, paired_training, plot_yields
from mcts_cot.loop.engines import EnginePool
from mcts_cot.loop.reports import write_results
from mcts_cot.loop.rounds import LoopConfig
from mcts_cot.loop.stages import Runner, Stage, builtin_problems, read_json, stage_config
from mcts_cot.search import SearchConfig
from mcts_cot.store import iter_trees
from mcts_cot.tree import Tree
from mcts_cot.yields import (
    at_checkpoint,
    bootstrap,
    checkpoints,
    distinct_correct,
    nearest_share,
    paired_ratio,
)

ARMS = ("mcts", "fork", "best_of_n_allocated", "best_of_n")
SETS = {
    "builtin 1-3 steps": {"problems.source": "builtin:arithmetic:48", "problems.difficulty": "1-3"},
    "builtin 4-6 steps": {"problems.source": "builtin:arithmetic:48", "problems.difficulty": "4-6"},
    "gsm8k train": {"problems.source": "../shared/data/gsm8k_train_2k.jsonl", "problems.limit": 48},
}


@dataclasses.dataclass
class CompareConfig:
    """`mcts-cot compare-bon`: MCTS against best-of-N at equal generated tokens, on several problem sets."""

    model: str = option("smollm2-135m", "The model every arm samples from.")
    backend: Literal["vllm", "hf", "scripted"] = option("vllm", "Generation engine.")
    search: Stage = section(lambda: Stage(set=dict(LoopConfig().search.set)), "The search every arm shares (SearchConfig): prompt, policy, sampling, allocator settings.")
    sets: dict = option(SETS, "Problem sets: name → search keys (problems.*, and any other the set needs).")
    arms: list = option(["mcts", "best_of_n_allocated", "best_of_n"], "Arms, of: mcts, fork (best-of-N forked below correct responses; plain policy only, measured 0.88x of best-of-N in docs/RESULTS.md §9), best_of_n_allocated, best_of_n (plain, an equal share per problem).")
    tokens_per_problem: int = option(1536, "The largest budget, per problem on average (the allocator's; plain best-of-N's share).", ge=1)
    budgets: int = option(3, "Budgets reported: this many, evenly spaced up to the largest, read from one run per arm.", ge=1)
    yield_cap: int = option(4, "K: distinct correct responses counted per problem (also the allocator's enough_correct).", ge=1)
    wave: int = option(2, "Best-of-N samples per request.", ge=1)
    export: Stage = section(lambda: Stage(set=dict(LoopConfig().export.set)), "The export rules pairs are counted and trained with.")
    train_models: bool = option(False, "Also train a model on each arm's data (largest budget) and evaluate it greedily.")
    train_set: str = option("builtin 4-6 steps", "The set whose data is trained on.")
    train_arms: list = option(["mcts", "best_of_n"], "Arms trained on.")
    search_seeds: list = option([0], "Search seeds; the yield table uses the first, training all.")
    train_seeds: list = option([0], "Training seeds (each search seed's data is trained with each).")
    test_problems: int = option(1000, "Built-in TEST problems of the train set's difficulty for the greedy evals.", ge=1)
    train: Stage = section(lambda: Stage(set=dict(LoopConfig().train.set)), "The training applied to every arm (the demo's joint recipe).")
    eval: Stage = section(Stage, "The greedy eval (EvalConfig).")


def run_compare(out: str | Path, cfg: CompareConfig, console: Console | None = None,
                backends: BackendFactory = make_backend) -> dict:
    """Grow every arm on every set, read their yields at equal tokens, optionally train on each; write
    results.json / results.md / yield.png into `out` and return the results."""
    console = console or Console(stderr=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    start = time.perf_counter()
    result: dict[str, Any] = {"sets": {}}
    with EnginePool(backends) as pool:
        runner = Runner(console, pool)
        for name, keys in cfg.sets.items():
            dirs = {arm: grow(runner, cfg, name, keys, arm, cfg.search_seeds[0], out) for arm in cfg.arms}
            result["sets"][name] = read_budgets(cfg, dirs)
        if cfg.train_models:
            result["training"] = train_arms(runner, cfg, out)
    result["stage_seconds"] = runner.times
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    plot_yields(result, out / "yield.png")
    write_results(out, result, compare_table(result, cfg.yield_cap), console,
                  extra=paired_training(result) if cfg.train_models else None)
    return result


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def arm_config(cfg: CompareConfig, keys: dict, arm: str, seed: int) -> SearchConfig:
    """The shared search config with the arm's strategy and budget: allocated arms spend `tokens_per_problem`
    on average through the allocator, plain best-of-N exactly its share per problem. MCTS's own success rule
    stops a tree at `yield_cap` correct ends (fork's too), where the allocator would close it anyway."""
    allocated = arm != "best_of_n"
    return stage_config(SearchConfig, cfg.search, **{
        "model.name": cfg.model, "backend.name": cfg.backend, "seed": seed, **keys,
        "strategy": arm if arm in TREE_ARMS else "best_of_n", "best_of_n.wave": cfg.wave,
        "allocator.enough_correct": cfg.yield_cap, "budget.success_correct": cfg.yield_cap,
        "budget.success_correct_after_min": cfg.yield_cap,
        "allocator.tokens_per_problem": cfg.tokens_per_problem if allocated else None,
        "best_of_n.tokens_per_problem": None if allocated else cfg.tokens_per_problem})


def grow(runner: Runner, cfg: CompareConfig, name: str, keys: dict, arm: str, seed: int, out: Path) -> Path:
    where = out / slug(name) / f"seed-{seed}" / arm
    runner.search(f"{name}: {arm} (seed {seed})", arm_config(cfg, keys, arm, seed), where)
    return where


def read_budgets(cfg: CompareConfig, dirs: dict[str, Path]) -> dict[str, Any]:
    """Every arm at `budgets` equal-token points: the first tree arm's checkpoints nearest to evenly spaced
    targets (or, without a tree arm, the targets themselves); the other allocated arms at their nearest
    checkpoint; plain best-of-N at the per-problem share whose total is nearest."""
    from mcts_cot.export import ExportConfig

    ecfg = stage_config(ExportConfig, cfg.export)
    scfg = arm_config(cfg, {}, "mcts", 0)
    reward = {"correct": scfg.reward.correct, "no_answer": scfg.reward.no_answer}
    score = lambda verdict: reward.get(verdict, scfg.reward.wrong)  # noqa: E731
    trees = {arm: sorted(iter_trees(d), key=lambda t: str(t.problem["id"])) for arm, d in dirs.items()}
    problems = len(next(iter(trees.values())))
    curves = {arm: _curve(trees[arm], score, cfg.yield_cap) for arm in trees if arm != "best_of_n"}
    top = max((c[-1][0] for c in curves.values()), default=cfg.tokens_per_problem * problems)
    lead = next((curves[a] for a in TREE_ARMS if a in curves), None) or next(iter(curves.values()), None)
    targets = [top * (j + 1) / cfg.budgets for j in range(cfg.budgets)]
    budgets = []
    for target in targets:
        tokens = _nearest(lead, target)[0] if lead else round(target)
        row = {}
        for arm, arm_trees in trees.items():
            if arm == "best_of_n":
                cut, spent = nearest_share(arm_trees, tokens, cfg.wave, score)
            else:
                k = _nearest(curves[arm], tokens)[1]
                cut, spent = at_checkpoint(arm_trees, k, score)
            row[arm] = _measure(cut, spent, cfg.yield_cap, ecfg)
        _ratios(row)
        budgets.append(row)
    return {"problems": problems, "budgets": budgets, "runs": {arm: _run_facts(d) for arm, d in dirs.items()},
            "curves": {arm: [[t, y] for t, _, y in curve] for arm, curve in curves.items()}}


def _curve(trees: list[Tree], score, cap: int) -> list[tuple[int, int, int]]:
    """(tokens, checkpoint, yield) at every checkpoint of an allocator run."""
    out = []
    for k in range(1, checkpoints(trees) + 1):
        cut, tokens = at_checkpoint(trees, k, score)
        out.append((tokens, k, sum(min(distinct_correct(t), cap) for t in cut)))
    return out


def _nearest(curve: list[tuple[int, int, int]], tokens: float) -> tuple[int, int, int]:
    return min(curve, key=lambda c: (abs(c[0] - tokens), c[1]))


def _measure(trees: list[Tree], tokens: int, cap: int, ecfg) -> dict[str, Any]:
    """Yield, solved and export-passing pairs of trees (sorted by problem id), with bootstrap intervals."""
    from mcts_cot.pairs import facts, pair_rows

    per = [min(distinct_correct(t), cap) for t in trees]
    pairs = [len(pair_rows(facts(t, ecfg.rejected_verdicts, ecfg.limit_cut_rejected), ecfg.strategies,
                           {n: getattr(ecfg, n) for n in ecfg.strategies}, ecfg.max_pairs_per_problem)[0])
             for t in trees]
    solved = [float(y > 0) for y in per]
    return {"tokens": tokens, "yield": sum(per), "yield_ci": bootstrap(per), "per_problem": per,
            "solved": int(sum(solved)), "solved_ci": bootstrap(solved), "pairs": sum(pairs),
            "pairs_ci": bootstrap(pairs)}


def _ratios(row: dict[str, Any]) -> None:
    """Each tree arm / each best-of-N arm: yield ratio with a paired interval over problems."""
    for tree in (a for a in TREE_ARMS if a in row):
        for arm in ("best_of_n", "best_of_n_allocated"):
            if arm in row:
                row[f"{tree}_over_{arm}"] = paired_ratio(row[tree]["per_problem"], row[arm]["per_problem"])


def _run_facts(run_dir: Path) -> dict[str, Any]:
    m = read_json(run_dir / "manifest.json")
    hit = m.get("prefix_cache_hit_rate") or 0.0
    return {"generated_tokens": m["generated_tokens"], "uncached_prompt_tokens": round(m["prompt_tokens"] * (1 - hit)),
            "wall_s": m.get("wall_s"), "tokens_per_s": m.get("tokens_per_s")}


def train_arms(runner: Runner, cfg: CompareConfig, out: Path) -> dict[str, Any]:
    """Each train arm's data (every search seed, largest budget) through the same export and recipe with every
    training seed, and the base model, evaluated greedily on the same test problems."""
    from mcts_cot.evaluate import EvalConfig

    keys = cfg.sets[cfg.train_set]
    difficulty = {"problems.difficulty": keys["problems.difficulty"]} if "problems.difficulty" in keys else {}
    test = {**builtin_problems(cfg.test_problems, "test"), **difficulty}
    root = out / "training"
    base = stage_config(EvalConfig, cfg.eval, **{"model.name": cfg.model, "backend.name": cfg.backend, **test})
    runner.eval("base: eval", base, root / "eval-base")
    runs = {"base": str(root / "eval-base")}
    for s in cfg.search_seeds:
        for arm in cfg.train_arms:
            src = grow(runner, cfg, cfg.train_set, keys, arm, s, out)
            for t in cfg.train_seeds:
                runs[f"{arm}/search-{s}/train-{t}"] = _train_one(runner, cfg, src, f"{arm}-s{s}-t{t}", t, test, root)
    return {"test_problems": cfg.test_problems, "evals": runs}


def _train_one(runner: Runner, cfg: CompareConfig, src: Path, name: str, seed: int, test: dict, root: Path) -> str:
    from mcts_cot.evaluate import EvalConfig
    from mcts_cot.export import ExportConfig
    from trainers.config import TrainConfig

    runner.export(f"{name}: export", stage_config(ExportConfig, cfg.export, seed=seed), [src], root / f"data-{name}")
    tcfg = stage_config(TrainConfig, cfg.train, **{"model.name": cfg.model, "data": str(root / f"data-{name}"), "seed": seed})
    runner.train(f"{name}: train", tcfg, root / f"model-{name}")
    ev = stage_config(EvalConfig, cfg.eval, **{"model.name": str(root / f"model-{name}"), "backend.name": cfg.backend,
                                               "backend.seed": seed, **test})
    runner.eval(f"{name}: eval", ev, root / f"eval-{name}")
    return str(root / f"eval-{name}")
