"""Prompts for the three modes, as chat messages (a backend renders them with the model's template).

- direct: answer only, in a fixed form, no explanation (zero-shot "direct answer" of Sprague et al. 2024);
- cot: think step by step, then end with "The answer is X." (zero-shot chain of thought);
- plan: write a short Python program that prints the answer; headlab runs it (plan + tool solver).

Few-shot: demonstrations become earlier user/assistant turns. A CoT demonstration uses the worked solution the
dataset ships (GSM8K, strategyqa), else only its final-answer sentence.
"""

from __future__ import annotations

from headlab.cot.datasets import LETTERS, Item

MODES = ("direct", "cot", "plan")

FORM = {
    "mc": "the letter of the correct option",
    "number": "the number",
    "yesno": "yes or no",
    "text": "a short answer (a few words)",
}
DIRECT = "Answer with only {form}, in the form \"The answer is X.\" Do not explain."
COT = ("Think step by step, then give your final answer on the last line, in the form \"The answer is X.\" "
       "where X is {form}.")
PLAN = ("Write a short Python program that computes the answer and prints only {form}. "
        "Put the whole program in one ```python code block and write nothing after it.")


def question_text(item: Item) -> str:
    """The question with its options listed as (A) ..., one per line."""
    if not item.choices:
        return item.question
    options = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(item.choices))
    return f"{item.question}\n\nOptions:\n{options}"


def instruction(mode: str, item: Item) -> str:
    template = {"direct": DIRECT, "cot": COT, "plan": PLAN}[mode]
    return template.format(form=FORM[item.answer_type])


def gold_answer(item: Item) -> str:
    """The first accepted answer, as a model should state it (option letter, number, yes/no, text)."""
    return item.gold[0]


def demo_reply(mode: str, item: Item) -> str:
    """What a demonstration's assistant turn says."""
    final = f"The answer is {gold_answer(item)}."
    if mode == "cot" and item.rationale:
        return f"{item.rationale.strip()}\n{final}"
    if mode == "plan":
        return f"```python\nprint({gold_answer(item)!r})\n```"
    return final


def messages(mode: str, item: Item, demos: list[Item] = ()) -> list[dict]:
    """Chat messages for one item in one mode, after the few-shot demonstrations."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    out: list[dict] = []
    for demo in demos:
        out.append({"role": "user", "content": f"{question_text(demo)}\n\n{instruction(mode, demo)}"})
        out.append({"role": "assistant", "content": demo_reply(mode, demo)})
    out.append({"role": "user", "content": f"{question_text(item)}\n\n{instruction(mode, item)}"})
    return out


def render_plain(msgs: list[dict]) -> str:
    """A prompt for a model without a chat template: turns separated by blank lines, the reply to follow."""
    parts = []
    for m in msgs:
        parts.append(f"Question: {m['content']}" if m["role"] == "user" else f"Response: {m['content']}")
    return "\n\n".join(parts) + "\n\nResponse:"
