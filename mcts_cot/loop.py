"""Closing the loop: search → export → train → eval as recipes, with rounds, the ablation ladder and a
best-of-N baseline.

Every stage is the library function behind its CLI command (`run_search`, `export.build` / `write`,
`trainers.trainer.run`, `run_eval`) and writes the same directory that command would, so any stage can be
re-run by hand from its input. A recipe (`LoopConfig`, `configs/recipes/*.yaml`) holds the sizes of every
stage; each stage is the stage's own YAML (`config`) plus dotted overrides (`set`).

- `run_loop`: evaluate the base model, then per round search with the current model, export, train from it
  and evaluate the result (round k searches with the model of round k-1: on-policy data, as MCTS-DPO and
  Step-DPO do). Ends with a before/after table.
- `run_ladder`: the Table 5 rows of Marco-o1 (SFT, + DPO, + Data Balance, + cDPO, + Joint Loss, + Masking)
  trained on the data of ONE search run and evaluated on the same test set.
- `sample_best_of_n` / `run_compare`: N full samples per problem at the same number of generated tokens as an
  MCTS run, written as a run dir of one-level trees (export-pairs reads it unchanged); solve rates, and the
  accuracy of a model trained on each one's data through the same export and trainer.

Engines: vLLM takes minutes to start on a small CPU, so `EnginePool` keeps one engine per model alive across
the stages that generate with it (base eval + round-1 search; a trained model's eval + the next round's
search) and shuts it before training. It hands each stage a fresh stats object and a reset call counter, so
a stage's samples and manifest are the ones its standalone command would produce.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from rich.console import Console
from rich.table import Table

from mcts_cot.config import (
    BackendConfig,
    ModelConfig,
    ProblemsConfig,
    PromptConfig,
    VerifyConfig,
    config_hash,
    load_config,
    option,
    save_config,
    section,
    set_value,
    to_dict,
)
from mcts_cot.errors import UserError
from mcts_cot.io import write_atomic, write_json


@dataclasses.dataclass
class Stage:
    """One stage: the YAML of its own command, then dotted overrides of that command's config."""

    config: str | None = option(None, "YAML of the stage's command (e.g. configs/search/plain.yaml); null = that command's defaults.")
    set: dict = option({}, "Dotted overrides applied after `config`, e.g. {budget.max_rollouts: 16}.")


@dataclasses.dataclass
class LoopConfig:
    """`mcts-cot loop` / `mcts-cot demo`: search → export → train → eval, for one or more rounds.

    The defaults ARE the demo recipe (configs/recipes/demo.yaml spells them out): a 2-core CPU runs it in
    under 20 minutes. `scale` multiplies the problem counts.
    """

    model: str = option("smollm2-135m", "The base model: alias, HF id or folder.")
    backend: Literal["vllm", "hf", "scripted"] = option("vllm", "Generation engine of search and eval.")
    out: str = option("runs/demo", "Output dir: base/, round-<k>/, results.json, results.md.")
    rounds: int = option(1, "Rounds; round k searches with the model trained in round k-1 and trains from it.", ge=1)
    scale: float = option(1.0, "Multiplies train_problems, test_problems and sampled_test_problems.", gt=0)
    train_problems: int = option(60, "Built-in arithmetic TRAIN problems searched per round (builtin:arithmetic:N, split train).", ge=1)
    fresh_problems: bool = option(True, "Round k searches a new train set (generator seed k-1) instead of the same problems again.")
    test_problems: int = option(100, "Built-in arithmetic TEST problems of the greedy eval (split test: never a train problem).", ge=1)
    sampled_test_problems: int = option(50, "Test problems of the sampled eval (pass@k); 0 skips it.", ge=0)
    search: Stage = section(lambda: Stage(set={
        "budget.success_correct": 4, "budget.min_rollouts": 8, "budget.success_correct_after_min": 2,
        "budget.max_rollouts": 16, "policy.max_path_tokens": 384, "policy.max_depth": 8}),
        "The search stage (SearchConfig). model, backend, problems and out are set by the loop.")
    export: Stage = section(lambda: Stage(set={
        "sft.select": ["longest"], "sft.max_per_problem": 1,
        "path.chosen": "shortest", "path.rejected_per_chosen": 2, "path.max_per_problem": 2}),
        "The export stage (ExportConfig).")
    train: Stage = section(lambda: Stage(set={
        "objective": "cdpo", "alpha": 1.0, "masking": True, "prefix_sharing": True, "bf16": "auto", "epsilon": 0.1, "beta": 0.1,
        "learning_rate": 2e-5, "epochs": 2.0, "per_device_train_batch_size": 4, "max_length": 768,
        "logging_steps": 5, "save_steps": 100000}),
        "The train stage (TrainConfig); the defaults are the paper's joint recipe (cDPO + α·NLL + masking).")
    eval: Stage = section(Stage, "The greedy eval (EvalConfig; greedy by default).")
    sampled_eval: Stage = section(lambda: Stage(set={
        "sampling.n": 8, "sampling.temperature": 0.7, "sampling.top_p": 1.0, "k": 8, "chunk": 16}),
        "The sampled eval that gives pass@k (EvalConfig).")
    seed: int = option(0, "Seed of every stage (search, backend, export split, training).", ge=0)


