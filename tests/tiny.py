"""A tiny causal language model and tokenizer built in-process, for tests that need real TRL trainers.

Nothing comes from the hub: the tokenizer is a byte-level BPE trained in milliseconds on a small corpus
(so any text encodes, no unknown tokens), with a chat template and pad / eos tokens; the model is a
randomly initialised two-layer Llama (or Qwen2) of a few hundred thousand parameters, saved to a folder
that ``from_pretrained`` loads like any checkpoint.

Stable API (other test modules import it):

- ``make_tiny_tokenizer(tmp_path=None) -> PreTrainedTokenizerFast``
- ``make_tiny_model_dir(tmp_path, arch="llama") -> Path``
"""

from __future__ import annotations

import functools
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
VOCAB_SIZE = 384

# A minimal chat format: role tag, content, end-of-turn; the generation prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '</s>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

CORPUS = [
    "Question: Ava has 12 apples. Ava gets 5 more and then gives away 3. How many apples does Ava have now?",
    "Answer: 12 + 5 = 17, and 17 - 3 = 14. The answer is 14.",
    "Which of these numbers is the largest? A. 12 B. 47 C. 3 D. 28 Answer: 47",
    "Which word is an animal? dog cat horse rabbit tiger eagle whale frog chair window spoon",
    "Solve the problem step by step and put the final answer after ####. 0123456789 + - * / = $ #",
    "Pick the right option. Respond with the option text only. red blue green yellow apple banana car bus",
    '{"name": "get_weather", "arguments": {"city": "Paris"}} Let us think. The final answer is',
]


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    """Train the byte-level BPE once per process and keep its JSON (training is deterministic)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tokenizer.to_str()


def make_tiny_tokenizer(tmp_path: str | Path | None = None) -> PreTrainedTokenizerFast:
    """A fast tokenizer with a chat template, ``<pad>`` padding and ``</s>`` as eos.

    Args:
        tmp_path (`str` or `Path`, *optional*): when given, the tokenizer is also saved there.
    """
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"  # generation-friendly; trainers set what they need
    if tmp_path is not None:
        tokenizer.save_pretrained(str(tmp_path))
    return tokenizer


ARCHS = {
    "llama": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
    "qwen2": dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
    # vLLM's CPU attention needs a head size of 32, 64, 80, ...: two heads of 64.
    "llama-head64": dict(model_type="llama", hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512),
}


def make_tiny_model_dir(tmp_path: str | Path, arch: str = "llama") -> Path:
    """Build, initialise (seed 0) and save a tiny causal LM plus its tokenizer under ``tmp_path/tiny-<arch>``.

    Returns the folder, loadable with ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer``.
    Calling it twice with the same ``tmp_path`` reuses the saved folder.
    """
    import torch

    folder = Path(tmp_path) / f"tiny-{arch}"
    if (folder / "config.json").exists():
        return folder
    tokenizer = make_tiny_tokenizer()
    settings = dict(ARCHS[arch])
    model_type = settings.pop("model_type")
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        **settings,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
