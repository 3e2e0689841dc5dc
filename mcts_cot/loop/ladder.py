"""The ablation ladder (`mcts-cot ladder RUN_DIR`): Marco-o1's Table 5 rows trained on the data of ONE search
run and evaluated on the same test set, so each row's change is the only difference."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

from rich.console import Console

from mcts_cot.backends import BackendFactory, make_backend
from mcts_cot.config import load_config, option, save_config, section, set_value
from mcts_cot.errors import UserError
from mcts_cot.evaluate import INTERVAL_NOTE, with_interval
from mcts_cot.loop.engines import EnginePool
from mcts_cot.loop.reports import VS_BASE, VS_BASE_MEANS, vs_base, write_results
from mcts_cot.loop.stages import Runner, Stage, builtin_problems, stage_config
from mcts_cot.store import run_model
from mcts_cot.tables import Grid


@dataclasses.dataclass
class LadderConfig:
    """`mcts-cot ladder RUN_DIR`: Marco-o1's Table 5 rows trained on the data of one search run.

    Each row names a train YAML (TrainConfig), which export it trains on (`data`: a key of `exports`) and
    which model it starts from (`init`: base, or an earlier row's name). The paper's rows are cumulative:
    SFT; then from the SFT model: + DPO (plain DPO, unbalanced data), + Data Balance (chosen = shortest
    correct path), + cDPO (label smoothing), + Joint Loss (α = 1 NLL), + Masking (shared prefix masked)."""

    model: str | None = option(None, "The base model (default: the run dir's model).")
    backend: Literal["vllm", "hf", "scripted"] = option("vllm", "Generation engine of the evals.")
    test_problems: int = option(100, "Built-in arithmetic TEST problems of each row's greedy eval.", ge=1)
    eval: Stage = section(Stage, "The greedy eval (EvalConfig).")
    exports: dict = option({
        "unbalanced": {"path.chosen": "longest"},
        "balanced": {"path.chosen": "shortest"},
    }, "Named exports (ExportConfig overrides on top of `export`) the rows train on.")
    export: Stage = section(lambda: Stage(set={
        "sft.select": ["longest"], "sft.max_per_problem": 1, "path.rejected_per_chosen": 2, "path.max_per_problem": 2}),
        "Export settings shared by every named export.")
    train_row: Stage = section(lambda: Stage(set={
        "prefix_sharing": True, "bf16": "auto", "learning_rate": 2e-5, "epochs": 2.0,
        "per_device_train_batch_size": 4, "max_length": 768, "logging_steps": 5, "save_steps": 100000}),
        "TrainConfig overrides applied to every row after the row's own recipe file and before its `set` (sizes, learning rate); `config` is used by rows without a file.")
    rows: list = option([
        {"name": "SFT", "train": "configs/train/ladder/1_sft.yaml", "data": "unbalanced", "init": "base"},
        {"name": "+ DPO", "train": "configs/train/ladder/2_dpo.yaml", "data": "unbalanced", "init": "SFT"},
        {"name": "+ Data Balance", "train": "configs/train/ladder/3_balance.yaml", "data": "balanced", "init": "SFT"},
        {"name": "+ cDPO", "train": "configs/train/ladder/4_cdpo.yaml", "data": "balanced", "init": "SFT"},
        {"name": "+ Joint Loss", "train": "configs/train/ladder/5_joint.yaml", "data": "balanced", "init": "SFT"},
        {"name": "+ Masking", "train": "configs/train/ladder/6_masking.yaml", "data": "balanced", "init": "SFT"},
    ], "Rows: {name, train (TrainConfig YAML or null), set ({key: value}), data (an `exports` key), init (base or a row name)}.")
    eval_base: bool = option(True, "Also evaluate the base model (a reference row above SFT).")
    seed: int = option(0, "Seed of export splits, training and eval.", ge=0)


_ROW_KEYS = {"name", "train", "set", "data", "init"}


def run_ladder(run_dir: str | Path, out: str | Path, cfg: LadderConfig, console: Console | None = None,
               backends: BackendFactory = make_backend) -> dict:
    """Export the named datasets from `run_dir`, train every row, evaluate each, print the table."""
    console = console or Console(stderr=True)
    run_dir, out = Path(run_dir), Path(out)
    base = cfg.model or run_model(run_dir)
    _check_rows(cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    start = time.perf_counter()
    with EnginePool(backends) as pool:
        runner = Runner(console, pool)
        data = _exports(runner, run_dir, out, cfg)
        rows = _rows(runner, out, cfg, base, data)
    results = {"run_dir": str(run_dir), "rows": rows, "stage_seconds": runner.times,
               "wall_seconds": round(time.perf_counter() - start, 1)}
    write_results(out, results, ladder_table(rows), console)
    return results


def _check_rows(cfg: LadderConfig) -> None:
    """Every row names its data and starts from the base or an earlier row: checked before any work."""
    names = []
    for i, row in enumerate(cfg.rows):
        bad = set(row) - _ROW_KEYS
        if bad or "name" not in row:
            raise UserError(f"ladder rows[{i}]: needs a name; unknown keys {', '.join(sorted(bad)) or '-'} (keys: {', '.join(sorted(_ROW_KEYS))})")
        if row.get("data") not in cfg.exports:
            raise UserError(f"ladder row {row['name']!r}: data {row.get('data')!r} is not one of exports ({', '.join(cfg.exports)})")
        if row.get("init", "base") not in ["base", *names]:
            raise UserError(f"ladder row {row['name']!r}: init {row.get('init')!r} must be base or an earlier row ({', '.join(names)})")
        names.append(row["name"])


def _exports(runner: Runner, run_dir: Path, out: Path, cfg: LadderConfig) -> dict[str, Path]:
    """The named exports of the one run dir (each: the shared export settings plus its own)."""
    from mcts_cot.export import ExportConfig

    data = {}
    for name, sets in cfg.exports.items():
        ecfg = stage_config(ExportConfig, cfg.export, seed=cfg.seed)
        for key, value in sets.items():
            set_value(ecfg, key, value, where=f"exports.{name}")
        runner.export(f"export {name}", ecfg, [run_dir], out / f"data-{name}")
        data[name] = out / f"data-{name}"
    return data


def _rows(runner: Runner, out: Path, cfg: LadderConfig, base: str, data: dict[str, Path]) -> list[dict]:
    """Train and evaluate every row in order (after the base's eval when asked)."""
    from mcts_cot.evaluate import EvalConfig
    from trainers.config import TrainConfig

    efixed = {"backend.name": cfg.backend, "backend.seed": cfg.seed, **builtin_problems(cfg.test_problems, "test")}
    rows, models = [], {"base": base}
    if cfg.eval_base:
        ecfg = stage_config(EvalConfig, cfg.eval, **efixed, **{"model.name": base})
        rows.append({"name": "base", "model": base, "greedy": runner.eval("base: eval", ecfg, out / "base" / "eval-greedy"),
                     "greedy_dir": str(out / "base" / "eval-greedy")})
    for i, row in enumerate(cfg.rows):
        slug = f"{i + 1}-" + "".join(c if c.isalnum() else "-" for c in row["name"].lower()).strip("-").replace("--", "-")
        # The row's own recipe (a standalone `mcts-cot train` config), then the ladder's shared sizes, then the row's set.
        tcfg = load_config(TrainConfig, row.get("train") or cfg.train_row.config, None, **cfg.train_row.set)
        for key, value in (row.get("set") or {}).items():
            set_value(tcfg, key, value, where=f"row {row['name']}")
        init = models[row.get("init", "base")]
        tcfg.model.name, tcfg.data, tcfg.seed = init, str(data[row["data"]]), cfg.seed
        rdir = out / slug
        metrics = runner.train(f"{row['name']}: train", tcfg, rdir / "model")
        models[row["name"]] = str(rdir / "model")
        ecfg = stage_config(EvalConfig, cfg.eval, **efixed, **{"model.name": str(rdir / "model")})
        summary = runner.eval(f"{row['name']}: eval", ecfg, rdir / "eval-greedy")
        rows.append({"name": row["name"], "model": str(rdir / "model"), "greedy": summary,
                     "greedy_dir": str(rdir / "eval-greedy"), "data": row["data"], "init": row.get("init", "base"),
                     "objective": metrics["objective"], "steps": metrics["global_step"]})
    return rows


def ladder_table(rows: list[dict]) -> Grid:
    table = Grid("ablation ladder (Marco-o1 Table 5): accuracy (no-answer %)",
                 ["row", "data", "accuracy (no answer)", "mean tokens", "reflection / resp", VS_BASE], left=2)
    for r, vs in zip(rows, vs_base(rows), strict=True):
        g = r["greedy"]
        table.add_row(r["name"], r.get("data", "-"), f"{with_interval(g['accuracy'], g['problem_count'])} ({g['no_answer_rate']:.1%})",
                      f"{g['mean_generated_tokens']:.1f}", f"{g['reflection_per_response']['total']:.3f}", vs)
    table.caption = f"each row: <out>/<n>-<row>/model and /eval-greedy; {INTERVAL_NOTE}; {VS_BASE}: {VS_BASE_MEANS}"
    return table