STAGES = ("search", "export", "train", "eval", "sampled_eval")


def load_loop_config(path: str | Path | None, overrides: list[str] | None = None, cls=None, **flags) -> Any:
    """Like `load_config`, and `--set STAGE.KEY=V` (KEY not `config` / `set`) goes into that stage's `set`."""
    from mcts_cot.config import _parse_scalar

    cls = cls or LoopConfig
    plain, staged = [], []
    names = {f.name for f in dataclasses.fields(cls)}
    for item in overrides or []:
        key, _, raw = item.partition("=")
        head, _, rest = key.strip().partition(".")
        if head in names and head in STAGES + ("train_row",) and rest and rest.split(".")[0] not in ("config", "set"):
            staged.append((head, rest, _number(_parse_scalar(raw))))
        else:
            plain.append(item)
    cfg = load_config(cls, path, plain, **flags)
    for head, rest, value in staged:
        getattr(cfg, head).set[rest] = value
    return cfg


def _number(value: Any) -> Any:
    """YAML reads `1e-5` as a string (it wants `1.0e-5`); take it as the number it means."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def stage_config(cls: type, stage: Stage, **fixed: Any) -> Any:
    """The stage's command config: its YAML, its overrides, then what the recipe fixes (model, out, ...)."""
    cfg = load_config(cls, stage.config, None, **stage.set)
    for key, value in fixed.items():
        if value is not None:
            set_value(cfg, key, value, where="recipe")
    return cfg


# --------------------------------------------------------------------------------------------- engines


class _Shared:
    """A pooled backend as a stage sees it: everything delegates, except close (the pool closes it)."""

    def __init__(self, backend):
        object.__setattr__(self, "_backend", backend)

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def __setattr__(self, name, value):
        setattr(self._backend, name, value)

    def close(self) -> None:
        pass


class EnginePool:
    """One engine per (model, backend settings), shared by the stages that generate with that model.

    Inside `with pool:` the stages' `make_backend` calls go through the pool; `release(model)` shuts that
    model's engine (before training, so vLLM's reserved memory is free)."""

    def __init__(self):
        self.engines: dict[tuple, Any] = {}
        self.starts = 0
        self._saved = None

    def __enter__(self) -> EnginePool:
        import mcts_cot.backends as backends

        self._saved = backends.make_backend
        backends.make_backend = self.make
        return self

    def __exit__(self, *exc) -> None:
        import mcts_cot.backends as backends

        backends.make_backend = self._saved
        self.release()

    def make(self, model: ModelConfig, backend: BackendConfig, script=None):
        from mcts_cot.backends.base import BackendStats

        key = (model.name, repr(to_dict(model)), repr(to_dict(backend)), id(script))
        if key not in self.engines:
            self.engines[key] = self._saved(model, backend, script=script)
            self.starts += 1
        engine = self.engines[key]
        engine.stats = BackendStats()
        if hasattr(engine, "_calls"):
            engine._calls = 0  # derived seeds restart, as in a fresh engine
        return _Shared(engine)

    def release(self, model: str | None = None) -> None:
        for key in [k for k in self.engines if model is None or k[0] == model]:
            self.engines.pop(key).close()


# --------------------------------------------------------------------------------------------- stages


def _same_config(out: Path, cfg: Any, marker: str) -> bool:
    """True when `out` holds a finished stage (its `marker` file) made by exactly this config."""
    if not (out / marker).is_file() or not (out / "config.yaml").is_file():
        return False
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text())
    except yaml.YAMLError:
        return False
    return saved == yaml.safe_load(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))


