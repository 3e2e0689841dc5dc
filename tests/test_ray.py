"""Search and eval on engine actors of a local Ray cluster (127.0.0.1) with scripted backends: the run dir
equals a single-process run's (each problem once), an actor killed mid-run loses and duplicates nothing, a
search resumes after its driver is killed, and an eval equals its single-process samples."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from mcts_cot.backends import scripted_factory
from mcts_cot.backends.scripted import ScriptedBackend, default_script
from mcts_cot.config import load_config
from mcts_cot.errors import UserError
from mcts_cot.evaluate import EvalConfig, run_eval
from mcts_cot.run import run_search
from mcts_cot.search import SearchConfig

ray = pytest.importorskip("ray", reason="Ray is part of the test install (pip install -e '.[cpu,dev]')")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors unpickle this module's backends


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module: 2 logical CPUs, actors take half a CPU each."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def search_config(tmp_path, model, name: str, *sets: str) -> SearchConfig:
    return load_config(SearchConfig, None, [
        f"out={tmp_path / name}", f"model.name={model}", "backend.name=scripted",
        "problems.source=builtin:arithmetic:8", "prompt.system=''", "prompt.few_shot=[]", "verify.workers=1",
        "policy.children=2", "budget.max_rollouts=6", "budget.success_correct=2", "concurrent_trees=2", *sets])


def on_ray(address: str, actors: int = 2, *sets: str) -> tuple[str, ...]:
    return (f"ray.address={address}", f"ray.actors={actors}", "ray.cpus_per_actor=0.5", *sets)


def lines(run_dir) -> list[dict]:
    return [orjson.loads(line) for line in (run_dir / "trees.jsonl").read_bytes().splitlines() if line]


@pytest.mark.parametrize("mode", [(), ("allocator.tokens_per_problem=120", "allocator.group=3")], ids=["trees", "groups"])
def test_a_ray_run_equals_a_single_process_run(tmp_path, tiny_model_dir, cluster, tree_records, mode):
    factory = scripted_factory()
    run_search(search_config(tmp_path, tiny_model_dir, "one", *mode), backends=factory)
    manifest = run_search(search_config(tmp_path, tiny_model_dir, "ray", *mode, *on_ray(cluster)), backends=factory)
    assert manifest["status"] == "complete" and manifest["problems"]["finished_now"] == 8
    assert tree_records(tmp_path / "ray") == tree_records(tmp_path / "one")
    assert len(lines(tmp_path / "ray")) == 8  # each problem once
    assert sum(manifest["ray"]["trees_per_actor"]) == 8 and min(manifest["ray"]["trees_per_actor"]) > 0
    assert manifest["generated_tokens"] > 0 and manifest["ray"]["driver_cpu_ms_per_tree"] > 0


def test_a_critic_model_on_its_own_actor_grows_the_single_process_trees(tmp_path, tiny_model_dir, cluster, tree_records):
    def config(name: str, *sets: str) -> SearchConfig:
        return load_config(SearchConfig, "configs/search/marco.yaml", [
            f"out={tmp_path / name}", f"model.name={tiny_model_dir}", f"critic_model={tiny_model_dir}",
            "backend.name=scripted", "problems.source=builtin:arithmetic:4", "verify.workers=1",
            "budget.max_rollouts=4", "concurrent_trees=2", *sets])

    run_search(config("one"), backends=scripted_factory())
    manifest = run_search(config("ray", *on_ray(cluster, 1)), backends=scripted_factory())
    assert manifest["status"] == "complete" and manifest["ray"]["trees_per_actor"] == [4]
    assert tree_records(tmp_path / "ray") == tree_records(tmp_path / "one")


class DyingBackend(ScriptedBackend):
    """Kills its actor's process at its `after`-th poll, in the first actor to claim `marker`."""

    def __init__(self, tokenizer, marker: str, after: int):
        super().__init__(tokenizer, default_script)
        self.marker, self.after, self.polls = marker, after, 0

    def poll(self):
        self.polls += 1
        if self.polls == self.after:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return super().poll()


class Dying:
    def __init__(self, marker: str, after: int):
        self.marker, self.after = marker, after

    def __call__(self, model, backend):
        from mcts_cot.models import load_tokenizer

        return DyingBackend(load_tokenizer(model.name), self.marker, self.after)


def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(tmp_path, tiny_model_dir, cluster, tree_records):
    run_search(search_config(tmp_path, tiny_model_dir, "one"), backends=scripted_factory())
    marker = tmp_path / "died"
    manifest = run_search(search_config(tmp_path, tiny_model_dir, "ray", *on_ray(cluster)),
                          backends=Dying(str(marker), after=6))
    assert marker.exists() and len(manifest["ray"]["deaths"]) == 1
    assert tree_records(tmp_path / "ray") == tree_records(tmp_path / "one")
    ids = [r["problem"]["id"] for r in lines(tmp_path / "ray")]
    assert len(ids) == len(set(ids)) == 8


