"""The DTO recipe (`configs/recipes/dto.yaml`): sample → truncate → export → SimPO → eval, end to end.

The base model samples `samples` responses per train problem (an eval run: its samples.jsonl are the
trajectories), DTO cuts the correct ones at their exit points (`mcts-cot checkpoints`, method dto), the dto
pair strategy exports shortest-kept vs longest-original pairs, SimPO trains on them, and the base and the
trained model are evaluated greedy on the same test problems, compared problem by problem. Every stage is the
library function of its command, through the loop's `Runner` and engine pool (one engine per model).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

from rich.console import Console

from mcts_cot.backends import BackendFactory, make_backend
from mcts_cot.config import load_config, option, save_config, section
from mcts_cot.evaluate import INTERVAL_NOTE, paired_comparison, with_interval
from mcts_cot.loop.engines import EnginePool
from mcts_cot.loop.reports import write_results
from mcts_cot.loop.stages import Runner, Stage, builtin_problems, stage_config
from mcts_cot.tables import Grid


@dataclasses.dataclass
class DtoRecipe:
    """`mcts-cot dto-recipe`: the DTO pipeline on built-in arithmetic problems with the embedded model."""

    model: str = option("smollm2-135m", "The base model.")
    backend: Literal["vllm", "hf", "scripted"] = option("vllm", "Generation engine of sampling, truncation and eval.")
    out: str = option("runs/dto", "Output dir: samples/, dto-run/, data/, model/, eval-base/, eval-trained/, results.*.")
    train_problems: int = option(60, "Built-in arithmetic TRAIN problems sampled (split train).", ge=1)
    samples: int = option(4, "Responses sampled per train problem (the trajectories).", ge=1)
    test_problems: int = option(100, "Built-in arithmetic TEST problems of the greedy evals.", ge=1)
    sample: Stage = section(lambda: Stage(set={"sampling.temperature": 0.7, "sampling.top_p": 1.0, "sampling.max_tokens": 384}),
                            "Sampling the trajectories (EvalConfig; n = samples).")
    dto: Stage = section(Stage, "Truncation (CheckpointConfig; method dto).")
    export: Stage = section(lambda: Stage(set={"strategies": ["dto"], "sft.select": []}), "The export (ExportConfig).")
    train: Stage = section(lambda: Stage(config="configs/train/simpo.yaml"), "The training (TrainConfig; SimPO).")
    eval: Stage = section(Stage, "The greedy evals of base and trained model (EvalConfig).")
    seed: int = option(0, "Seed of every stage.", ge=0)


def run_dto_recipe(cfg: DtoRecipe, console: Console | None = None, backends: BackendFactory = make_backend) -> dict:
    from mcts_cot.checkpoints.config import CheckpointConfig
    from mcts_cot.checkpoints.driver import run_checkpoints
    from mcts_cot.evaluate import EvalConfig
    from mcts_cot.export import ExportConfig
    from trainers.config import TrainConfig

    console = console or Console(stderr=True)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    start = time.perf_counter()
    fixed = {"model.name": cfg.model, "backend.name": cfg.backend, "backend.seed": cfg.seed}
    test = {**fixed, **builtin_problems(cfg.test_problems, "test")}
    with EnginePool(backends) as pool:
        runner = Runner(console, pool)
        sample = stage_config(EvalConfig, cfg.sample, **fixed, **builtin_problems(cfg.train_problems, "train"),
                              **{"sampling.n": cfg.samples})
        sampled = runner.eval("sample trajectories", sample, out / "samples")
        base = runner.eval("base: greedy eval", stage_config(EvalConfig, cfg.eval, **test), out / "eval-base")
        dcfg = stage_config(CheckpointConfig, cfg.dto, method="dto", seed=cfg.seed, out=str(out / "dto-run"),
                            **{"model.name": cfg.model, "backend.name": cfg.backend, "backend.seed": cfg.seed,
                               "trajectories.source": str(out / "samples")})
        with runner._timed("dto truncation"):
            manifest = run_checkpoints(dcfg, overwrite=True, console=console, backends=pool)
        ecfg = stage_config(ExportConfig, cfg.export, seed=cfg.seed)
        report = runner.export("export dto pairs", ecfg, [out / "dto-run"], out / "data")
        tcfg = stage_config(TrainConfig, cfg.train, **{"model.name": cfg.model, "data": str(out / "data"), "seed": cfg.seed})
        runner.train("SimPO", tcfg, out / "model")
        trained = runner.eval("trained: greedy eval", stage_config(EvalConfig, cfg.eval, **{**test, "model.name": str(out / "model")}),
                              out / "eval-trained")
    result = {"sampled": _brief(sampled), "dto": dto_summary(out / "dto-run"), "generated_tokens": manifest["generated_tokens"],
              "pairs": report["rows"]["pairs"], "pairs_val": report["rows"]["pairs_val"],
              "base": _brief(base), "trained": _brief(trained),
              "vs_base": paired_comparison(out / "eval-base", out / "eval-trained"),
              "stage_seconds": runner.times, "wall_seconds": round(time.perf_counter() - start, 1)}
    write_results(out, result, dto_table(result), console)
    return result


def _brief(summary: dict) -> dict:
    return {k: summary[k] for k in ("accuracy", "no_answer_rate", "mean_generated_tokens", "problem_count")}


def dto_summary(run_dir: Path) -> dict:
    """Keep rate and mean tokens before / after truncation over every correct trajectory of a dto run."""
    from mcts_cot.store import iter_trees

    rows = [r for t in iter_trees(run_dir) for r in t.stats.get("dto", []) if r["verdict"] == "correct"]
    kept = [r for r in rows if r["kept"]]
    mean = lambda xs: round(sum(xs) / len(xs), 1) if xs else None  # noqa: E731
    return {"correct_trajectories": len(rows), "with_exit": sum(r["exit"] is not None for r in rows),
            "kept": len(kept), "keep_rate": round(len(kept) / len(rows), 4) if rows else None,
            "kept_tokens_before": mean([r["original_tokens"] for r in kept]),
            "kept_tokens_after": mean([r["truncated_tokens"] for r in kept]),
            "all_tokens_before": mean([r["original_tokens"] for r in rows])}


def dto_table(result: dict) -> Grid:
    table = Grid("DTO: base vs SimPO on DTO pairs (greedy, test problems)",
                 ["model", "accuracy", "no answer", "mean generated tokens", "vs base (+/−, p)"])
    v = result["vs_base"]
    for name, row, vs in (("base", result["base"], "-"), ("SimPO on DTO pairs", result["trained"],
                                                          f"+{v['won']} −{v['lost']} (p {v['p_value']:.2f})")):
        table.add_row(name, with_interval(row["accuracy"], row["problem_count"]), f"{row['no_answer_rate']:.1%}",
                      f"{row['mean_generated_tokens']:.1f}", vs)
    d = result["dto"]
    table.caption = (f"DTO kept {d['kept']}/{d['correct_trajectories']} correct trajectories (keep rate {d['keep_rate']}), "
                     f"tokens {d['kept_tokens_before']} → {d['kept_tokens_after']}; {result['pairs']} train pairs; {INTERVAL_NOTE}")
    return table


def load_recipe(path, overrides=None, **flags) -> DtoRecipe:
    """The recipe from YAML, flags and `--set`; `--set STAGE.KEY=V` (KEY not `config` / `set`) goes into that
    stage's overrides, e.g. `dto.dto.threshold=0.5` or `train.learning_rate=1.0e-5`."""
    import yaml

    stages = {f.name for f in dataclasses.fields(DtoRecipe) if f.type in (Stage, "Stage")}
    plain, staged = [], []
    for item in overrides or []:
        key, _, raw = item.partition("=")
        head, _, rest = key.strip().partition(".")
        if head in stages and rest and rest.split(".")[0] not in ("config", "set"):
            staged.append((head, rest, yaml.safe_load(raw)))
        else:
            plain.append(item)
    cfg = load_config(DtoRecipe, path, plain, **flags)
    for head, rest, value in staged:
        getattr(cfg, head).set[rest] = value
    return cfg