class Runner:
    """Runs stages into dirs, skipping a stage whose dir already holds its output from the same config, and
    records the wall time of each stage."""

    def __init__(self, console: Console, script=None, pool: EnginePool | None = None):
        self.console, self.script, self.pool = console, script, pool
        self.times: dict[str, float] = {}

    @contextmanager
    def _timed(self, name: str):
        self.console.rule(f"[bold]{name}")
        start = time.perf_counter()
        yield
        self.times[name] = round(time.perf_counter() - start, 1)

    def search(self, name: str, cfg, out: Path) -> dict:
        from mcts_cot.run import run_search, search_hash, summarize

        cfg.out = str(out)
        manifest = out / "manifest.json"
        if manifest.is_file():
            old = orjson_loads(manifest)
            if old.get("config_hash") == search_hash(cfg) and old.get("status") == "complete":
                self.console.print(f"{name}: done already in {out}")
                return summarize(out)
        with self._timed(name):
            overwrite = manifest.is_file() and orjson_loads(manifest).get("config_hash") != search_hash(cfg)
            run_search(cfg, overwrite=overwrite, console=self.console, script=self.script)
        return summarize(out)

    def export(self, name: str, cfg, run_dirs: list[Path], out: Path) -> dict:
        from mcts_cot.export import build, write

        if _same_config(out, cfg, "manifest.json") and orjson_loads(out / "manifest.json")["inputs"][0]["run_dir"] == str(run_dirs[0]):
            self.console.print(f"{name}: done already in {out}")
            return orjson_loads(out / "report.json")
        with self._timed(name):
            result = build(cfg, run_dirs)
            write(result, cfg, out, overwrite=True)  # the loop owns the dir; same config returned above
        rows = result.report["rows"]
        self.console.print(f"{name}: {rows['sft']} SFT rows, {rows['pairs']} pairs (+{rows['pairs_val']} validation) in {out}")
        return result.report

    def train(self, name: str, cfg, out: Path) -> dict:
        from trainers.trainer import run

        if _same_config(out, cfg, "metrics.json"):
            self.console.print(f"{name}: done already in {out}")
            return orjson_loads(out / "metrics.json")
        if self.pool:
            self.pool.release()  # free the engine's memory and cores for training
        with self._timed(name):
            result = run(cfg, out, overwrite=True)  # the loop owns the dir; same config returned above
        m = result.metrics
        self.console.print(f"{name}: {m['objective']}, {m['global_step']} steps in {m['wall_seconds']:.0f} s; model in {out}")
        return m

    def eval(self, name: str, cfg, out: Path) -> dict:
        from mcts_cot.evaluate import run_eval, with_interval

        cfg.out = str(out)
        if _same_config(out, cfg, "summary.json"):
            self.console.print(f"{name}: done already in {out}")
            return orjson_loads(out / "summary.json")
        with self._timed(name):
            summary = run_eval(cfg, out, script=self.script, console=self.console, overwrite=True)
        self.console.print(f"{name}: accuracy {with_interval(summary['accuracy'], summary['problem_count'])}, "
                           f"no answer {summary['no_answer_rate']:.1%} ({out})")
        return summary


def orjson_loads(path: Path) -> Any:
    import orjson

    return orjson.loads(Path(path).read_bytes())


def _problems(n: int, split: str, seed: int = 0) -> dict[str, Any]:
    return {"problems.source": f"builtin:arithmetic:{n}", "problems.split": split, "problems.seed": seed,
            "problems.limit": None}


def _scaled(n: int, scale: float) -> int:
    return max(1, round(n * scale)) if n > 0 else 0


# --------------------------------------------------------------------------------------------- the loop


def _evals(runner: Runner, cfg: LoopConfig, model: str, where: Path, label: str) -> dict:
    from mcts_cot.evaluate import EvalConfig

    fixed = {"model.name": model, "backend.name": cfg.backend, "backend.seed": cfg.seed}
    greedy = stage_config(EvalConfig, cfg.eval, **fixed, **_problems(_scaled(cfg.test_problems, cfg.scale), "test"))
    out = {"greedy": runner.eval(f"{label}: greedy eval", greedy, where / "eval-greedy"),
           "greedy_dir": str(where / "eval-greedy")}
    n_sampled = _scaled(cfg.sampled_test_problems, cfg.scale)
    if n_sampled:
        sampled = stage_config(EvalConfig, cfg.sampled_eval, **fixed, **_problems(n_sampled, "test"))
        out["sampled"] = runner.eval(f"{label}: sampled eval", sampled, where / "eval-sampled")
        out["sampled_dir"] = str(where / "eval-sampled")
    return out


