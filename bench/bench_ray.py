"""Search on 1, 2 and 4 Ray engine actors against each other, on the same problems, with a GPU-like cost model.

No GPU here, so every actor's engine is the scripted backend behind a latency model of a GPU decoding under
continuous batching: one engine step (`poll`) sleeps `--step-ms` whatever the batch holds (decode is
memory-bound: a step costs about the same for 1 or 64 sequences) and emits one token per running sequence,
so a request is answered after as many steps as its longest completion has tokens. The trees are the
scripted ones, so the three runs grow identical trees (checked) and only the placement differs.

Prints the search wall time per actor count (engines started before the clock), the speed-ups over one actor
(aims: >= 1.8x at 2, >= 3.5x at 4) and the driver's CPU milliseconds per finished tree. Timed: run it under
the shared lock.

    flock /tmp/mcts-heavy.lock .venv/bin/python bench/bench_ray.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mcts_cot.backends.scripted import ScriptedBackend, default_script  # noqa: E402


class GpuCostModel(ScriptedBackend):
    """Scripted text, answered on a GPU decoder's schedule: `step_s` per engine step, one token per step."""

    def __init__(self, tokenizer, step_s: float):
        super().__init__(tokenizer, default_script)
        self.step_s, self.steps, self.due = step_s, 0, {}

    def poll(self):
        time.sleep(self.step_s)
        self.steps += 1
        ready = []
        for rid, completions in super().poll():  # requests submitted since the last step start decoding now
            self.due[rid] = (self.steps + max(len(c.token_ids) for c in completions), completions)
        for rid, (step, completions) in list(self.due.items()):
            if step <= self.steps:
                ready.append((rid, completions))
                del self.due[rid]
        return ready

    def cancel(self, ids) -> None:
        super().cancel(ids)
        for rid in ids:
            self.due.pop(rid, None)


class Factory:
    def __init__(self, step_s: float):
        self.step_s = step_s

    def __call__(self, model, backend):
        from mcts_cot.models import load_tokenizer

        return GpuCostModel(load_tokenizer(model.name), self.step_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--concurrent-trees", type=int, default=8)
    ap.add_argument("--step-ms", type=float, default=10.0, help="one decode step of the modelled GPU")
    ap.add_argument("--actors", default="1,2,4")
    ap.add_argument("--out", help="results JSON (default bench/results/ray.json)")
    args = ap.parse_args()

    import ray

    from mcts_cot.config import load_config
    from mcts_cot.run import run_search
    from mcts_cot.search import SearchConfig
    from mcts_cot.store import iter_trees
    from mcts_cot.tiny import save_tiny_model

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    counts = [int(x) for x in args.actors.split(",")]
    ray.init(address="local", num_cpus=max(counts), include_dashboard=False, log_to_driver=False)
    rows, trees = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_model(Path(tmp) / "model")
        for n in counts:
            cfg = load_config(SearchConfig, None, [
                f"out={tmp}/run-{n}", f"model.name={model}", "backend.name=scripted", "verify.workers=1",
                f"problems.source=builtin:arithmetic:{args.problems}", "prompt.system=''", "prompt.few_shot=[]",
                "policy.children=4", "budget.max_rollouts=16", "budget.success_correct=4",
                f"concurrent_trees={args.concurrent_trees}", "ray.address=local", f"ray.actors={n}",
                "ray.cpus_per_actor=1"])
            manifest = run_search(cfg, backends=Factory(args.step_ms / 1000))
            trees[n] = {t.problem["id"]: [x.text for x in t.nodes] for t in iter_trees(cfg.out)}
            rows.append({"actors": n, "wall_s": manifest["wall_s"], "trees": manifest["problems"]["finished_now"],
                         "driver_cpu_ms_per_tree": manifest["ray"]["driver_cpu_ms_per_tree"],
                         "trees_per_actor": manifest["ray"]["trees_per_actor"]})
            print(f"{n} actor(s): {manifest['wall_s']:.1f} s, driver {rows[-1]['driver_cpu_ms_per_tree']:.2f} CPU ms/tree, "
                  f"trees per actor {rows[-1]['trees_per_actor']}", flush=True)
    ray.shutdown()
    same = all(trees[n] == trees[counts[0]] for n in counts)
    base = rows[0]["wall_s"]
    for row in rows:
        row["speedup"] = round(base / row["wall_s"], 2)
    print(f"same trees on every actor count: {same}")
    print("speed-up over 1 actor: " + ", ".join(f"{r['actors']} actors {r['speedup']:.2f}x" for r in rows))
    write_result("ray", {"step_ms": args.step_ms, "problems": args.problems, "concurrent_trees": args.concurrent_trees,
                         "same_trees": same, "runs": rows}, args.out)


if __name__ == "__main__":
    main()
