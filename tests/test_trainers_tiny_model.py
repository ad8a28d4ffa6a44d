"""The tiny in-test model and tokenizer that the trainer, evaluation and selection tests build on."""

from tiny import make_tiny_model_dir, make_tiny_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_tokenizer_round_trips_any_text_and_has_chat_template():
    tokenizer = make_tiny_tokenizer()
    text = "Question: Zoë has 12 apples {x} \\boxed{3} 😀"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "</s>"
    messages = [{"role": "user", "content": "hi"}]
    chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert chat == "<|user|>hi</s><|assistant|>"


def test_tiny_model_dir_loads_and_generates(tmp_path):
    folder = make_tiny_model_dir(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert 50_000 < model.num_parameters() < 1_000_000
    assert model.config.vocab_size == len(tokenizer)
    batch = tokenizer(["hello"], return_tensors="pt")
    output = model.generate(**batch, min_new_tokens=4, max_new_tokens=4, do_sample=False)
    prompt = batch["input_ids"][0].tolist()
    assert output.shape == (1, len(prompt) + 4) and output[0, :len(prompt)].tolist() == prompt
    assert make_tiny_model_dir(tmp_path) == folder  # reused, not rebuilt
