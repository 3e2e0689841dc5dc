"""What `compare-bon` prints and draws: the yield table at equal tokens, the yield-against-tokens plot, and the
paired differences of the models trained on each arm's data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcts_cot.evaluate import correct_by_id
from mcts_cot.tables import Grid
from mcts_cot.yields import bootstrap

LABELS = {"mcts": "MCTS", "fork": "fork", "best_of_n_allocated": "best-of-N, allocated", "best_of_n": "best-of-N"}
TREE_ARMS = ("mcts", "fork")  # compare-bon's tree arms: each is compared with each best-of-N arm


def _x(ratio: tuple[float, float, float]) -> str:
    """A ratio with its interval; ∞ where best-of-N found nothing, n/a where neither did."""
    def f(v: float) -> str:
        return "∞" if v == float("inf") else ("n/a" if v != v else f"{v:.2f}")
    return f"{f(ratio[0])}× [{f(ratio[1])}–{f(ratio[2])}]"


def _ci(value: float, ci: tuple[float, float], fmt: str = "{:.0f}") -> str:
    return f"{fmt.format(value)} [{fmt.format(ci[0])}–{fmt.format(ci[1])}]"


def compare_table(result: dict[str, Any], cap: int) -> Grid:
    """One row per set, budget and arm, a best-of-N row with each tree arm's yield ratio to it; the caption holds
    the tree arms' ratios to plain best-of-N at the largest budget of each set."""
    table = Grid(f"Tree search vs best-of-N at equal generated tokens: yield = Σ min(distinct correct, {cap})",
                 ["set", "budget", "arm", "tokens", "yield [95% CI]", "solved", "pairs", "tree arm / arm"], left=3)
    notes = []
    for name, data in result["sets"].items():
        for j, row in enumerate(data["budgets"], start=1):
            for arm, m in ((a, row[a]) for a in LABELS if a in row):
                ratios = [(t, row[f"{t}_over_{arm}"]) for t in TREE_ARMS if f"{t}_over_{arm}" in row]
                table.add_row(name, f"{j}/{len(data['budgets'])}", LABELS[arm], m["tokens"], _ci(m["yield"], m["yield_ci"]),
                              f"{m['solved']}/{data['problems']}", m["pairs"],
                              "; ".join(f"{LABELS[t]} {_x(r)}" if len(ratios) > 1 else _x(r) for t, r in ratios))
        last = data["budgets"][-1]
        notes += [f"{name}: {LABELS[t]} / best-of-N distinct correct paths {_x(last[f'{t}_over_best_of_n'])}"
                  for t in TREE_ARMS if f"{t}_over_best_of_n" in last]
    table.caption = "; ".join(notes) + ("; " if notes else "") + "95% bootstrap intervals over problems (ratios paired)"
    return table


def plot_yields(result: dict[str, Any], path: Path) -> None:
    """Yield against generated tokens, one panel per set: allocator arms at every checkpoint, plain best-of-N
    at the read-off budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = result["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for ax, (name, data) in zip(axes[0], sets.items(), strict=True):
        for arm, curve in data["curves"].items():
            ax.plot([c[0] for c in curve], [c[1] for c in curve], label=LABELS[arm])
        if any("best_of_n" in row for row in data["budgets"]):
            pts = [(row["best_of_n"]["tokens"], row["best_of_n"]["yield"]) for row in data["budgets"]]
            ax.plot(*zip(*pts, strict=True), "o--", label=LABELS["best_of_n"])
        ax.set(title=name, xlabel="generated tokens", ylabel="yield")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def paired_training(result: dict[str, Any]) -> Grid:
    """Greedy accuracy of every trained model against base, and pooled tree arm − best-of-N: per problem, the mean
    over seed pairs of (tree-arm model right) − (best-of-N model right), bootstrapped over problems."""
    evals = result["training"]["evals"]
    right = {name: correct_by_id(Path(d) / "samples.jsonl") for name, d in evals.items()}
    ids = sorted(right["base"])
    table = Grid("Trained on each arm's data: greedy accuracy on test problems of the train set's difficulty",
                 ["model", "accuracy", "− base [95% CI]"])
    for name, r in right.items():
        diff = [float(r[i]) - float(right["base"][i]) for i in ids]
        table.add_row(name, f"{sum(r[i] for i in ids) / len(ids):.1%}",
                      "" if name == "base" else _ci(100 * _mean(diff), tuple(100 * x for x in bootstrap(diff, _mean)), "{:+.1f}"))
    bon = [k for k in right if k.startswith("best_of_n/")]
    notes = []
    for tree in TREE_ARMS:
        mine = [k for k in right if k.startswith(f"{tree}/")]
        if mine and bon:
            pooled = [_mean([float(right[m][i]) for m in mine]) - _mean([float(right[b][i]) for b in bon]) for i in ids]
            lo, hi = bootstrap(pooled, _mean)
            notes.append(f"{LABELS[tree]} − best-of-N, pooled over seeds: {100 * _mean(pooled):+.1f} points "
                         f"[{100 * lo:+.1f}, {100 * hi:+.1f}] on {len(ids)} problems")
    table.caption = "; ".join(notes)
    return table


def _mean(values: list[float]) -> float:
    return sum(values) / max(1, len(values))
