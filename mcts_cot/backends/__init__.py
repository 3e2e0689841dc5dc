"""Generation engines behind one interface (`Backend`), chosen by `backend.name`.

Imports are lazy: the scripted and hf backends must not import vLLM (slow to import, absent on some
machines), and nothing here imports torch until a backend is built.
"""

from __future__ import annotations

from mcts_cot.backends.base import Backend, BackendStats, Completion, Request
from mcts_cot.config import BackendConfig, ModelConfig

__all__ = ["Backend", "BackendStats", "Completion", "Request", "derive_seed", "make_backend"]


def make_backend(model: ModelConfig, backend: BackendConfig, script=None) -> Backend:
    """Build the backend named by `backend.name` for `model`. `script` is for the scripted backend only."""
    if backend.name == "scripted":
        from mcts_cot.backends.scripted import ScriptedBackend, default_script
        from mcts_cot.models import load_tokenizer

        return ScriptedBackend(load_tokenizer(model.name), script or default_script)
    if backend.name == "hf":
        from mcts_cot.backends.hf_backend import HFBackend

        return HFBackend(model, backend)
    from mcts_cot.backends.vllm_backend import VLLMBackend

    return VLLMBackend(model, backend)


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (backend seed, call number, request index), stable across runs."""
    import hashlib

    return int.from_bytes(hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()[:4], "big") >> 1
