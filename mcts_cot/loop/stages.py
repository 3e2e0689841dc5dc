"""Stages of a workflow: each is the library function behind one CLI command, configured by that command's
own YAML plus dotted overrides, run into the directory that command would write, and skipped when that dir
already holds its output from the same config (so a workflow run twice resumes instead of redoing work).
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import yaml
from rich.console import Console

from mcts_cot.config import load_config, option, set_value, to_dict
from mcts_cot.loop.engines import EnginePool


@dataclasses.dataclass
class Stage:
    """One stage: the YAML of its own command, then dotted overrides of that command's config."""

    config: str | None = option(None, "YAML of the stage's command (e.g. configs/search/plain.yaml); null = that command's defaults.")
    set: dict = option({}, "Dotted overrides applied after `config`, e.g. {budget.max_rollouts: 16}.")


STAGES = ("search", "export", "train", "eval", "sampled_eval")


def load_loop_config(path: str | Path | None, overrides: list[str] | None = None, cls=None, **flags) -> Any:
    """Like `load_config`, and `--set STAGE.KEY=V` (KEY not `config` / `set`) goes into that stage's `set`."""
    from mcts_cot.config import _parse_scalar

    if cls is None:
        from mcts_cot.loop.rounds import LoopConfig as cls
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


TIME_KEYS = ("max_wall_s",)  # a time box's limits: a finished stage made under another one is still the same stage
PLACEMENT_KEYS = ("ray",)  # where a stage ran (one process or Ray actors) does not change its output


def same_config(out: Path, cfg: Any, marker: str) -> bool:
    """True when `out` holds a finished stage (its `marker` file) made by this config (time limits aside)."""
    if not (out / marker).is_file() or not (out / "config.yaml").is_file():
        return False
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text())
    except yaml.YAMLError:
        return False
    ours = yaml.safe_load(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    ignored = TIME_KEYS + PLACEMENT_KEYS
    return {k: v for k, v in saved.items() if k not in ignored} == {k: v for k, v in ours.items() if k not in ignored}


class Runner:
    """Runs stages into dirs, skipping a stage whose dir already holds its output from the same config, and
    records the wall time of each stage. Every engine comes from `engines`, which shares one per model
    between stages and is emptied before training."""

    def __init__(self, console: Console, engines: EnginePool):
        self.console, self.engines = console, engines
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
            old = read_json(manifest)
            if old.get("config_hash") == search_hash(cfg) and old.get("status") == "complete":
                self.console.print(f"{name}: done already in {out}")
                return summarize(out)
        with self._timed(name):
            overwrite = manifest.is_file() and read_json(manifest).get("config_hash") != search_hash(cfg)
            run_search(cfg, overwrite=overwrite, console=self.console, backends=self.engines)
        return summarize(out)

    def export(self, name: str, cfg, run_dirs: list[Path], out: Path) -> dict:
        from mcts_cot.export import build, write

        if same_config(out, cfg, "manifest.json") and read_json(out / "manifest.json")["inputs"][0]["run_dir"] == str(run_dirs[0]):
            self.console.print(f"{name}: done already in {out}")
            return read_json(out / "report.json")
        with self._timed(name):
            result = build(cfg, run_dirs)
            write(result, cfg, out, overwrite=True)  # the loop owns the dir; same config returned above
        rows = result.report["rows"]
        self.console.print(f"{name}: {rows['sft']} SFT rows, {rows['pairs']} pairs (+{rows['pairs_val']} validation) in {out}")
        return result.report

    def train(self, name: str, cfg, out: Path) -> dict:
        from trainers.trainer import run

        if same_config(out, cfg, "metrics.json"):
            self.console.print(f"{name}: done already in {out}")
            return read_json(out / "metrics.json")
        self.engines.release()  # free the engines' memory and cores for training
        with self._timed(name):
            result = run(cfg, out, overwrite=True)  # the loop owns the dir; same config returned above
        m = result.metrics
        self.console.print(f"{name}: {m['objective']}, {m['global_step']} steps in {m['wall_seconds']:.0f} s; model in {out}")
        return m

    def eval(self, name: str, cfg, out: Path) -> dict:
        from mcts_cot.evaluate import run_eval, with_interval

        cfg.out = str(out)
        if same_config(out, cfg, "summary.json"):
            self.console.print(f"{name}: done already in {out}")
            return read_json(out / "summary.json")
        with self._timed(name):
            summary = run_eval(cfg, out, console=self.console, overwrite=True, backends=self.engines)
        self.console.print(f"{name}: accuracy {with_interval(summary['accuracy'], summary['problem_count'])}, "
                           f"no answer {summary['no_answer_rate']:.1%} ({out})")
        return summary


def read_json(path: Path) -> Any:
    return orjson.loads(Path(path).read_bytes())


def builtin_problems(n: int, split: str, seed: int = 0) -> dict[str, Any]:
    return {"problems.source": f"builtin:arithmetic:{n}", "problems.split": split, "problems.seed": seed,
            "problems.limit": None}


def scaled(n: int, scale: float) -> int:
    return max(1, round(n * scale)) if n > 0 else 0