def run_loop(cfg: LoopConfig, console: Console | None = None, script=None) -> dict:
    """Base eval, then `rounds` × (search with the current model → export → train from it → eval).

    Writes `results.json` / `results.md` in `cfg.out` and returns the results dict."""
    from mcts_cot.export import ExportConfig
    from mcts_cot.search import SearchConfig
    from trainers.config import TrainConfig

    console = console or Console(stderr=True)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root)
    start = time.perf_counter()
    results: dict[str, Any] = {"recipe": to_dict(cfg), "rows": [], "rounds": []}
    with EnginePool() as pool:
        runner = Runner(console, script, pool)
        model = cfg.model
        results["rows"].append({"name": "base", "model": model, **_evals(runner, cfg, model, root / "base", "base")})
        for k in range(1, cfg.rounds + 1):
            rdir = root / f"round-{k}"
            search = stage_config(SearchConfig, cfg.search, **{
                "model.name": model, "backend.name": cfg.backend, "backend.seed": cfg.seed, "seed": cfg.seed,
                **_problems(_scaled(cfg.train_problems, cfg.scale), "train", (k - 1) if cfg.fresh_problems else 0)})
            summary = runner.search(f"round {k}: search with {model}", search, rdir / "search")
            export = stage_config(ExportConfig, cfg.export, seed=cfg.seed)
            report = runner.export(f"round {k}: export", export, [rdir / "search"], rdir / "data")
            if report["rows"]["pairs"] == 0 and (runner_train_needs_pairs(cfg)):
                raise UserError(f"round {k}: the search gave no preference pairs ({rdir / 'search'}); "
                                "raise train_problems or the search budget")
            train = stage_config(TrainConfig, cfg.train, **{"model.name": model, "data": str(rdir / "data"),
                                                            "seed": cfg.seed})
            metrics = runner.train(f"round {k}: train", train, rdir / "model")
            model = str(rdir / "model")
            evals = _evals(runner, cfg, model, rdir, f"round {k}")
            results["rounds"].append({"round": k, "search_dir": str(rdir / "search"), "search": summary,
                                      "data_dir": str(rdir / "data"), "data": report["rows"], "model_dir": model,
                                      "train": {"objective": metrics["objective"], "steps": metrics["global_step"],
                                                "wall_seconds": metrics["wall_seconds"]}})
            results["rows"].append({"name": f"round {k}", "model": model, **evals})
        results["engine_starts"] = pool.starts
    results["stage_seconds"] = runner.times
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    _write_results(root, results, before_after_table(results["rows"]), console, where_table(results, root))
    return results


def runner_train_needs_pairs(cfg: LoopConfig) -> bool:
    return cfg.train.set.get("objective", "cdpo") != "sft"


# --------------------------------------------------------------------------------------------- tables


def _row_figures(row: dict) -> dict[str, Any]:
    """The table's figures; an accuracy is (rate, problems) so that it prints with its interval."""
    g = row["greedy"]
    s = row.get("sampled")
    k = s["k"] if s else None
    return {
        "greedy acc": (g["accuracy"], g["problem_count"]),
        f"pass@{k}" if k else "pass@k": (s[f"pass@{k}"], s["problem_count"]) if s else None,
        "sampled acc": (s["accuracy"], s["problem_count"]) if s else None,
        "no answer": g["no_answer_rate"], "mean tokens": g["mean_generated_tokens"],
        "reflection / resp": g["reflection_per_response"]["total"],
    }


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        from mcts_cot.evaluate import with_interval

        return with_interval(*value)
    if key in ("mean tokens",):
        return f"{value:.1f}"
    if key in ("reflection / resp",):
        return f"{value:.3f}"
    return f"{value:.1%}"


