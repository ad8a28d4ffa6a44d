"""How a rendered template becomes model input, shared by training, scoring and evaluation.

One function decides whether the template goes into a chat user turn or is used as plain text, so
that SAPO scores a template on exactly the token sequence the trainer will train on.
"""

from __future__ import annotations


def use_chat(tokenizer, chat: bool | None = None) -> bool:
    """Whether prompts go through the tokenizer's chat template (``chat=None``: when it has one)."""
    if chat is None:
        return bool(getattr(tokenizer, "chat_template", None))
    return chat


def prompt_text(tokenizer, user_text: str, system_prompt: str | None = None, chat: bool | None = None) -> str:
    """The exact prompt string a model sees for a rendered template.

    Args:
        tokenizer: a Hugging Face tokenizer.
        user_text (`str`): the rendered template.
        system_prompt (`str`, *optional*): a system message (chat) or a preamble line (plain text).
        chat (`bool`, *optional*): force chat or plain formatting; defaults to chat when available.
    """
    if not use_chat(tokenizer, chat):
        return f"{system_prompt}\n\n{user_text}" if system_prompt else user_text
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": user_text})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt_completion(tokenizer, prompt: str, completion: str, add_eos: bool = True) -> tuple[list[int], int]:
    """Token ids of ``prompt`` followed by ``completion`` (and eos), and how many of them are the prompt.

    Prompt and completion are tokenised separately so the boundary is exact: loss is taken on the
    completion tokens only.
    """
    # A chat template already writes any BOS text; plain prompts get the tokenizer's own special tokens.
    prompt_ids = tokenizer(prompt, add_special_tokens=not use_chat(tokenizer))["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    return prompt_ids + completion_ids, len(prompt_ids)

