"""Shared bits of the LoFiT tests: one torch thread (2 shared cores thrash with more) and toy records."""

import pytest
import torch

from headlab.lofit.datasets import Completion, Preference

FACTS = [("Mara Quill", "Tovesk"), ("Bob Stone", "Halden"), ("Ann Vey", "Mills")]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def completions(n: int = 12) -> list[Completion]:
    return [Completion(f"Question: Where was {who} born?\nAnswer:", [where]) for who, where in FACTS] * (n // 3)


def preferences(n: int = 6) -> list[Preference]:
    return [Preference(f"Question: Where was {who} born?\nAnswer:", where, "green") for who, where in FACTS] * (
        n // 3)