def before_after_table(rows: list[dict], title: str = "before / after") -> Table:
    table = Table(title=title)
    keys = list(_row_figures(rows[0]))
    table.add_column("model")
    for key in keys + [VS_BASE]:
        table.add_column(key, justify="right")
    for row, vs in zip(rows, _vs_base(rows), strict=True):
        figs = _row_figures(row)
        table.add_row(row["name"], *[_fmt(k, figs.get(k)) for k in keys], vs)
    from mcts_cot.evaluate import INTERVAL_NOTE, UNSEEDED_NOTE

    table.caption = ("greedy accuracy, no answer, mean tokens, reflection markers: greedy eval; pass@k, sampled accuracy: "
                     f"sampled eval; {INTERVAL_NOTE}; {VS_BASE}: {VS_BASE_MEANS}")
    if any(not row.get("sampled", {}).get("seeded", True) for row in rows):
        table.caption += f"; {UNSEEDED_NOTE}"
    return table


VS_BASE = "vs base (+/−, p)"
VS_BASE_MEANS = ("greedy test problems this model solves and the first row misses (+) and the reverse (−), "
                 "with the exact McNemar p-value")


def _vs_base(rows: list[dict]) -> list[str]:
    """Each row's paired comparison with the first row (the base), from the two greedy evals."""
    from mcts_cot.evaluate import paired_comparison

    cells = ["-"]
    for row in rows[1:]:
        c = paired_comparison(rows[0]["greedy_dir"], row["greedy_dir"])
        cells.append(f"+{c['won']} −{c['lost']} (p {c['p_value']:.2f})")
    return cells


def markdown_table(table: Table) -> str:
    """A rich table as GitHub markdown (for results.md and docs)."""
    heads = [str(c.header) for c in table.columns]
    cells = [list(map(str, c._cells)) for c in table.columns]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    for i in range(len(cells[0]) if cells else 0):
        lines.append("| " + " | ".join(col[i] for col in cells) + " |")
    return "\n".join(lines) + "\n"


def _write_results(root: Path, results: dict, table: Table, console: Console, extra: Table | None = None) -> None:
    write_json(root / "results.json", results)
    times = results.get("stage_seconds", {})
    lines = [f"# {table.title}\n\n", markdown_table(table), f"\n{table.caption or ''}\n\nwall time: {results.get('wall_seconds')} s\n"]
    if extra is not None:
        lines += [f"\n## {extra.title}\n\n", markdown_table(extra)]
    if times:
        lines += ["\n| stage | seconds |\n|---|---|\n"] + [f"| {k} | {v} |\n" for k, v in times.items()]
    write_atomic(root / "results.md", "".join(lines))
    Console().print(table)
    console.print(f"results in {root / 'results.json'} and {root / 'results.md'}; wall time {results.get('wall_seconds')} s")


def where_table(results: dict, root: Path) -> Table:
    table = Table("output", "where", title="outputs")
    table.add_row("recipe", str(root / "config.yaml"))
    for row in results["rows"]:
        table.add_row(f"{row['name']}: eval", row["greedy_dir"] + (f", {row['sampled_dir']}" if "sampled_dir" in row else ""))
    for r in results["rounds"]:
        table.add_row(f"round {r['round']}: search run", r["search_dir"])
        table.add_row(f"round {r['round']}: data", r["data_dir"])
        table.add_row(f"round {r['round']}: model", r["model_dir"])
    table.add_row("results", f"{root / 'results.json'}, {root / 'results.md'}")
    return table


# --------------------------------------------------------------------------------------------- ladder


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
               script=None) -> dict:
    """Export the named datasets from `run_dir`, train every row, evaluate each, print the table."""
    from mcts_cot.evaluate import EvalConfig
    from mcts_cot.export import ExportConfig
    from trainers.config import TrainConfig

    console = console or Console(stderr=True)
    run_dir, out = Path(run_dir), Path(out)
    base = cfg.model or _run_model(run_dir)
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
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    start = time.perf_counter()
    runner = Runner(console, script)
    data = {}
    for name, sets in cfg.exports.items():
        ecfg = stage_config(ExportConfig, cfg.export, seed=cfg.seed)
        for key, value in sets.items():
            set_value(ecfg, key, value, where=f"exports.{name}")
        runner.export(f"export {name}", ecfg, [run_dir], out / f"data-{name}")
        data[name] = out / f"data-{name}"
    efixed = {"backend.name": cfg.backend, "backend.seed": cfg.seed, **_problems(cfg.test_problems, "test")}
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
    results = {"run_dir": str(run_dir), "rows": rows, "stage_seconds": runner.times,
               "wall_seconds": round(time.perf_counter() - start, 1)}
    _write_results(out, results, ladder_table(rows), console)
    return results


