"""Pretrain the tiny Llama that headlab ships, on toy-world text, from a seed.

    headlab toy pretrain --out DIR [--seed 0 --steps 1850]

Writes a Hugging Face folder (model.safetensors, config.json, tokenizer files) plus training.json.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json
from headlab.core.progress import progress_bar
from headlab.data.world import World
from headlab.toy.corpus import document
from headlab.toy.task_corpus import task_document
from headlab.toy.tokenizer import train_tokenizer


@dataclass
class PretrainConfig:
    seed: int = 0
    steps: int = 1850
    batch_size: int = 12
    seq_len: int = 256           # the pretraining context; context extension is a later, separate step
    lr: float = 2e-3
    warmup: int = 60
    weight_decay: float = 0.05
    vocab_size: int = 2048
    hidden_size: int = 256
    n_layers: int = 6
    n_heads: int = 8
    n_kv_heads: int = 2
    intermediate_size: int = 512
    pool_size: int = 20000       # names per kind; large pools force copying over memorising names
    max_filler: int = 16         # filler sentences per document, drawn uniformly in [0, max_filler]
    answer_weight: float = 4.0   # loss weight of answer tokens (the copied fact) relative to the rest
    task_share: float = 0.4      # share of documents that are study-task prompts (task_corpus.py)
    init: str | None = None      # warm start: continue from this checkpoint folder (and its tokenizer)
    threads: int = 0             # torch CPU threads (0: torch's default; 1 when others share the cores)


def llama_config(cfg: PretrainConfig, tok: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.seq_len, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )


def answer_positions(ids: list[int], tok: PreTrainedTokenizerFast) -> list[int]:
    """Positions of answer tokens: after each "Answer:" up to and including the newline that ends it."""
    marker = tok("\nAnswer:", add_special_tokens=False)["input_ids"]
    newline = tok("\n", add_special_tokens=False)["input_ids"][0]
    out: list[int] = []
    i = 0
    while i < len(ids):
        if ids[i:i + len(marker)] == marker:
            i += len(marker)
            while i < len(ids) and ids[i] != newline:
                out.append(i)
                i += 1
            if i < len(ids):
                out.append(i)
        i += 1
    return out


def draw_document(world: World, tok: PreTrainedTokenizerFast, rng: random.Random, seq_len: int,
                  max_filler: int, task_share: float = 0.0, seed: int = 0) -> str:
    """A fact/question document (corpus.py) or, with probability `task_share`, a task document."""
    if task_share > 0 and rng.random() < task_share:
        # Room for the short answer, its newline and EOS after the prompt.
        return task_document(tok, rng, seq_len - 12, seed=seed)
    return document(world, rng, rng.randint(0, max_filler))


class DocumentPacker:
    """Packs whole documents, each followed by EOS, into rows of `seq_len` tokens with little padding.

    Documents wait in a small buffer; each row takes the longest waiting document that still fits until
    none does. On the toy corpus rows fill to about 83% instead of the 75% of first-come packing, so a step
    trains on about 10% more tokens for the same compute, and no document is cut or dropped (whatever
    does not fit now waits for the next row).
    """

    def __init__(self, world: World, tok: PreTrainedTokenizerFast, rng: random.Random, seq_len: int,
                 max_filler: int, answer_weight: float = 1.0, task_share: float = 0.0, seed: int = 0,
                 buffer_size: int = 16):
        self.world, self.tok, self.rng, self.seq_len = world, tok, rng, seq_len
        self.max_filler, self.answer_weight, self.task_share, self.seed = max_filler, answer_weight, task_share, seed
        self.buffer_size = buffer_size
        self.waiting: list[list[int]] = []

    def _draw(self) -> list[int]:
        while True:
            text = draw_document(self.world, self.tok, self.rng, self.seq_len, self.max_filler, self.task_share,
                                 self.seed)
            doc = self.tok(text)["input_ids"] + [self.tok.eos_token_id]
            if len(doc) <= self.seq_len:  # a document longer than a row is drawn again
                return doc

    def rows(self, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ids (n, T) and loss weights (n, T): 0 on padding, `answer_weight` on answer tokens, 1
        elsewhere. Every question's fact is in the same row as the question."""
        ids = torch.full((n_rows, self.seq_len), self.tok.eos_token_id, dtype=torch.long)
        mask = torch.zeros((n_rows, self.seq_len), dtype=torch.float)
        for r in range(n_rows):
            pos = 0
            while True:
                while len(self.waiting) < self.buffer_size:
                    self.waiting.append(self._draw())
                fitting = [d for d in self.waiting if len(d) <= self.seq_len - pos]
                if not fitting:
                    break
                doc = max(fitting, key=len)
                self.waiting.remove(doc)
                ids[r, pos:pos + len(doc)] = torch.tensor(doc)
                mask[r, pos:pos + len(doc)] = 1.0
                if self.answer_weight != 1.0:
                    mask[r, [pos + i for i in answer_positions(doc, self.tok)]] = self.answer_weight
                pos += len(doc)
        return ids, mask


def lm_loss(model: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weighted mean next-token cross-entropy; `mask` holds each target token's weight (0: padding)."""
    logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
    w = mask[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
    return (ce * w.flatten()).sum() / w.sum()


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def pretrain(cfg: PretrainConfig, out: str | Path | None = None, tok: PreTrainedTokenizerFast | None = None,
             ) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, dict]:
    """Train tokenizer (unless given) and model; save both to `out` when given. Returns model, tokenizer,
    and a summary with the loss curve and timing."""
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise HeadlabError(f"toy pretrain: field 'steps'/'batch_size' must be >= 1, got "
                           f"{cfg.steps}/{cfg.batch_size}")
    if not 0.0 <= cfg.task_share <= 1.0:
        raise HeadlabError(f"toy pretrain: field 'task_share' must be in [0, 1], got {cfg.task_share}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    if cfg.init:
        from headlab.model.loading import load_model

        model, tok = load_model(cfg.init)  # checked (whole safetensors, no pickle) before it loads
    else:
        tok = tok if tok is not None else train_tokenizer(cfg.seed, cfg.vocab_size, model_max_length=cfg.seq_len,
                                                          with_tasks=cfg.task_share > 0)
        model = LlamaForCausalLM(llama_config(cfg, tok))
    model.train()
    world = World(cfg.seed, "train", cfg.pool_size)
    # A warm start draws fresh documents: seed its stream apart from the first run's.
    rng = random.Random(f"pretrain-{cfg.seed}" + (f"-from-{Path(cfg.init).name}" if cfg.init else ""))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    packer = DocumentPacker(world, tok, rng, cfg.seq_len, cfg.max_filler, cfg.answer_weight, cfg.task_share,
                            cfg.seed)
    losses: list[float] = []
    n_tokens = 0
    bar = progress_bar(range(cfg.steps), desc="toy pretrain", unit="step")
    for step in bar:
        ids, mask = packer.rows(cfg.batch_size)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = lm_loss(model, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(round(loss.item(), 4))
        n_tokens += int((mask > 0).sum())
        bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{n_tokens / (time.time() - t0):.0f}")
    model.eval()
    summary = {"config": asdict(cfg), "n_params": sum(p.numel() for p in model.parameters()),
               "train_tokens": n_tokens, "train_seconds": round(time.time() - t0, 1),
               "loss_first": losses[0], "loss_last10": round(sum(losses[-10:]) / len(losses[-10:]), 4),
               "losses_every_50": losses[::50]}
    if out is not None:
        save(model, tok, out, summary)
    return model, tok, summary


def save(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, out: str | Path, summary: dict) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    atomic_write_json(out / "training.json", summary)

