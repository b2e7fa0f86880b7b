"""Unit costs of the study's stages on this machine: seconds per fine-tune step, per evaluated example, per
detection probe and per patched example (shipped tiny model, 512-token MDQA prompts, batch 8).

    OMP_NUM_THREADS=2 python bench/study_units.py [--out units.json]

The study's run time is about: steps x fine-tunes + examples x (evaluations + knockout runs) + probes x
detections + patched examples x patch runs. Each unit is given in wall seconds and in CPU seconds (all
threads; run with OMP_WAIT_POLICY=PASSIVE so waiting threads do not spin): on a shared machine wall time
grows with the load, CPU time much less, so CPU-time ratios between units and a study's measured total on
an idle machine give an honest extrapolation.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--model", default=None, help="default: the shipped tiny model")
    ap.add_argument("--length", type=int, default=512, help="prompt tokens")
    ap.add_argument("--context", type=int, default=640, help="fine-tune context length")
    ap.add_argument("--batch", type=int, default=4, help="fine-tune batch size")
    ap.add_argument("--steps", default="2,6", help="two fine-tune lengths; their difference gives a step's cost")
    args = ap.parse_args()
    torch.manual_seed(0)
    from headlab.data.example import save_examples
    from headlab.data.task_prompts import task_probes
    from headlab.data.task_registry import task_score
    from headlab.data.tasks import GenConfig, generate_examples
    from headlab.experiments.detect import DetectConfig, detect_retrieval_heads
    from headlab.experiments.evaluate import EvalConfig, evaluate_examples, items_from_examples, score_items
    from headlab.experiments.finetune import FinetuneConfig, finetune
    from headlab.mech.interventions import patch_from_model
    from headlab.model.loading import load_model, model_or_default

    path = model_or_default(args.model)
    model, tok = load_model(path)
    examples = generate_examples(GenConfig("mdqa", "real", "diverse", n=args.examples, length=args.length,
                                                   seed=7), tok)
    units: dict[str, float] = {}

    class Clock:
        """Wall and CPU seconds of a block, stored under units[name + "_wall"/"_cpu"], divided by `per`."""

        def __init__(self, name: str, per: float = 1.0):
            self.name, self.per = name, per

        def __enter__(self):
            self.t, self.c = time.perf_counter(), time.process_time()

        def __exit__(self, *exc):
            units[f"{self.name}_wall"] = (time.perf_counter() - self.t) / self.per
            units[f"{self.name}_cpu"] = (time.process_time() - self.c) / self.per
            print(f"{self.name}: {units[f'{self.name}_wall']:.4f} s wall, {units[f'{self.name}_cpu']:.4f} s CPU",
                  flush=True)

    for bs in (8, 16) if args.model is None else (8,):
        with Clock(f"eval_bs{bs}_per_example", len(examples)):
            evaluate_examples(model, tok, examples, EvalConfig(max_new_tokens=16, batch_size=bs,
                                                               allow_long_context=True))

    probes = task_probes(examples, tok, which="answer")
    for p in probes:
        p.newline_stop = True
    by_id = {ex.id: ex for ex in examples}
    with Clock("detect_per_probe", len(probes)):
        detect_retrieval_heads(model, tok, probes, DetectConfig(max_new_tokens=16, batch_size=8,
                                                                allow_long_context=True, progress=False),
                               success=lambda p, text, _: task_score("mdqa", text.strip(), by_id[p.id].answers, []))

    items = items_from_examples(examples, tok)
    source, _ = load_model(path)
    with Clock("knockout_per_example", len(items)):  # score_items: what knockout runs per condition
        score_items(model, tok, items, 16, 8)
    with Clock("patch_per_example", len(items)), patch_from_model(model, source, ["5-0", "5-1", "4-5"]):
        score_items(model, tok, items, 16, 8)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        save_examples(examples, data)
        short, long = (int(x) for x in args.steps.split(","))
        for steps in (short, long):  # the difference removes load/save overhead
            with Clock(f"finetune_{steps}_steps"):
                finetune(FinetuneConfig(model=path, data=str(data), out=f"{tmp}/ft{steps}",
                                        context_length=args.context,
                                        steps=steps, batch_size=args.batch, lr=2e-3, merge=True))
    for kind in ("wall", "cpu"):
        step = (units[f"finetune_{long}_steps_{kind}"] - units[f"finetune_{short}_steps_{kind}"]) / (long - short)
        units[f"finetune_per_step_{kind}"] = step
        units[f"finetune_overhead_{kind}"] = units[f"finetune_{short}_steps_{kind}"] - short * step
    units = {k: round(v, 4) for k, v in units.items()}
    print(json.dumps(units, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(units, indent=1))


if __name__ == "__main__":
    main()
