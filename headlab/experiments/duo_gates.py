"""DuoAttention's learned gates (Xiao et al. 2024, mit-han-lab/duo-attention `duo_attn/train.py`): one gate
per kv head that mixes the head's full attention with streaming attention (the first `sink` tokens and the
last `recent` ones), trained by distillation with an L1 penalty so that only heads that need the whole context
keep a large gate (docs/definitions.md#learned-gates).

The frozen model is the teacher; the student is the same model with every layer's attention output replaced,
per query head h of kv head k, by `a_k * full + (1 - a_k) * streaming`. The loss is the mean squared
difference of the final hidden states at the answer positions (mean over the hidden size, mean over answer
tokens) plus `reg_weight * mean(|a|)`; only the gates train (AdamW, no weight decay), they start at `init` and
are clamped to [0, 1] before every step, with the original's learning-rate schedule. Gates are the native
unit, kv heads; a query head's gate is its kv head's.

The training inputs are probes with the needle repeated after the prompt (the original's passkey answers): the
student must copy what lies outside its window. Both runs go through the seam: the streaming output comes from
the attention call's own query, keys and values (`AttentionCall.output`) and replaces z before the output
projection, so no model file is forked. Each step is one probe (unpadded, as the original's batch of one).
A checkpoint after every `save_every` steps (gates, optimizer, schedule, step) lets a killed run resume.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from headlab.core.errors import HeadlabError, check_fields
from headlab.core.io import atomic_write_bytes
from headlab.data.probes import Probe
from headlab.mech.heads import head_name
from headlab.model.attention_rows import AttentionCall
from headlab.model.geometry import HeadGeometry
from headlab.model.seam import Seam, input_device

METHOD = "duo-gates"
UNIT = "kv head"
CHECKPOINT = "duo_checkpoint.pt"


def _count(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


@dataclass
class DuoConfig:
    steps: int = 200  # duo-gates: optimizer steps, one probe each
    lr: float = 0.02  # duo-gates: the gates' learning rate (AdamW)
    reg_weight: float = 0.05  # duo-gates: weight of the L1 penalty on the gates
    sink: int = 64  # duo-gates: streaming attention keeps the first SINK tokens and the last RECENT ones
    recent: int = 256  # duo-gates: the recent window of streaming attention, the query's own token included
    init: float = 1.0  # duo-gates: every gate's starting value, in [0, 1]
    seed: int = 0  # seed of the default toy probes and of the order duo-gates trains on them
    save_every: int = 20  # duo-gates: steps between checkpoints in --checkpoints (0: none)

    def __post_init__(self) -> None:
        self.check()

    def check(self, source: str = "duo gates", prefix: str = "") -> None:
        """One line naming the first bad field."""
        number = (int, float)
        check_fields(source, self, [
            ("steps", _count(self.steps, 1), "an integer >= 1"),
            ("lr", isinstance(self.lr, number) and self.lr > 0, "a number > 0"),
            ("reg_weight", isinstance(self.reg_weight, number) and self.reg_weight >= 0, "a number >= 0"),
            ("sink", _count(self.sink, 0), "an integer >= 0"),
            ("recent", _count(self.recent, 1), "an integer >= 1"),
            ("init", isinstance(self.init, number) and 0 <= self.init <= 1, "a number in [0, 1]"),
            ("seed", _count(self.seed, 0), "an integer >= 0"),
            ("save_every", _count(self.save_every, 0), "an integer >= 0"),
        ], prefix)


def streaming_keep(n_query: int, n_key: int, sink: int, recent: int, device=None) -> torch.Tensor:
    """[n_query, n_key] bool: the sink and recent keys of each query (queries are the last slots, no cache)."""
    q = torch.arange(n_query, device=device)[:, None] + (n_key - n_query)
    k = torch.arange(n_key, device=device)[None, :]
    return (k < sink) | ((q - k) < recent)


class GatedAttention:
    """The student: while `applied()`, every layer's z is `a * full + (1 - a) * streaming` per kv head."""

    def __init__(self, seam: Seam, gates: torch.Tensor, sink: int, recent: int):
        g = seam.geometry
        if tuple(gates.shape) != (g.n_layers, g.n_kv_heads):
            raise HeadlabError(f"duo gates: expected gates of shape {(g.n_layers, g.n_kv_heads)}, "
                               f"got {tuple(gates.shape)}")
        self.seam, self.gates, self.sink, self.recent = seam, gates, sink, recent
        self._streaming: dict[int, torch.Tensor] = {}

    def _observe(self, layer: int, call: AttentionCall) -> None:
        if call.first_key != 0:
            raise HeadlabError("duo gates: training runs whole sequences without a KV cache")
        keep = streaming_keep(call.n_query, call.n_key, self.sink, self.recent, call.key.device)
        self._streaming[layer] = call.output(keep)  # [batch, pos, head, d_head]

    def _mix(self, layer: int):
        groups = self.seam.geometry.n_heads // self.seam.geometry.n_kv_heads

        def hook(z: torch.Tensor) -> torch.Tensor:
            streaming = self._streaming.pop(layer)
            a = self.gates[layer].to(z.device).repeat_interleave(groups)[None, None, :, None]  # per query head
            return (a * z.float() + (1 - a) * streaming.float()).to(z.dtype)

        return hook

    @contextmanager
    def applied(self) -> Iterator[None]:
        with ExitStack() as stack:
            stack.enter_context(self.seam.observe_attention(self._observe))
            for layer in range(self.seam.geometry.n_layers):
                stack.enter_context(self.seam.z_hook(layer, self._mix(layer)))
            try:
                yield
            finally:
                self._streaming.clear()