DRIVER = """
import sys, time
from mcts_cot.backends.scripted import ScriptedBackend, default_script
from mcts_cot.config import load_config
from mcts_cot.run import run_search
from mcts_cot.search import SearchConfig

class Slow(ScriptedBackend):
    def poll(self):
        time.sleep(0.05)
        return super().poll()

def make(model, backend):
    from mcts_cot.models import load_tokenizer
    return Slow(load_tokenizer(model.name), default_script)

if __name__ == "__main__":
    import ray
    ray.init(address=sys.argv[1], log_to_driver=False)
    run_search(load_config(SearchConfig, None, sys.argv[2:]), backends=make)
"""


def test_a_search_resumes_after_its_driver_is_killed(tmp_path, tiny_model_dir, cluster, tree_records):
    run_search(search_config(tmp_path, tiny_model_dir, "one"), backends=scripted_factory())
    cfg = search_config(tmp_path, tiny_model_dir, "ray", *on_ray(cluster))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    sets = [f"out={cfg.out}", f"model.name={tiny_model_dir}", "backend.name=scripted", "problems.source=builtin:arithmetic:8",
            "prompt.system=''", "prompt.few_shot=[]", "verify.workers=1", "policy.children=2", "budget.max_rollouts=6",
            "budget.success_correct=2", "concurrent_trees=2", *on_ray(cluster)]
    driver = subprocess.Popen([sys.executable, str(script), cluster, *sets], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    trees = tmp_path / "ray" / "trees.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and driver.poll() is None and not (trees.exists() and len(trees.read_bytes().splitlines()) >= 2):
        time.sleep(0.1)
    assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    written = len(lines(tmp_path / "ray"))
    assert 2 <= written < 8
    manifest = run_search(cfg, backends=scripted_factory())
    assert manifest["problems"]["finished_before"] == written and manifest["problems"]["finished_now"] == 8 - written
    assert tree_records(tmp_path / "ray") == tree_records(tmp_path / "one")
    ids = [r["problem"]["id"] for r in lines(tmp_path / "ray")]
    assert len(ids) == len(set(ids)) == 8


def test_an_eval_on_actors_equals_a_single_process_eval(tmp_path, tiny_model_dir, cluster):
    def config(name: str, *sets: str) -> EvalConfig:
        return load_config(EvalConfig, None, [
            f"model.name={tiny_model_dir}", "backend.name=scripted", "problems.source=builtin:arithmetic:6",
            "prompt.system=''", "prompt.few_shot=[]", "verify.workers=1", "sampling.n=2", "chunk=4", *sets])

    one = run_eval(config("one"), tmp_path / "one", backends=scripted_factory())
    two = run_eval(config("ray", *on_ray(cluster)), tmp_path / "ray", backends=scripted_factory())
    rows = [[orjson.loads(x) for x in (tmp_path / d / "samples.jsonl").read_bytes().splitlines()] for d in ("one", "ray")]
    assert rows[0] == rows[1] and len(rows[0]) == 6
    assert {k: v for k, v in one.items() if "_s" not in k} == {k: v for k, v in two.items() if "_s" not in k}


def test_settings_a_ray_run_cannot_honour_are_one_line_errors(tmp_path, tiny_model_dir, cluster):
    with pytest.raises(UserError, match="budget.max_wall_s: not supported with --ray"):
        run_search(search_config(tmp_path, tiny_model_dir, "limit", "budget.max_wall_s=60", *on_ray(cluster)),
                   backends=scripted_factory())
    with pytest.raises(UserError, match="do not fit the cluster's 0 GPUs and 2 CPUs"):
        run_search(search_config(tmp_path, tiny_model_dir, "big", *on_ray(cluster, 8), "ray.cpus_per_actor=1"),
                   backends=scripted_factory())
    assert orjson.loads((tmp_path / "big" / "manifest.json").read_bytes())["status"] == "failed"


def test_a_bare_ray_flag_means_a_local_cluster():
    from cli import bare_ray

    assert bare_ray(["search", "--ray"]) == ["search", "--ray", "local"]
    assert bare_ray(["search", "--ray", "--out", "x"]) == ["search", "--ray", "local", "--out", "x"]
    assert bare_ray(["search", "--ray", "auto"]) == ["search", "--ray", "auto"]


def test_placement_follows_the_cluster_and_a_loop_stage_hands_its_factory_to_the_actors(cluster):
    from mcts_cot.config import BackendConfig, RayConfig
    from mcts_cot.loop.engines import EnginePool
    from mcts_cot.ray_pool import factory_for_actors, placement

    assert placement(RayConfig(address=cluster), BackendConfig(name="vllm", tensor_parallel_size=2)) == (
        1, {"num_gpus": 0.0, "num_cpus": 1.0})  # no GPUs here: one actor on CPUs
    with pytest.raises(UserError, match="1 actors × \\(1 GPUs"):
        placement(RayConfig(address=cluster, gpus_per_actor=1), BackendConfig(name="vllm"))
    closed = []
    make = scripted_factory()
    pool = EnginePool(make)
    pool.engines["k"] = type("Engine", (), {"close": lambda self: closed.append(True)})()
    assert factory_for_actors(pool) is make and closed == [True] and not pool.engines
