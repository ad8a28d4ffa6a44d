"""How a rendered template becomes model input, shared by training, SAPO scoring and evaluation.

One set of functions decides whether the template goes into a chat user turn or is used as plain text and
how the reference completion is written after it, so SAPO scores a template on exactly the token sequence
the SFT trainer trains on.
"""

from __future__ import annotations

from dataclasses import dataclass

from prompt_pool import UserError


@dataclass(frozen=True)
class PromptFormat:
    """How a rendered template becomes the prompt a model sees: the user message of a chat (after an optional
    system message) or plain text. Built once per run (`PromptFormat.resolve`) and passed along, so training,
    SAPO scoring and evaluation cannot disagree on it.

    Args:
        chat (`bool`, defaults to `False`): the template goes into a chat's user turn (the tokenizer's chat
            template); otherwise it is the raw prompt text.
        system_prompt (`str`, *optional*): the system message before the user turn (chats only).
    """

    chat: bool = False
    system_prompt: str | None = None

    @classmethod
    def resolve(cls, name: str, tokenizer, system_prompt: str | None = None) -> PromptFormat:
        """The format a recipe's ``prompt_format`` (``chat``, ``plain`` or ``auto``: chat when the tokenizer has a
        chat template) and ``system_prompt`` ask for.

        A system prompt needs a chat: plain text has no system turn, and dropping it would train or evaluate on
        another prompt than the recipe says.
        """
        if name not in ("auto", "chat", "plain"):
            raise UserError(f"prompt_format must be auto, chat or plain, got {name!r}")
        has_template = bool(tokenizer.chat_template)
        if name == "chat" and not has_template:
            raise UserError("prompt_format is 'chat' but the tokenizer has no chat template: use prompt_format plain")
        chat = name == "chat" or (name == "auto" and has_template)
        if system_prompt and not chat:
            why = "prompt_format is plain" if name == "plain" else "the tokenizer has no chat template"
            raise UserError(f"system_prompt is set but prompts are plain text ({why}), which has no system turn: "
                            "remove system_prompt, or use a model whose tokenizer has a chat template")
        return cls(chat, system_prompt or None)

    def build(self, text: str) -> str | list[dict]:
        """The prompt TRL receives: the rendered template as raw text, or as the user message of a chat."""
        if not self.chat:
            return text
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return messages + [{"role": "user", "content": text}]

    def text(self, tokenizer, rendered: str) -> str:
        """The exact text the rendered template becomes before tokenisation."""
        return prompt_text(tokenizer, self.build(rendered))


def prompt_text(tokenizer, prompt: str | list[dict]) -> str:
    """The exact text a prompt becomes before tokenisation (chat template applied for chats)."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


# Texts per tokenizer call: Ctrl-C is only seen between calls, so each call stays well under a second.
TOKENIZE_CHUNK = 512


def tokenize_prompt_texts(tokenizer, texts: list[str], conversational: bool) -> list[list[int]]:
    """Token ids of prompt texts: a chat template writes its own special tokens, plain text gets the
    tokenizer's usual ones (a BOS)."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        ids += tokenizer(texts[start : start + TOKENIZE_CHUNK], add_special_tokens=not conversational)["input_ids"]
    return ids


def completion_text(tokenizer, prompt: str | list[dict], target: str) -> str:
    """The completion as the chat template writes an assistant turn, or the target plus eos for plain text.

    A target's leading space (a cloze answer, " <option>") is kept only where it separates the answer from the
    prompt's last word: an assistant turn, or a prompt ending in whitespace, starts the answer directly. So SFT trains
    the very continuation log-likelihood scoring reads (`paft_rl.eval.loglik.option_delimiter`).
    """
    if isinstance(prompt, list) or prompt[-1:].isspace():
        target = target.lstrip(" ")
    if isinstance(prompt, list):
        head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": target}], tokenize=False)
        if full.startswith(head):
            return full[len(head):]
    return target + (tokenizer.eos_token or "")


def encode_texts(tokenizer, prompt_texts: list[str], completion_texts: list[str],
                 conversational: bool) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) of each pair, tokenised apart so the boundary is exact: loss is taken on
    the completion tokens only, and the prompt's ids are those generation and evaluation start from."""
    prompt_ids = tokenize_prompt_texts(tokenizer, prompt_texts, conversational)
    completion_ids = tokenizer(completion_texts, add_special_tokens=False)["input_ids"]
    return list(zip(prompt_ids, completion_ids, strict=True))


def encode_example(tokenizer, rendered: str, target: str, prompt_format: PromptFormat) -> tuple[list[int], int]:
    """Token ids of prompt + reference completion, and how many of them are the prompt (as the SFT collator)."""
    prompt = prompt_format.build(rendered)
    ((prompt_ids, completion_ids),) = encode_texts(tokenizer, [prompt_text(tokenizer, prompt)],
                                                   [completion_text(tokenizer, prompt, target)], prompt_format.chat)
    return prompt_ids + completion_ids, len(prompt_ids)
