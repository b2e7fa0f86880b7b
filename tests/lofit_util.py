"""Toy records shared by the LoFiT tests."""

from headlab.lofit.datasets import Completion, Preference

FACTS = [("Mara Quill", "Tovesk"), ("Bob Stone", "Halden"), ("Ann Vey", "Mills")]


def completions(n: int = 12) -> list[Completion]:
    return [Completion(f"Question: Where was {who} born?\nAnswer:", [where]) for who, where in FACTS] * (n // 3)


def preferences(n: int = 6) -> list[Preference]:
    return [Preference(f"Question: Where was {who} born?\nAnswer:", where, "green") for who, where in FACTS] * (
        n // 3)