def ladder_table(rows: list[dict]) -> Table:
    from mcts_cot.evaluate import INTERVAL_NOTE, with_interval

    table = Table(title="ablation ladder (Marco-o1 Table 5): accuracy (no-answer %)")
    for col in ("row", "data", "accuracy (no answer)", "mean tokens", "reflection / resp", VS_BASE):
        table.add_column(col, justify="left" if col in ("row", "data") else "right")
    for r, vs in zip(rows, _vs_base(rows), strict=True):
        g = r["greedy"]
        table.add_row(r["name"], r.get("data", "-"), f"{with_interval(g['accuracy'], g['problem_count'])} ({g['no_answer_rate']:.1%})",
                      f"{g['mean_generated_tokens']:.1f}", f"{g['reflection_per_response']['total']:.3f}", vs)
    table.caption = f"each row: <out>/<n>-<row>/model and /eval-greedy; {INTERVAL_NOTE}; {VS_BASE}: {VS_BASE_MEANS}"
    return table


def _run_model(run_dir: Path) -> str:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir}: no config.yaml; is this a `mcts-cot search` run dir?")
    return (yaml.safe_load(path.read_text()) or {}).get("model", {}).get("name") or "smollm2-135m"


# --------------------------------------------------------------------------------------------- best-of-N


@dataclasses.dataclass
class BestOfNConfig:
    """`mcts-cot best-of-n`: N full samples per problem, written as a run dir of one-level trees (a root
    with N single-node paths), so export-pairs reads it unchanged. N comes from `n`, or from a token budget:
    samples are drawn `wave` per problem at a time until `max_total_tokens` generated tokens are spent."""

    model: ModelConfig = section(ModelConfig, "The generating model.")
    backend: BackendConfig = section(BackendConfig, "Generation engine.")
    prompt: PromptConfig = section(PromptConfig, "Chat prompt (the same as the search's).")
    problems: ProblemsConfig = section(lambda: ProblemsConfig(split="train"), "Problems to sample.")
    verify: VerifyConfig = section(VerifyConfig, "Answer verification pool.")
    n: int | None = option(None, "Samples per problem (null: sample until max_total_tokens).", ge=1)
    max_total_tokens: int | None = option(None, "Token budget of the whole run when n is null (e.g. an MCTS run's generated tokens).", ge=1)
    wave: int = option(2, "Samples per problem per generate call when sampling to a token budget.", ge=1)
    max_n: int = option(256, "Most samples per problem when sampling to a token budget.", ge=1)
    temperature: float = option(0.7, "Sampling temperature (the search's).", ge=0)
    top_p: float = option(0.9, "Nucleus mass (the search's).", gt=0, le=1)
    max_tokens: int = option(384, "Most tokens per sample (the search's policy.max_path_tokens).", ge=1)
    seed: int = option(0, "Seed of every sampling request.", ge=0)
    out: str = option("runs/best-of-n", "Run dir (--out).")


