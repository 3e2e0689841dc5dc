"""A byte-level tokenizer and tiny random Llama models built from a config, for tests, dry runs and benches.

Nothing is downloaded: the tokenizer is 256 byte tokens plus the chat special tokens, so `decode(encode(x))
== x` for any text and token boundaries are predictable; the model is a Llama of any size with random
weights (speed benchmarks use a ~1B one).
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def byte_tokenizer():
    """A `PreTrainedTokenizerFast` over raw bytes with a ChatML template (eos = <|im_end|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for tok in SPECIAL:
        vocab[tok] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=None, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", additional_special_tokens=SPECIAL[1:])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(tokenizer=None, hidden_size: int = 64, layers: int = 2, heads: int = 4, intermediate: int = 128,
               seed: int = 0, vocab_size: int | None = None, **config_kwargs):
    """A randomly initialised `LlamaForCausalLM` sized for `tokenizer` (float32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or byte_tokenizer()
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=intermediate,
        max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, tie_word_embeddings=True, **config_kwargs,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_tiny_model(path: str | Path, **kwargs) -> Path:
    """Build a tiny model + byte tokenizer and save both as a normal HF folder (loadable by path)."""
    path = Path(path)
    tok = byte_tokenizer()
    model = tiny_llama(tok, **kwargs)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
