"""`mcts-cot view` on big runs: HTML size and load time in headless Chromium.

Two scripted runs (the scripted backend's default script, byte tokenizer, exact-match verifier):
  A. 100 trees at the default budget (issue 21: "a 100-tree run opens in under a second");
  B. one tree grown past 2,000 nodes (issue 21: "a 2,000-node tree stays usable").
Each page is loaded `--loads` times (a fresh headless Chromium each time); a load's figure is the page's own
`performance.now()` when the first tree is drawn and laid out (navigation start = 0). Medians are printed,
with the redraw time of the big tree after clicking a node and after collapsing a subtree. Writes
bench/results/view.json.

    .venv/bin/python bench/bench_view.py
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402

from mcts_cot.backends.scripted import ScriptedBackend  # noqa: E402
from mcts_cot.config import load_config, save_config  # noqa: E402
from mcts_cot.io import write_json  # noqa: E402
from mcts_cot.problems import load_problems  # noqa: E402
from mcts_cot.search import Engine, SearchConfig, run_waves  # noqa: E402
from mcts_cot.store import RunDir, iter_trees  # noqa: E402
from mcts_cot.tiny import byte_tokenizer  # noqa: E402
from mcts_cot.view import write_view  # noqa: E402


class ExactVerifier:
    def verify_batch(self, items):
        return ["no_answer" if a is None else "correct" if a == g else "wrong" for g, a in items]


def scripted_run(out: Path, problems: int, *sets: str) -> Path:
    tok = byte_tokenizer()
    cfg = load_config(SearchConfig, None, ["backend.name=scripted", "model.name=byte",
                                           f"problems.source=builtin:arithmetic:{problems}", *sets], out=str(out))
    run = RunDir(out, "bench")
    save_config(cfg, out)
    run_waves(Engine(cfg, {"main": ScriptedBackend(tok)}, ExactVerifier(), tok), load_problems(cfg.problems)[0], run.append)
    return out


def load(page: Path, query: str = "") -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        sys.exit("bench_view: needs headless Chromium (apt-get install -y chromium)")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--dump-dom",
           f"{page.resolve().as_uri()}?{query}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def first_draw_ms(dom: str) -> float:
    return float(re.search(r'data-first-draw-ms="([\d.]+)"', dom).group(1))


def measure(name: str, page: Path, loads: int, extra: dict[str, str]) -> dict:
    first = [first_draw_ms(load(page)) for _ in range(loads)]
    out = {"html_bytes": page.stat().st_size, "first_draw_ms": first, "first_draw_ms_median": statistics.median(first)}
    for action, query in extra.items():
        times = [float(re.search(r'data-draw-ms="([\d.]+)"', load(page, query)).group(1)) for _ in range(loads)]
        out[f"{action}_redraw_ms_median"] = statistics.median(times)
    print(f"{name}: {out['html_bytes'] / 1e6:.2f} MB, first tree drawn at {out['first_draw_ms_median']:.0f} ms "
          f"(median of {loads}: {', '.join(f'{x:.0f}' for x in first)})"
          + "".join(f"; {a} redraw {out[f'{a}_redraw_ms_median']:.0f} ms" for a in extra), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-view-") as tmp:
        start = time.perf_counter()
        run_a = scripted_run(Path(tmp) / "a", args.trees)
        # One tree that never succeeds, so it keeps growing until max_rollouts (about 2.6 nodes per rollout here).
        run_b = scripted_run(Path(tmp) / "b", 1, "budget.success_correct=100000", "budget.success_correct_after_min=100000",
                             f"budget.max_rollouts={args.nodes * 2 // 5}", "policy.max_depth=12")
        (big,) = iter_trees(run_b)
        nodes_a = sum(len(t.nodes) for t in iter_trees(run_a))
        print(f"runs built in {time.perf_counter() - start:.0f} s: {args.trees} trees / {nodes_a} nodes; one tree of {len(big.nodes)} nodes")
        deep = max(big.nodes, key=lambda n: n.depth)
        inner = max(big.nodes[1:], key=lambda n: len(n.children) and n.N)
        result = {
            "run_100_trees": {"trees": args.trees, "nodes": nodes_a,
                              **measure(f"{args.trees}-tree run", write_view(run_a), args.loads, {})},
            "tree_2000_nodes": {"nodes": len(big.nodes),
                                **measure(f"{len(big.nodes)}-node tree", write_view(run_b), args.loads,
                                          {"click_node": f"node={deep.id}", "collapse": f"toggle={inner.id}"})},
        }
    result["target_ms"] = 1000
    result["machine"] = machine()
    result["command"] = "python bench/bench_view.py " + " ".join(sys.argv[1:])
    write_json(RESULTS / "view.json", result)
    ratio = result["run_100_trees"]["first_draw_ms_median"] / 1000
    print(f"100-tree run: first tree drawn at {ratio:.2f} of the 1 s target")


if __name__ == "__main__":
    main()
