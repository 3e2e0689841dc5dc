"""Best-of-N, the baseline MCTS must beat, and `compare-bon`: the two at equal generated tokens on the same
problems, and a model trained on each one's data through the same export and trainer.

Best-of-N is not a second sampler: it is `run_search` with strategy best_of_n (mcts_cot/search/best_of_n.py),
so both arms share the shell, the terminal rule, the backup and the run-dir format.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from mcts_cot.backends import BackendFactory, make_backend
from mcts_cot.config import (
    GenerationConfig,
    ProblemsConfig,
    load_config,
    option,
    save_config,
    section,
)
from mcts_cot.errors import UserError
from mcts_cot.evaluate import INTERVAL_NOTE, with_interval
from mcts_cot.loop.engines import EnginePool
from mcts_cot.loop.reports import write_results
from mcts_cot.loop.rounds import LoopConfig
from mcts_cot.loop.stages import Runner, Stage, builtin_problems, stage_config
from mcts_cot.run import run_search, summarize
from mcts_cot.search import SearchConfig
from mcts_cot.search.config import BestOfNSettings
from mcts_cot.store import iter_trees
from mcts_cot.tables import Grid


@dataclasses.dataclass
class BestOfNConfig(GenerationConfig):
    """`mcts-cot best-of-n`: N full samples per problem, run as `search` with strategy best_of_n (a run dir of
    one-level trees that export-pairs reads unchanged). N comes from `n`, or from a token budget: each problem
    draws `wave` samples at a time until it has spent its share of `max_total_tokens`."""

    problems: ProblemsConfig = section(lambda: ProblemsConfig(split="train"), "Problems to sample.")
    n: int | None = option(None, "Samples per problem (null: sample until max_total_tokens).", ge=1)
    max_total_tokens: int | None = option(None, "Token budget of the whole run when n is null (e.g. an MCTS run's generated tokens).", ge=1)
    wave: int = option(2, "Samples per problem per generate call when sampling to a token budget.", ge=1)
    max_n: int = option(256, "Most samples per problem when sampling to a token budget.", ge=1)
    temperature: float = option(0.7, "Sampling temperature (the search's).", ge=0)
    top_p: float = option(0.9, "Nucleus mass (the search's).", gt=0, le=1)
    max_tokens: int = option(384, "Most tokens per sample (the search's policy.max_path_tokens).", ge=1)
    seed: int = option(0, "Seed of every sampling request.", ge=0)
    out: str = option("runs/best-of-n", "Run dir (--out).")


def best_of_n_search(cfg: BestOfNConfig, problem_count: int) -> SearchConfig:
    """The search config that samples what `cfg` asks for (a run total becomes an equal share per problem)."""
    if cfg.n is None and cfg.max_total_tokens is None:
        raise UserError("best-of-n: set n, or max_total_tokens (a token budget)")
    scfg = SearchConfig(strategy="best_of_n", model=cfg.model, backend=cfg.backend, prompt=cfg.prompt,
                        problems=cfg.problems, verify=cfg.verify, temperature=cfg.temperature, top_p=cfg.top_p,
                        seed=cfg.seed, out=cfg.out)
    scfg.policy.max_path_tokens = cfg.max_tokens
    share = math.ceil(cfg.max_total_tokens / max(1, problem_count)) if cfg.n is None else None
    scfg.best_of_n = BestOfNSettings(n=cfg.n, tokens_per_problem=share, wave=cfg.wave, max_n=cfg.max_n)
    return scfg


def sample_best_of_n(cfg: BestOfNConfig, console: Console | None = None, overwrite: bool = False,
                     backends: BackendFactory = make_backend) -> dict:
    """Sample, verify and write one tree per problem through the search shell; returns its manifest."""
    from mcts_cot.problems import load_problems

    count = len(load_problems(cfg.problems)[0]) if cfg.n is None else 0
    manifest = run_search(best_of_n_search(cfg, count), overwrite=overwrite, console=console, backends=backends)
    runs = summarize(cfg.out)
    return {**manifest, "samples_per_problem": runs["rollouts"] / max(1, runs["trees"]),
            "token_budget": cfg.max_total_tokens}


@dataclasses.dataclass
class CompareConfig:
    """`mcts-cot compare-bon RUN_DIR`: best-of-N at the MCTS run's generated tokens on the same problems, solve
    rates, and (unless `train_models` is false) a model trained on each one's data, evaluated greedy."""

    wave: int = option(2, "Best-of-N samples per problem per generate call.", ge=1)
    token_factor: float = option(1.0, "Best-of-N token budget = this × the MCTS run's generated tokens, shared equally by its problems.", gt=0)
    train_models: bool = option(True, "Also export, train and evaluate a model on each one's data.")
    backend: Literal["vllm", "hf", "scripted"] | None = option(None, "Generation engine (default: the run's).")
    test_problems: int = option(100, "Built-in arithmetic TEST problems of the greedy evals.", ge=1)
    export: Stage = section(lambda: Stage(set={
        "sft.select": ["longest"], "sft.max_per_problem": 1,
        "path.chosen": "shortest", "path.rejected_per_chosen": 2, "path.max_per_problem": 2}),
        "The export applied to both run dirs (the same rules for MCTS and best-of-N).")
    train: Stage = section(lambda: Stage(set=dict(LoopConfig().train.set)), "The training applied to both (the demo's joint recipe).")
    eval: Stage = section(Stage, "The greedy eval (EvalConfig).")
    seed: int = option(0, "Seed.", ge=0)