def sample_best_of_n(cfg: BestOfNConfig, console: Console | None = None, script=None) -> dict:
    """Sample, verify and write one tree per problem; returns the manifest."""
    from mcts_cot.backends import Request, make_backend
    from mcts_cot.problems import Context, load_problems
    from mcts_cot.prompts import prompt_ids
    from mcts_cot.search import stable_seed
    from mcts_cot.store import RunDir
    from mcts_cot.tree import Tree
    from mcts_cot.verify import Verifier, extract_answer
    from mcts_cot.versions import package_versions

    if cfg.n is None and cfg.max_total_tokens is None:
        raise UserError("best-of-n: set n, or max_total_tokens (a token budget)")
    console = console or Console(stderr=True)
    problems, _ = load_problems(cfg.problems, verify=cfg.verify, context=Context.of(cfg))
    run = RunDir(cfg.out, config_hash(cfg, exclude=("out",)), overwrite=True)
    save_config(cfg, run.path)
    backend = make_backend(cfg.model, cfg.backend, script=script)
    start = time.perf_counter()
    try:
        tok = backend.tokenizer
        trees = {}
        for p in problems:
            ids = prompt_ids(tok, cfg.prompt, p.problem)
            trees[p.id] = Tree(problem=p.to_dict(), prompt_ids=ids, prompt_text=tok.decode(ids))
        tokens, waves = 0, 0
        with Verifier.from_config(cfg.verify) as verifier:
            while True:
                per = cfg.n if cfg.n is not None else cfg.wave
                if cfg.n is None and (tokens >= cfg.max_total_tokens or waves * cfg.wave >= cfg.max_n):
                    break
                reqs = [Request(prompt_ids=trees[p.id].prompt_ids, n=per, max_tokens=cfg.max_tokens,
                                temperature=cfg.temperature, top_p=cfg.top_p, seed=stable_seed(cfg.seed, p.id, waves))
                        for p in problems]
                results = backend.generate(reqs)
                items = []
                for p, comps in zip(problems, results, strict=True):
                    tree = trees[p.id]
                    for c in comps:
                        tokens += len(c.token_ids)
                        answer = extract_answer(c.text)
                        terminal = "answer" if answer is not None else ("eos" if c.finish in ("eos", "stop") else "length")
                        node = tree.add(tree.root, kind="sample", text=c.text, token_ids=list(c.token_ids),
                                        logprob=c.logprob, finish=c.finish, terminal=terminal, answer=answer)
                        items.append((tree, node, p.answer))
                verdicts = verifier.verify_batch([(gold, n.answer) for _, n, gold in items])
                for (tree, node, _), verdict in zip(items, verdicts, strict=True):
                    node.verdict = verdict if node.terminal == "answer" else "no_answer"
                    node.N, node.W = 1, 1.0 if node.verdict == "correct" else 0.0
                    tree.root.N += 1
                    tree.root.W += node.W
                waves += 1
                console.print(f"best-of-n: wave {waves}, {sum(len(t.nodes) - 1 for t in trees.values())} samples, {tokens} tokens")
                if cfg.n is not None:
                    break
        for tree in trees.values():
            kids = tree.children(tree.root)
            counts = {v: sum(k.verdict == v for k in kids) for v in ("correct", "wrong", "no_answer", "unverifiable")}
            tree.status = "success" if counts["correct"] else "failure"
            tree.reason = f"{len(kids)} samples, {counts['correct']} correct"
            tree.stats = {"rollouts": len(kids), **counts, "generated_tokens": sum(len(k.token_ids) for k in kids),
                          "nodes": len(tree.nodes), "waves": waves}
        run.append(list(trees.values()))
    finally:
        backend.close()
        run.close()
    solved = sum(t.stats["correct"] > 0 for t in trees.values())
    manifest = {"command": "best-of-n", "model": cfg.model.name, "backend": cfg.backend.name,
                "problems": {"source": cfg.problems.source, "total": len(problems), "solved_now": solved},
                "samples_per_problem": waves * (cfg.n or cfg.wave) if cfg.n is None else cfg.n,
                "generated_tokens": tokens, "token_budget": cfg.max_total_tokens, "status": "complete",
                "wall_s": round(time.perf_counter() - start, 2), "versions": package_versions(), "out": str(run.path)}
    run.write_manifest(manifest)
    return manifest


