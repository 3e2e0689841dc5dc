"""Engine cost against another commit, in one run: `bench_engine.py` of this tree and of a git worktree of the
other commit, run alternately in fresh processes (each imports its own tree's package), `--rounds` times each.

Figure of merit: expansions per second of engine cost by process CPU time (robust to other jobs on a shared
machine), median over the rounds; the ratio this tree / the other commit is printed last.

    git worktree add /tmp/wt15-base <commit>
    python bench/bench_engine_vs_commit.py --base /tmp/wt15-base
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, write_result  # noqa: E402


def one(tree: Path, args, schedule: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, str(tree / "bench" / "bench_engine.py"), "--no-real-verifier", "--problems",
               str(args.problems), "--out", str(out)] + (["--schedule", schedule] if schedule else [])
        subprocess.run(cmd, cwd=tree, check=True, capture_output=True)
        return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="a worktree of the commit to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--problems", type=int, default=1024)
    args = p.parse_args()
    base = Path(args.base)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=base, capture_output=True, text=True).stdout.strip()
    arms = {"base": (base, None), "continuous": (ROOT, "continuous"), "waves": (ROOT, "waves")}
    rates: dict[str, list[float]] = {k: [] for k in arms}
    walls: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(args.rounds):
        for name, (tree, schedule) in arms.items():
            r = one(tree, args, schedule)
            rates[name].append(r["expansions_per_cpu_s"])
            walls[name].append(r["expansions_per_s"])
            print(f"{name:10s} {r['expansions_per_cpu_s']:9,.0f} expansions/CPU-s  {r['expansions_per_s']:9,.0f} /wall-s",
                  flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    figures = {"base_commit": commit, "problems": args.problems, "rounds": args.rounds,
               "expansions_per_cpu_s": rates, "expansions_per_wall_s": walls, "median_per_cpu_s": med,
               "ratio_continuous": med["continuous"] / med["base"], "ratio_waves": med["waves"] / med["base"]}
    path = write_result("bench_engine_vs_commit", figures)
    print(f"results: {path}")
    print(f"ratio: engine expansions/CPU-s vs {commit[:7]}: continuous {figures['ratio_continuous']:.2f}x, "
          f"waves {figures['ratio_waves']:.2f}x (medians {med['base']:,.0f} -> {med['continuous']:,.0f} / {med['waves']:,.0f})")


if __name__ == "__main__":
    main()