def run_compare(run_dir: str | Path, out: str | Path, cfg: CompareConfig, console: Console | None = None,
                backends: BackendFactory = make_backend) -> dict:
    """Best-of-N on the MCTS run's problems at its generated tokens, then (optionally) a model trained on each."""
    console = console or Console(stderr=True)
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: no config.yaml; is this a `mcts-cot search` run dir?")
    scfg = load_config(SearchConfig, run_dir / "config.yaml")
    mcts = summarize(run_dir)
    if not mcts["trees"]:
        raise UserError(f"{run_dir}: no finished trees")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    start = time.perf_counter()
    bon = _equal_token_search(scfg, cfg, mcts, out / "bon-run")
    with EnginePool(backends) as pool:
        runner = Runner(console, pool)
        bsum = runner.search("best-of-n sampling", bon, out / "bon-run")
        result = _solve_rates(run_dir, out / "bon-run", mcts, bsum)
        if cfg.train_models:
            for name, src in (("mcts", run_dir), ("best_of_n", out / "bon-run")):
                result[name].update(_train_and_eval(runner, cfg, scfg.model.name, bon.backend.name, name, src, out))
    result["stage_seconds"] = runner.times
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_results(out, result, compare_table(result), console)
    return result


def _equal_token_search(scfg: SearchConfig, cfg: CompareConfig, mcts: dict, out: Path) -> SearchConfig:
    """The MCTS run's own search config with strategy best_of_n, each problem getting an equal share of the
    MCTS run's tokens: everything else (model, prompt, problems, sampling, terminal rule) is the same."""
    bon = dataclasses.replace(scfg, strategy="best_of_n", seed=cfg.seed, out=str(out),
                              backend=dataclasses.replace(scfg.backend, name=cfg.backend or scfg.backend.name))
    share = math.ceil(cfg.token_factor * mcts["generated_tokens"] / mcts["trees"])
    bon.best_of_n = BestOfNSettings(tokens_per_problem=share, wave=cfg.wave)
    return bon


def _solve_rates(run_dir: Path, bon_dir: Path, mcts: dict, bsum: dict) -> dict[str, Any]:
    result: dict[str, Any] = {
        "run_dir": str(run_dir), "bon_dir": str(bon_dir),
        "mcts": {"problems": mcts["trees"], "solved": mcts["solved"], "solve_rate": mcts["solve_rate"],
                 "generated_tokens": mcts["generated_tokens"], "correct_leaves": mcts["correct"]},
        "best_of_n": {"problems": bsum["trees"], "solved": bsum["solved"], "solve_rate": bsum["solve_rate"],
                      "generated_tokens": bsum["generated_tokens"], "correct_leaves": bsum["correct"],
                      "samples_per_problem": bsum["rollouts"] / max(1, bsum["trees"])},
        "same_problems": _tree_ids(run_dir) == _tree_ids(bon_dir),
    }
    result["solve_ratio"] = result["mcts"]["solved"] / max(1, result["best_of_n"]["solved"])
    return result


def _train_and_eval(runner: Runner, cfg: CompareConfig, model: str, backend: str, name: str, src: Path,
                    out: Path) -> dict[str, Any]:
    """One arm's data through the same export, training recipe and greedy eval."""
    from mcts_cot.evaluate import EvalConfig
    from mcts_cot.export import ExportConfig
    from trainers.config import TrainConfig

    ecfg = stage_config(ExportConfig, cfg.export, seed=cfg.seed)
    report = runner.export(f"{name}: export", ecfg, [src], out / f"data-{name}")
    tcfg = stage_config(TrainConfig, cfg.train, **{"model.name": model, "data": str(out / f"data-{name}"), "seed": cfg.seed})
    runner.train(f"{name}: train", tcfg, out / f"model-{name}")
    ev = stage_config(EvalConfig, cfg.eval, **{"model.name": str(out / f"model-{name}"), "backend.name": backend,
                                               "backend.seed": cfg.seed, **builtin_problems(cfg.test_problems, "test")})
    summary = runner.eval(f"{name}: eval", ev, out / f"eval-{name}")
    return {"pairs": report["rows"]["pairs"], "sft_rows": report["rows"]["sft"],
            "trained_accuracy": summary["accuracy"], "trained_no_answer": summary["no_answer_rate"],
            "trained_problems": summary["problem_count"], "eval_dir": str(out / f"eval-{name}")}


def _tree_ids(run_dir: Path) -> set[str]:
    return {str(t.problem["id"]) for t in iter_trees(run_dir)}


def compare_table(result: dict) -> Grid:
    cols = ["method", "generated tokens", "solved", "solve rate", "correct leaves"]
    trained = "trained_accuracy" in result["mcts"]
    if trained:
        cols += ["pairs", "trained accuracy (no answer)"]
    table = Grid("MCTS vs best-of-N at equal generated tokens", cols)
    for name, label in (("mcts", "MCTS"), ("best_of_n", f"best-of-N (N≈{result['best_of_n']['samples_per_problem']:.0f})")):
        r = result[name]
        cells = [label, str(r["generated_tokens"]), f"{r['solved']}/{r['problems']}", f"{r['solve_rate']:.1%}", str(r["correct_leaves"])]
        if trained:
            cells += [str(r["pairs"]), f"{with_interval(r['trained_accuracy'], r['trained_problems'])} ({r['trained_no_answer']:.1%})"]
        table.add_row(*cells)
    table.caption = f"MCTS / best-of-N solved: {result['solve_ratio']:.2f}×" + (f"; {INTERVAL_NOTE}" if trained else "")
    return table
