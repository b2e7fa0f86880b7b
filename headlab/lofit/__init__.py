"""LoFiT (Yin, Ye, Durrett, NeurIPS 2024): localized fine-tuning of attention-head outputs.

Step 1 (`select.py`) learns a scale per head under an L1 penalty and keeps the heads with the largest scales;
step 2 (`tune.py`) learns an offset per kept head; `merge.py` folds both into the output projection.
"""

from headlab.lofit.adapter import AppliedAdapter, LofitAdapter, apply_adapters, load_adapter

__all__ = ["AppliedAdapter", "LofitAdapter", "apply_adapters", "load_adapter"]