@dataclasses.dataclass
class CompareConfig:
    """`mcts-cot compare-bon RUN_DIR`: best-of-N at the MCTS run's generated tokens on the same problems, solve
    rates, and (unless `train_models` is false) a model trained on each one's data, evaluated greedy."""

    wave: int = option(2, "Best-of-N samples per problem per generate call.", ge=1)
    token_factor: float = option(1.0, "Best-of-N token budget = this × the MCTS run's generated tokens.", gt=0)
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
                script=None) -> dict:
    from mcts_cot.evaluate import EvalConfig
    from mcts_cot.export import ExportConfig
    from mcts_cot.run import summarize
    from mcts_cot.search import SearchConfig
    from trainers.config import TrainConfig

    console = console or Console(stderr=True)
    run_dir, out = Path(run_dir), Path(out)
    scfg = load_config(SearchConfig, run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    if scfg is None:
        raise UserError(f"{run_dir}: no config.yaml; is this a `mcts-cot search` run dir?")
    mcts = summarize(run_dir)
    if not mcts["trees"]:
        raise UserError(f"{run_dir}: no finished trees")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    start = time.perf_counter()
    backend = dataclasses.replace(scfg.backend, name=cfg.backend or scfg.backend.name)
    bon = BestOfNConfig(model=scfg.model, backend=backend, prompt=scfg.prompt, problems=scfg.problems, verify=scfg.verify,
                        max_total_tokens=round(cfg.token_factor * mcts["generated_tokens"]), wave=cfg.wave,
                        temperature=scfg.temperature, top_p=scfg.top_p, max_tokens=scfg.policy.max_path_tokens,
                        seed=cfg.seed, out=str(out / "bon-run"))
    runner = Runner(console, script)
    if _same_config(out / "bon-run", bon, "manifest.json"):
        console.print(f"best-of-n: done already in {out / 'bon-run'}")
    else:
        with runner._timed("best-of-n sampling"):
            sample_best_of_n(bon, console, script)
    bsum = summarize(out / "bon-run")
    ids = {t for t in _tree_ids(run_dir)}
    result: dict[str, Any] = {
        "run_dir": str(run_dir), "bon_dir": str(out / "bon-run"),
        "mcts": {"problems": mcts["trees"], "solved": mcts["solved"], "solve_rate": mcts["solve_rate"],
                 "generated_tokens": mcts["generated_tokens"], "correct_leaves": mcts["correct"]},
        "best_of_n": {"problems": bsum["trees"], "solved": bsum["solved"], "solve_rate": bsum["solve_rate"],
                      "generated_tokens": bsum["generated_tokens"], "correct_leaves": bsum["correct"],
                      "samples_per_problem": bsum["rollouts"] / max(1, bsum["trees"])},
        "same_problems": ids == set(_tree_ids(out / "bon-run")),
    }
    result["solve_ratio"] = result["mcts"]["solved"] / max(1, result["best_of_n"]["solved"])
    if cfg.train_models:
        model = scfg.model.name
        for name, src in (("mcts", run_dir), ("best_of_n", out / "bon-run")):
            ecfg = stage_config(ExportConfig, cfg.export, seed=cfg.seed)
            report = runner.export(f"{name}: export", ecfg, [src], out / f"data-{name}")
            tcfg = stage_config(TrainConfig, cfg.train, **{"model.name": model, "data": str(out / f"data-{name}"), "seed": cfg.seed})
            runner.train(f"{name}: train", tcfg, out / f"model-{name}")
            ev = stage_config(EvalConfig, cfg.eval, **{"model.name": str(out / f"model-{name}"), "backend.name": backend.name,
                                                       "backend.seed": cfg.seed, **_problems(cfg.test_problems, "test")})
            summary = runner.eval(f"{name}: eval", ev, out / f"eval-{name}")
            result[name].update({"pairs": report["rows"]["pairs"], "sft_rows": report["rows"]["sft"],
                                 "trained_accuracy": summary["accuracy"], "trained_no_answer": summary["no_answer_rate"],
                                 "trained_problems": summary["problem_count"],
                                 "eval_dir": str(out / f"eval-{name}")})
    result["stage_seconds"] = runner.times
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    _write_results(out, result, compare_table(result), console)
    return result


def _tree_ids(run_dir: Path) -> list[str]:
    from mcts_cot.store import iter_trees

    return [str(t.problem["id"]) for t in iter_trees(run_dir)]


def compare_table(result: dict) -> Table:
    from mcts_cot.evaluate import INTERVAL_NOTE, with_interval

    table = Table(title="MCTS vs best-of-N at equal generated tokens")
    cols = ["method", "generated tokens", "solved", "solve rate", "correct leaves"]
    trained = "trained_accuracy" in result["mcts"]
    if trained:
        cols += ["pairs", "trained accuracy (no answer)"]
    for c in cols:
        table.add_column(c, justify="left" if c == "method" else "right")
    for name, label in (("mcts", "MCTS"), ("best_of_n", f"best-of-N (N≈{result['best_of_n']['samples_per_problem']:.0f})")):
        r = result[name]
        cells = [label, str(r["generated_tokens"]), f"{r['solved']}/{r['problems']}", f"{r['solve_rate']:.1%}", str(r["correct_leaves"])]
        if trained:
            cells += [str(r["pairs"]), f"{with_interval(r['trained_accuracy'], r['trained_problems'])} ({r['trained_no_answer']:.1%})"]
        table.add_row(*cells)
    table.caption = f"MCTS / best-of-N solved: {result['solve_ratio']:.2f}×" + (f"; {INTERVAL_NOTE}" if trained else "")
    return table


# --------------------------------------------------------------------------------------------- helpers for the CLI


def print_loop_end(results: dict, root: Path, console: Console) -> None:
    Console().print(where_table(results, root))


ProgressFn = Callable[[str], None]
