"""How a rendered template becomes model input, shared by training, SAPO scoring and evaluation.

One set of functions decides whether the template goes into a chat user turn or is used as plain text and
how the reference completion is written after it, so SAPO scores a template on exactly the token sequence
the SFT trainer trains on.
"""

from __future__ import annotations

from prompt_pool import UserError


def resolve_conversational(prompt_format: str, tokenizer) -> bool:
    """Whether prompts are chats: ``chat``/``plain`` as asked, ``auto`` when the tokenizer has a chat template."""
    if prompt_format == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("prompt_format is 'chat' but the tokenizer has no chat template: use prompt_format plain")
        return True
    if prompt_format == "plain":
        return False
    if prompt_format != "auto":
        raise UserError(f"prompt_format must be auto, chat or plain, got {prompt_format!r}")
    return bool(getattr(tokenizer, "chat_template", None))


def build_prompt(text: str, conversational: bool, system_prompt: str | None = None) -> str | list[dict]:
    """The prompt TRL receives: the rendered template as raw text, or as the user message of a chat."""
    if not conversational:
        return text
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": text}]


def prompt_text(tokenizer, prompt: str | list[dict]) -> str:
    """The exact text a prompt becomes before tokenisation (chat template applied for chats)."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def tokenize_prompt_texts(tokenizer, texts: list[str], conversational: bool) -> list[list[int]]:
    """Token ids of prompt texts: a chat template writes its own special tokens, plain text gets the
    tokenizer's usual ones (a BOS)."""
    return tokenizer(texts, add_special_tokens=not conversational)["input_ids"]


def completion_text(tokenizer, prompt: str | list[dict], target: str) -> str:
    """The completion as the chat template writes an assistant turn, or the target plus eos for plain text."""
    if isinstance(prompt, list):
        head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": target}], tokenize=False)
        if full.startswith(head):
            return full[len(head):]
    return target + (tokenizer.eos_token or "")


def encode_example(tokenizer, rendered: str, target: str, conversational: bool,
                   system_prompt: str | None = None) -> tuple[list[int], int]:
    """Token ids of prompt + reference completion, and how many of them are the prompt.

    Prompt and completion are tokenised separately so the boundary is exact: loss is taken on the
    completion tokens only. Chat templates write their own special tokens; plain prompts get the
    tokenizer's usual ones.
    """
    prompt = build_prompt(rendered, conversational, system_prompt)
    (prompt_ids,) = tokenize_prompt_texts(tokenizer, [prompt_text(tokenizer, prompt)], conversational)
    completion_ids = tokenizer(completion_text(tokenizer, prompt, target), add_special_tokens=False)["input_ids"]
    return prompt_ids + completion_ids, len(prompt_ids)
