"""Prompt rendering: the model's chat template when it has one, headlab's plain template otherwise."""

from __future__ import annotations

from headlab.core.errors import HeadlabError

PLAIN_TEMPLATE = "{context}\n\nQuestion: {question}\nAnswer:"


def render_prompt(tokenizer, context: str, question: str) -> str:
    """The prompt for a context and a question, as text ready to tokenize.

    With a chat template: one user message (context, blank line, question) and the generation prompt.
    Without: `PLAIN_TEMPLATE`; the model answers after a space and stops at a newline.
    """
    if getattr(tokenizer, "chat_template", None):
        return apply_chat_template(tokenizer, [{"role": "user", "content": f"{context}\n\n{question}"}])
    return PLAIN_TEMPLATE.format(context=context, question=question)


def apply_chat_template(tokenizer, messages: list[dict]) -> str:
    """The tokenizer's chat template applied to `messages`, as text with the generation prompt. A template that
    fails (a syntax error, or one that tries to leave transformers' sandbox) is one line naming the model's
    template, not a Jinja traceback."""
    import jinja2

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except jinja2.TemplateError as e:
        name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
        kind = "refused by the sandbox" if isinstance(e, jinja2.exceptions.SecurityError) else "failed"
        raise HeadlabError(f"{name}: chat template {kind} ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                           ) from None


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a rendered prompt. A chat template already wrote its special tokens, so add none then."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    return tokenizer(prompt, add_special_tokens=not has_template)["input_ids"]


def pad_id_of(tokenizer) -> int:
    """The id that pads a batch: the tokenizer's pad token, else 0 (padded positions are masked out, so any id
    works; loaded tokenizers get EOS as their pad token already)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
