"""`mcts-cot export-pairs`: run dirs of search trees → a data dir of SFT paths and preference pairs.

Trees of one or more run dirs are read once per problem id (the first dir wins), sorted by id, and split into
train and validation by a seeded hash of the id, so no problem is on both sides and the same inputs give
byte-identical files. Rows are TRL-loadable JSONL (`prompt` / `completion`, `prompt` / `chosen` / `rejected`)
with token ids and metadata as extra columns; `report.json` says what each rule kept and dropped and why.
The same rows go to parquet files with a dataset card (hub.py), so `load_dataset(DATA_DIR, "pairs")` works.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from mcts_cot.config import PromptConfig, option, save_config, section, to_dict
from mcts_cot.errors import UserError
from mcts_cot.hub import write_dataset
from mcts_cot.io import claim_out_dir, write_atomic, write_json
from mcts_cot.pairs import (
    CheckpointPairs,
    DtoPairs,
    LengthPairs,
    PathPairs,
    SftPaths,
    StepPairs,
    facts,
    pair_rows,
    sft_rows,
)
from mcts_cot.prompts import messages
from mcts_cot.rows import LIMIT_ENDS
from mcts_cot.store import iter_trees, run_model, tree_files
from mcts_cot.tree import STOPPED, Tree

Strategy = Literal["path", "step", "length", "checkpoint", "dto"]


@dataclass
class ExportConfig:
    """`mcts-cot export-pairs`: which SFT paths and preference pairs to cut from verified search trees."""

    strategies: list[Strategy] = option(["path"], "Pair strategies, run in this order (a pair made by an earlier one is not repeated): path, step, length; checkpoint and dto for runs of `mcts-cot checkpoints`.")
    sft: SftPaths = section(SftPaths, "SFT paths (Thoughts Length Balance).")
    path: PathPairs = section(PathPairs, "path strategy: correct path vs wrong path with the shortest shared prefix.")
    step: StepPairs = section(StepPairs, "step strategy: best vs worst sibling by Q.")
    length: LengthPairs = section(LengthPairs, "length strategy: short vs long correct path.")
    checkpoint: CheckpointPairs = section(CheckpointPairs, "checkpoint strategy: right-to-wrong and wrong-to-right continuations of a checkpoint run.")
    dto: DtoPairs = section(DtoPairs, "dto strategy: shortest kept truncation vs longest original trajectory.")
    rejected_verdicts: list[Literal["wrong", "no_answer"]] = option(["wrong", "no_answer"], "Verdicts of terminals that may be rejected. Unverifiable ends are never used on either side.")
    limit_cut_rejected: bool = option(True, "Whether a path cut by a length or depth limit (it ended at length, max_depth or max_tokens, still writing) may be a rejected side. Such a side gets no end-of-turn token; its pair says rejected_end and report.json counts them.")
    max_pairs_per_problem: int | None = option(None, "Most pairs per problem over all strategies (null = no cap).", ge=0)
    val_fraction: float = option(0.1, "Share of problems (not rows) in the validation split.", ge=0, lt=1)
    seed: int = option(0, "Seed of the train / validation split.", ge=0)
    nodes: bool = option(False, "Also write the trees as the dataset config `nodes`, one row per node (nodes.parquet, nodes_val.parquet).")
    license: str = option("unknown", "The dataset card's license field (a Hub license id: apache-2.0, cc-by-4.0, ...); choose what the problems' and the model's licenses allow.")


@dataclass
class Source:
    """One input run dir and the model that grew its trees."""

    run_dir: str
    model: str
    tokenizer: str
    prompt: PromptConfig = field(default_factory=PromptConfig, repr=False)  # how the search rendered its prompts
    trees: int = 0
    duplicates: int = 0  # problems already read from an earlier dir
    unfinished: int = 0  # trees a global limit stopped (skipped: a resumed search grows them again)


@dataclass
class Export:
    """Everything `export-pairs` produces, in memory (a dry run stops here)."""

    sft: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    report: dict[str, Any]
    sources: list[Source]
    seconds: float = 0.0
    all_sft_lengths: list[int] = field(default_factory=list)
    prompts: dict[str, tuple[list, str]] = field(default_factory=dict)  # problem id → chat messages, rendered text
    nodes: list[dict[str, Any]] | None = None  # one row per tree node, when cfg.nodes


# --------------------------------------------------------------------------------------------- inputs


def _source(run_dir: Path) -> Source:
    import yaml

    model = run_model(run_dir)
    prompt = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("prompt") or {}
    return Source(str(run_dir), model, model, PromptConfig(**prompt))


def load_trees(run_dirs: list[Path]) -> tuple[list[tuple[Tree, Source]], list[Source]]:
    """Every problem's finished tree once (the first run dir that has it wins), sorted by problem id, and the
    sources. Trees a global limit stopped are unfinished: skipped and counted."""
    out: dict[str, tuple[Tree, Source]] = {}
    sources = []
    for run_dir in map(Path, run_dirs):
        if not tree_files(run_dir):
            raise UserError(f"{run_dir}: no trees*.jsonl; run `mcts-cot search --out {run_dir}` first")
        src = _source(run_dir)
        sources.append(src)
        for tree in iter_trees(run_dir):
            if tree.status == STOPPED:
                src.unfinished += 1
                continue
            src.trees += 1
            pid = str(tree.problem["id"])
            if pid in out:
                src.duplicates += 1
            else:
                out[pid] = (tree, src)
        if not src.trees:
            raise UserError(f"{run_dir}: its trees*.jsonl files hold no finished tree ({src.unfinished} stopped by a "
                            "global limit; run the same search again to finish them)")
    return [out[pid] for pid in sorted(out)], sources


def validation_ids(problem_ids: list[str], fraction: float, seed: int) -> set[str]:
    """The round(fraction · n) ids with the smallest seeded hash: exact in size, and a problem's side does
    not depend on the order of the inputs."""
    ranked = sorted(problem_ids, key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest())
    return set(ranked[:round(fraction * len(ranked))])


# --------------------------------------------------------------------------------------------- export


def build(cfg: ExportConfig, run_dirs: list[Path],
          progress: Callable[[int, int], None] | None = None) -> Export:
    """Cut SFT rows and pairs from every tree and count what each rule kept and dropped."""
    start = time.perf_counter()
    trees, sources = load_trees(run_dirs)
    val = validation_ids([str(t.problem["id"]) for t, _ in trees], cfg.val_fraction, cfg.seed)
    sft, pairs, per_problem, all_lengths, limit_excluded = [], [], {}, [], 0
    sft_counts, pair_counts = Counter(), {name: Counter() for name in cfg.strategies}
    prompts, nodes = {}, [] if cfg.nodes else None
    for done, (tree, src) in enumerate(trees, start=1):
        pid = str(tree.problem["id"])
        meta = {"model": src.model, "tokenizer": src.tokenizer, "split": "validation" if pid in val else "train"}
        prompts[pid] = (messages(src.prompt, tree.problem["problem"]), tree.prompt_text)
        if nodes is not None:
            nodes += [{"problem_id": pid, **n.to_row(), "model": src.model, "split": meta["split"]} for n in tree.nodes]
        f = facts(tree, cfg.rejected_verdicts, cfg.limit_cut_rejected)
        limit_excluded += f.limit_cut_excluded
        rows, counts = sft_rows(f, cfg.sft)
        sft += [{**r, **meta} for r in rows]
        sft_counts += counts
        all_lengths += [len(tree.path_ids(n)) for n in f.correct]
        prows, pcounts = pair_rows(f, cfg.strategies, {n: getattr(cfg, n) for n in cfg.strategies},
                                   cfg.max_pairs_per_problem)
        pairs += [{**r, **meta} for r in prows]
        for name, c in pcounts.items():
            pair_counts[name] += c
        per_problem[pid] = {"split": meta["split"], "correct_paths": len(f.correct), "rejected_ends": len(f.rejected),
                            "sft": len(rows), "pairs": len(prows),
                            **{name: pcounts[name]["kept"] for name in cfg.strategies}}
        if progress:
            progress(done, len(trees))
    report = _report(cfg, sft, pairs, sft_counts, pair_counts, per_problem, all_lengths)
    report["pair_ends"] = _ends(cfg, pairs, limit_excluded)
    report["trees"] = {"finished": len(trees), "unfinished_skipped": sum(s.unfinished for s in sources)}
    return Export(sft, pairs, report, sources, time.perf_counter() - start, all_lengths, prompts, nodes)


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    return {"count": len(values), "min": min(values), "median": statistics.median(values),
            "mean": round(statistics.fmean(values), 2), "max": max(values)}


def _rule(counts: Counter) -> dict[str, Any]:
    dropped = {k: v for k, v in sorted(counts.items()) if k != "kept"}
    return {"candidates": sum(counts.values()), "kept": counts["kept"], "dropped": dropped}


def _ends(cfg: ExportConfig, pairs: list[dict], limit_excluded: int) -> dict[str, Any]:
    """How the pairs' sides end (rows.End), and what the limit-cut rule did: cut rejected sides kept in pairs,
    or cut ends left out of the rejected pool when `limit_cut_rejected` is off."""
    return {"chosen": dict(sorted(Counter(r["chosen_end"] for r in pairs).items())),
            "rejected": dict(sorted(Counter(r["rejected_end"] for r in pairs).items())),
            "rejected_cut_by_limit": sum(r["rejected_end"] in LIMIT_ENDS for r in pairs),
            "limit_cut_rejected": cfg.limit_cut_rejected, "limit_cut_ends_excluded": limit_excluded}


def _report(cfg: ExportConfig, sft: list[dict], pairs: list[dict], sft_counts: Counter,
            pair_counts: dict[str, Counter], per_problem: dict[str, dict], all_lengths: list[int]) -> dict[str, Any]:
    problems = list(per_problem.values())
    return {
        "problems": {"total": len(problems), "validation": sum(p["split"] == "validation" for p in problems),
                     "with_sft": sum(p["sft"] > 0 for p in problems),
                     "with_pairs": sum(p["pairs"] > 0 for p in problems)},
        "rows": {"sft": sum(r["split"] == "train" for r in sft), "sft_val": sum(r["split"] == "validation" for r in sft),
                 "pairs": sum(r["split"] == "train" for r in pairs),
                 "pairs_val": sum(r["split"] == "validation" for r in pairs)},
        "sft": {**_rule(sft_counts), "lengths_before": _stats(all_lengths),
                "lengths_after": _stats([r["num_tokens"] for r in sft])},
        "pairs": {name: _rule(pair_counts[name]) for name in cfg.strategies},
        "pair_lengths": {"prefix": _stats([len(r["prefix_ids"]) for r in pairs]),
                         "prefix_nonempty": _stats([len(r["prefix_ids"]) for r in pairs if r["prefix_ids"]]),
                         "chosen": _stats([len(r["chosen_ids"]) for r in pairs]),
                         "rejected": _stats([len(r["rejected_ids"]) for r in pairs])},
        "per_problem_counts": {"sft": _stats([p["sft"] for p in problems]),
                               "pairs": _stats([p["pairs"] for p in problems])},
        "per_problem": per_problem,
    }


# --------------------------------------------------------------------------------------------- outputs


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


OUTPUTS = ("sft.jsonl", "sft_val.jsonl", "pairs.jsonl", "pairs_val.jsonl", "report.json", "manifest.json", "README.md")


def write(result: Export, cfg: ExportConfig, out: Path, overwrite: bool = False) -> None:
    """The data dir: train / validation JSONL, the same as parquet with a dataset card, report, length
    histograms, config and manifest. An earlier export's data dir is refused unless `overwrite`."""
    out = Path(out)
    claim_out_dir(out, OUTPUTS, overwrite, "export-pairs")
    for name, rows, split in [("sft.jsonl", result.sft, "train"), ("sft_val.jsonl", result.sft, "validation"),
                              ("pairs.jsonl", result.pairs, "train"), ("pairs_val.jsonl", result.pairs, "validation")]:
        write_atomic(out / name, _jsonl([r for r in rows if r["split"] == split]))
    write_json(out / "report.json", result.report)
    counts = write_dataset(result, cfg, out)
    plot_lengths(result, out / "lengths.png")
    save_config(cfg, out)
    write_json(out / "manifest.json", {
        "command": "export-pairs", "inputs": [vars(s) for s in result.sources], "rows": result.report["rows"],
        "problems": result.report["problems"], "dataset": counts, "seconds": round(result.seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": to_dict(cfg),
    })


def plot_lengths(result: Export, path: Path) -> None:
    """Histograms of SFT path lengths (all correct vs kept) and of chosen / rejected suffix lengths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.hist([result.all_sft_lengths, [r["num_tokens"] for r in result.sft]], bins=30,
              label=["all correct paths", "kept for SFT"])
    left.set(title="SFT paths", xlabel="tokens", ylabel="count")
    right.hist([[len(r["chosen_ids"]) for r in result.pairs], [len(r["rejected_ids"]) for r in result.pairs]],
               bins=30, label=["chosen suffix", "rejected suffix"])
    right.set(title="Pair suffixes (after the shared prefix)", xlabel="tokens", ylabel="count")
    for ax in (left, right):
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def summary_table(result: Export):
    """A rich table of what each rule kept and dropped, with rows per problem and the time taken in its caption."""
    from rich.table import Table

    report = result.report
    table = Table(title="export-pairs")
    for col in ("rule", "candidates", "kept", "dropped"):
        table.add_column(col, justify="left" if col in ("rule", "dropped") else "right")
    rules = {"sft": report["sft"], **{f"pairs: {k}": v for k, v in report["pairs"].items()}}
    for name, rule in rules.items():
        dropped = ", ".join(f"{k} {v}" for k, v in rule["dropped"].items()) or "-"
        table.add_row(name, str(rule["candidates"]), str(rule["kept"]), dropped)
    per = report["per_problem_counts"]
    table.caption_justify = "left"
    table.caption = (
        f"{report['problems']['total']} problems ({report['problems']['validation']} validation), "
        f"{len(result.sft)} SFT rows, {len(result.pairs)} pairs in {result.seconds:.2f} s; per problem: "
        f"SFT {_spread(per['sft'])}, pairs {_spread(per['pairs'])}; "
        f"problems without pairs: {report['problems']['total'] - report['problems']['with_pairs']}")
    return table


def _spread(stats: dict[str, float]) -> str:
    if not stats["count"]:
        return "-"
    return f"min {stats['min']} / median {stats['median']} / mean {stats['mean']} / max {stats['max']}"
