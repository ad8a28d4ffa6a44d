"""One rule for the model's context, in training and evaluation: the config's positions (its text part), capped by a
real tokenizer limit; the tokenizer's "no limit" sentinel is ignored."""

from __future__ import annotations

import pytest
from tiny import make_tiny_tokenizer
from transformers import AutoConfig

from paft_rl.eval.models import context_length, resolve_model
from prompt_pool import UserError

NO_LIMIT = int(1e30)  # what transformers reports for a tokenizer whose files set no model_max_length


def model_folder(tmp_path, model_type, **config):
    folder = tmp_path / model_type
    AutoConfig.for_model(model_type, **config).save_pretrained(folder)
    return resolve_model(str(folder))


def tokenizer_with(model_max_length):
    tokenizer = make_tiny_tokenizer()
    tokenizer.model_max_length = model_max_length
    return tokenizer


@pytest.mark.parametrize("model_type, config, tokenizer_limit, expected", [
    ("llama", {"max_position_embeddings": 300}, NO_LIMIT, 300),  # the sentinel says nothing
    ("gpt2", {"n_positions": 200}, NO_LIMIT, 200),  # GPT-2 names its positions n_positions
    ("llama", {"max_position_embeddings": 300}, 128, 128),  # a real tokenizer limit below the config's wins
    ("gpt2", {"n_positions": 200}, 4096, 200),  # ... and one above it does not
    ("llava", {"text_config": {"model_type": "llama", "max_position_embeddings": 777}}, NO_LIMIT, 777),  # nested
])
def test_context_is_the_smaller_of_config_positions_and_a_real_tokenizer_limit(
        tmp_path, model_type, config, tokenizer_limit, expected):
    assert context_length(model_folder(tmp_path, model_type, **config), tokenizer_with(tokenizer_limit)) == expected


def test_a_limit_from_the_tokenizer_alone_and_none_when_nothing_says(tmp_path):
    source = model_folder(tmp_path, "mamba")  # a recurrent model: its config declares no positions
    assert context_length(source, tokenizer_with(2048)) == 2048
    assert context_length(source, tokenizer_with(NO_LIMIT)) is None


def test_unreadable_config_is_one_line_naming_the_model(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "no_such_architecture"}')
    with pytest.raises(UserError, match="cannot load the config of model") as error:
        context_length(resolve_model(str(folder)), tokenizer_with(NO_LIMIT))
    assert "\n" not in str(error.value)
