"""To CoT or not to CoT (Sprague et al. 2024): zero-shot direct answers against chain of thought, per dataset.

`datasets.py` reads local files into items, `prompts.py` writes the prompts, `backends.py` answers them (a
Hugging Face model through headlab's decoder, or an OpenAI-compatible endpoint) behind an on-disk cache,
`extract.py` reads the final answer, `sandbox.py` runs plan-mode programs, `run.py` ties them together and
`report.py` computes accuracies with bootstrap intervals (`stats.py`), the "=" split and the figure.
"""