def _final_hidden(model, ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, use_cache=False, output_hidden_states=True, logits_to_keep=1)
    return out.hidden_states[-1][0]  # [pos, hidden]: after the final norm


def training_input(probe: Probe) -> tuple[list[int], int]:
    """The probe's prompt followed by its needle, and how many answer tokens end it."""
    needle = probe.needle_ids
    if not needle:
        raise HeadlabError(f"probe {probe.id}: empty needle; duo gates distil on the repeated needle")
    return probe.input_ids + needle, len(needle)


def distillation_loss(model, student: GatedAttention, ids: list[int], n_answer: int,
                      teacher: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(distillation loss, teacher's answer hidden states) of one training input."""
    device = input_device(model)
    x = torch.tensor([ids], device=device)
    if teacher is None:
        with torch.no_grad():
            teacher = _final_hidden(model, x)[-n_answer:].float()
    with student.applied():
        hidden = _final_hidden(model, x)[-n_answer:].float()
    return (hidden - teacher.to(hidden.device)).pow(2).mean(-1).mean(), teacher


def _schedule(steps: int):
    """The original's schedule: linear warm-up over a fifth of the steps, linear decay over the last fifth,
    never below a tenth of the rate."""
    fifth = max(steps // 5, 1)
    return lambda step: min(1.0, max((step + 1) / fifth, 0.1), max((steps - step) / fifth, 0.1))


@dataclass
class DuoResult:
    gates: dict[str, float]  # {"L-K": gate} per kv head
    losses: list[float]  # distillation loss of each step (resumed steps included)
    geometry: HeadGeometry
    config: DuoConfig
    n_probes: int
    method: str = METHOD
    unit: str = UNIT

    def retrieval_scores(self) -> dict[str, list[float]]:
        """Retrieval_Head format per query head (each reads its kv head's gate), for `heads show` and knockout."""
        groups = self.geometry.n_heads // self.geometry.n_kv_heads
        return {head_name(layer, h): [self.gates[head_name(layer, h // groups)]]
                for layer in range(self.geometry.n_layers) for h in range(self.geometry.n_heads)}

    @property
    def mean(self) -> dict[str, float]:
        return {name: values[0] for name, values in self.retrieval_scores().items()}

    def summary(self) -> dict:
        return {"method": self.method, "unit": self.unit, "n_probes": self.n_probes, "kv_gates": self.gates,
                "mean_scores": self.mean, "losses": self.losses, "geometry": self.geometry.to_dict(),
                "config": asdict(self.config)}


def _save(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())  # a kill mid-write leaves the previous checkpoint


def _load(path: Path, config: DuoConfig, n_probes: int) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise HeadlabError(f"{path}: not a duo gates checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("config") != asdict(config) or state.get("n_probes") != n_probes:
        raise HeadlabError(f"{path}: checkpoint of other settings or probes; use another --out or the same "
                           "settings")
    return state


def train_gates(model, probes: Sequence[Probe], config: DuoConfig | None = None, out_dir: str | Path | None = None,
                progress=None) -> DuoResult:
    """Train the gates on `probes` (docstring of this module); with `out_dir`, checkpoint there and resume from
    its checkpoint. `progress(n)` after each step."""
    config = config or DuoConfig()
    config.check()
    probes = list(probes)
    if not probes:
        raise HeadlabError("duo gates: no probes")
    inputs = [training_input(p) for p in probes]
    seam = Seam.attach(model)
    g = seam.geometry
    trainable = {p: p.requires_grad for p in model.parameters()}  # given back when training ends
    for p in trainable:
        p.requires_grad_(False)
    gates = torch.nn.Parameter(torch.full((g.n_layers, g.n_kv_heads), float(config.init)))
    optimizer = torch.optim.AdamW([gates], lr=config.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config.steps))
    order = torch.randperm(len(inputs) * config.steps, generator=torch.Generator().manual_seed(config.seed))
    order = (order % len(inputs)).tolist()  # a fixed, seeded sequence of probes, one per step
    losses: list[float] = []
    start = 0
    path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    if path is not None and path.is_file():
        state = _load(path, config, len(inputs))
        with torch.no_grad():
            gates.copy_(state["gates"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, losses = state["step"], list(state["losses"])
        if progress is not None and start:
            progress(start)
    student = GatedAttention(seam, gates, config.sink, config.recent)
    teachers: dict[int, torch.Tensor] = {}  # the frozen model's answer states, once per probe
    was_training = model.training
    model.eval()
    try:
        for step in range(start, config.steps):
            with torch.no_grad():
                gates.clamp_(0, 1)
            i = order[step]
            distill, teachers[i] = distillation_loss(model, student, *inputs[i], teacher=teachers.get(i))
            loss = distill + config.reg_weight * gates.abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(distill.detach()))
            if path is not None and config.save_every and ((step + 1) % config.save_every == 0
                                                           or step + 1 == config.steps):
                _save(path, {"gates": gates.detach().clone(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "step": step + 1, "losses": losses,
                             "config": asdict(config), "n_probes": len(inputs)})
            if progress is not None:
                progress(1)
    finally:
        model.train(was_training)
        for p, flag in trainable.items():
            p.requires_grad_(flag)
    final = gates.detach().clamp(0, 1)
    named = {head_name(layer, k): float(final[layer, k]) for layer in range(g.n_layers) for k in range(g.n_kv_heads)}
    return DuoResult(named, losses, g, config, len(inputs))
