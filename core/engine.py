"""Information content -log2 q(x) of text samples under a causal LM: exact, batched, fast on CPU.

Every sample is scored whole: sequences longer than the window are split into overlapping windows
(the fixed-length perplexity recipe) so each token is predicted once, with at least W - S tokens of
left context. Three forward paths give the same numbers: windows packed back to back with no
padding through the model's own layers (Llama, Mistral, Qwen2/3, GPT-NeoX: attention goes through
transformers' attention interface, so only it needs the window boundaries), a lean GPT-2
re-implementation packed the same way, and padded rows for any other Hugging Face causal LM.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.devices import max_positions, resolve_device, resolve_dtype, resolve_window
from core.errors import InputError
from core.models import GPT2_ACTIVATIONS, Gpt2Weights
from core.windows import plan_windows

LN2 = math.log(2.0)
# Head chunks: [rows, vocab_cols] logits are all that is ever materialised (16 MB in fp32); these
# sizes ran the bf16 head GEMM fastest (docs/benchmarks.md, "Figures behind the code's choices").
HEAD_ROWS = 1024
HEAD_COLS = 4096
# On a CPU the packed paths' linear layers slow down past ~4k rows (outputs fall out of cache), so
# they never forward more tokens at once there, whatever the budget.
PACKED_TOKENS = 4096
# The head's log-sum-exp runs over blocks of this many rows (2 MB in fp32 at 4,096 columns), which
# stay in L2: several times faster than one pass over a whole chunk (docs/benchmarks.md).
LSE_ROWS = 128


@dataclass(frozen=True)
class EngineSettings:
    """How to score; the defaults suit a CPU and any model."""

    window: int | None = None  # W: positions per window; None = the model's maximum
    stride: int | None = None  # S; None = W // 2
    max_batch_tokens: int = 8192  # token budget per forward batch (rows * row length)
    dtype: str = "auto"  # auto|float32|bfloat16|float16
    device: str = "auto"  # auto|cpu|cuda|cuda:N|mps
    fast_path: bool = True  # use a packed forward when the model allows it
    compile: bool = False  # torch.compile the fast path's layers (slow first call, disk cache)


@dataclass(frozen=True)
class SampleScore:
    n_tokens: int  # tokens predicted
    bits_total: float  # -sum log2 q(w_i | w_<i) over predicted tokens


def prefix_token(tokenizer) -> int | None:
    """The token every sample starts with, so that its first real token is predicted too."""
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    return tokenizer.eos_token_id


def sequence_for(tokenizer, text: str) -> tuple[list[int], int]:
    """Token ids the model sees for one sample, and how many of them are predicted."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False).input_ids
    return _with_prefix(list(ids), prefix_token(tokenizer))


def _with_prefix(ids: list[int], prefix: int | None) -> tuple[list[int], int]:
    seq = ids if prefix is None else [prefix, *ids]
    return seq, max(len(seq) - 1, 0)


def naive_score(model, tokenizer, text: str, window: int, stride: int) -> SampleScore:
    """The oracle: one window at a time, float32 log-softmax over full logits, no batching."""
    seq, n_pred = sequence_for(tokenizer, text)
    device = next(model.parameters()).device
    total = 0.0
    with torch.inference_mode():
        for start, end, first in plan_windows(len(seq), window, stride):
            ids = torch.tensor([seq[start:end]], device=device)
            logp = model(ids).logits[0].float().log_softmax(-1)
            rel = first - start
            total -= logp[rel - 1 : -1].gather(1, ids[0, rel:, None]).sum().item()
    return SampleScore(n_pred, total / LN2)


class Scorer:
    """Scores many samples at once; batch composition never changes a sample's score.

    `path` is the forward path: `take_batch` cuts the next batch of windows and `run` computes it.
    """

    def __init__(self, model, tokenizer, settings: EngineSettings | None = None):
        settings = settings or EngineSettings()
        self.settings = settings
        self.tokenizer = tokenizer
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self.window, self.stride = resolve_window(
            settings.window, settings.stride, max_positions(model.config)
        )
        if settings.max_batch_tokens < 1:
            raise InputError("max_batch_tokens must be positive — pass --max-batch-tokens 8192")
        self.budget = settings.max_batch_tokens  # tokens per batch; halved by out-of-memory
        if self.device == "cpu":
            _set_cpu_threads()
        self._prefix = prefix_token(tokenizer)
        torch_dtype = getattr(torch, self.dtype)
        if not isinstance(model, Gpt2Weights):
            model.eval()  # no dropout, whichever path runs the model's own layers
        # Gpt2Weights (read without transformers) have the packed path only.
        if isinstance(model, Gpt2Weights) or (settings.fast_path and _Gpt2Packed.supports(model)):
            self.path = _Gpt2Packed(model, torch_dtype, self.device, settings.compile)
        elif settings.fast_path and _HfPacked.supports(model, self.window):
            self.path = _HfPacked(model, torch_dtype, self.device)
        else:
            self.path = _PaddedRows(model, torch_dtype, self.device)
        self.path_name = type(self.path).__name__

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Sequences as sequence_for builds them, in one batched tokenizer call."""
        if not texts:
            return []
        enc = self.tokenizer(list(texts), add_special_tokens=False, verbose=False).input_ids
        return [_with_prefix(list(ids), self._prefix)[0] for ids in enc]

    def score_texts(self, texts: list[str]) -> list[SampleScore]:
        return self.score_sequences(self.tokenize(texts))

    def score_stream(self, chunks: Iterable[list[str]]) -> Iterator[list[SampleScore]]:
        """Scores chunk after chunk while a thread reads and tokenises the next one.

        The input iterator is advanced from that thread, one call at a time.
        """
        it = iter(chunks)

        def next_tokenized():
            texts = next(it, None)
            return None if texts is None else self.tokenize(texts)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as pool:
            pending = pool.submit(next_tokenized)
            while (seqs := pending.result()) is not None:
                pending = pool.submit(next_tokenized)
                yield self.score_sequences(seqs)

    def score_sequences(self, seqs: list[list[int]]) -> list[SampleScore]:
        pieces = [
            (i, seq[start:end], first - start)
            for i, seq in enumerate(seqs)
            for start, end, first in plan_windows(len(seq), self.window, self.stride)
        ]
        # Longest first: similar lengths share a batch, and an out-of-memory shows up at once.
        pieces.sort(key=lambda p: len(p[1]), reverse=True)
        # Summed in float64, so the order of batches cannot matter: on a CUDA device where they
        # are computed (no wait for each batch), else on the CPU (MPS has no float64).
        on = self.device if self.device.startswith("cuda") else "cpu"
        totals = torch.zeros(len(seqs), dtype=torch.float64, device=on)
        done = 0
        with torch.inference_mode():
            while done < len(pieces):
                batch = self.path.take_batch(pieces, done, self.budget)
                try:
                    sample_idx, nll = self.path.run(batch)
                except torch.OutOfMemoryError:
                    # No device test: a failing CPU allocator raises RuntimeError, not this, and
                    # an injected one (benchmarks/gpu_check.py) exercises this code on any device.
                    if len(batch) == 1:
                        raise
                    out_of_memory = True
                else:
                    out_of_memory = False
                if out_of_memory:  # outside the handler, whose traceback holds the batch's tensors
                    if self.device.startswith("cuda"):
                        torch.cuda.empty_cache()
                    self.budget = max(self.budget // 2, 1)  # for good: the next chunk fits too
                    continue
                totals.index_add_(0, sample_idx.to(on), nll.double().to(on))
                done += len(batch)
        bits = (totals / LN2).tolist()
        return [
            SampleScore(max(len(s) - 1, 0), b if len(s) > 1 else 0.0)
            for s, b in zip(seqs, bits, strict=True)
        ]


def _set_cpu_threads() -> None:
    """One thread per core we may run on, unless OMP_NUM_THREADS says otherwise."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores and cores < torch.get_num_threads():
        torch.set_num_threads(cores)


def _output_matrix(weight: torch.Tensor, bias, dtype, device):
    """The LM head as (weight, bias) in the compute dtype, centred when reduced precision.

    Log-softmax ignores a common offset, but in bf16 a large shared component of the output rows
    costs precision (measured up to 3.5e-3 relative on trained weights); subtracting the mean row
    removes it for free. Centring is done in fp32, before the cast.
    """
    w = weight.detach().to(device=device, dtype=torch.float32)
    if dtype != torch.float32:
        w = w - w.mean(0, keepdim=True)
    b = None if bias is None else bias.detach().to(device=device, dtype=torch.float32)
    return w.to(dtype).contiguous(), b


def _chunk_lse(logits: torch.Tensor) -> torch.Tensor:
    """One pass over the chunk: what torch.compile fuses, and what a GPU wants."""
    return logits.float().logsumexp(-1)


def blocked_lse(logits: torch.Tensor) -> torch.Tensor:
    """Log-sum-exp of each row in fp32; on a CPU LSE_ROWS rows at a time, so they stay in cache.

    On a CPU it is read off log_softmax (lse = x_0 - log_softmax(x)_0): one fused, vectorised
    kernel, where `logsumexp` makes a pass each for the cast, the max, the subtraction, the exp
    and the sum — the head of a small model spent most of its time there.
    """
    if logits.device.type != "cpu":  # a GPU wants one large kernel, not many small ones
        return _chunk_lse(logits)
    out = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    for r0 in range(0, logits.shape[0], LSE_ROWS):
        block = logits[r0 : r0 + LSE_ROWS]
        log_p = torch.log_softmax(block, -1, dtype=torch.float32)
        out[r0 : r0 + LSE_ROWS] = block[:, 0].float() - log_p[:, 0]
    return out


def head_nll(h, targets, weight, bias, lse_fn=blocked_lse) -> torch.Tensor:
    """-log q(target | h) in nats, fp32, without materialising [positions, vocabulary] logits."""
    out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    for r0 in range(0, h.shape[0], HEAD_ROWS):
        hc = h[r0 : r0 + HEAD_ROWS]
        lse = None
        for c0 in range(0, weight.shape[0], HEAD_COLS):
            b = None if bias is None else bias[c0 : c0 + HEAD_COLS].to(hc.dtype)
            part = lse_fn(F.linear(hc, weight[c0 : c0 + HEAD_COLS], b))
            lse = part if lse is None else torch.logaddexp(lse, part)
        tc = targets[r0 : r0 + HEAD_ROWS]
        # The target logit in fp32 from the same (rounded) operands as the log-sum-exp.
        tgt = (hc.float() * weight[tc].float()).sum(-1)
        if bias is not None:
            tgt = tgt + bias[tc]
        out[r0 : r0 + HEAD_ROWS] = lse - tgt
    return out


def _to_device(t: torch.Tensor, device: str) -> torch.Tensor:
    if device.startswith("cuda"):
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def take_packed(pieces, i: int, budget: int, device: str):
    """Pieces from pieces[i:] while their tokens fit the budget (at least one)."""
    if device == "cpu":
        budget = min(budget, PACKED_TOKENS)
    j, used = i, 0
    while j < len(pieces) and (j == i or used + len(pieces[j][1]) <= budget):
        used += len(pieces[j][1])
        j += 1
    return pieces[i:j]


@dataclass(frozen=True)
class Packed:
    """A batch of windows back to back in one row: what a packed forward path needs."""

    ids: torch.Tensor  # [tokens]
    positions: torch.Tensor  # [tokens], restarting at 0 in every window
    hidden_rows: torch.Tensor  # the rows whose next token is scored
    targets: torch.Tensor  # the token each of those rows predicts
    owners: torch.Tensor  # the sample each scored token belongs to
    groups: list[tuple[int, int, int]]  # (offset, window length, count): runs of equal windows

    @classmethod
    def of(cls, batch, device: str) -> Packed:
        ids, pos, hid, tgt, owner, groups = [], [], [], [], [], []
        for sample, toks, rel in batch:
            off, n = len(ids), len(toks)
            ids.extend(toks)
            pos.extend(range(n))
            hid.extend(range(off + rel - 1, off + n - 1))
            tgt.extend(toks[rel:])
            owner.extend([sample] * (n - rel))
            if groups and groups[-1][1] == n:
                groups[-1][2] += 1
            else:
                groups.append([off, n, 1])
        tensors = (_to_device(torch.tensor(x), device) for x in (ids, pos, hid, tgt, owner))
        return cls(*tensors, [tuple(g) for g in groups])


class _PaddedRows:
    """Any Hugging Face causal LM: windows as right-padded rows, the head done here in chunks."""

    def __init__(self, model, dtype: torch.dtype, device: str):
        param = next(model.parameters())
        if param.dtype != dtype or param.device != torch.device(device):
            # A copy, so the caller's model (e.g. the fp32 oracle) is left as it was.
            model = copy.deepcopy(model).to(device=device, dtype=dtype)
        self.model = model
        self.device = device
        self.base = model.base_model
        head = model.get_output_embeddings()
        # Models that post-process logits (soft-capping, scaling) keep their own head.
        self.own_head = (
            self.base is not model
            and isinstance(head, torch.nn.Linear)
            and not any(
                getattr(model.config, k, None)
                for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")
            )
        )
        if self.own_head:
            self.weight, self.bias = _output_matrix(head.weight, head.bias, dtype, device)

    @staticmethod
    def take_batch(pieces, i: int, budget: int):
        """Rows from pieces[i:] (longest first) while rows * longest row fits the budget."""
        rows = max(budget // len(pieces[i][1]), 1)
        return pieces[i : i + rows]

    def run(self, batch):
        width = len(batch[0][1])
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        hid, tgt, owner = [], [], []
        for r, (sample, toks, rel) in enumerate(batch):
            n = len(toks)
            ids[r, :n] = torch.tensor(toks)
            mask[r, :n] = 1
            hid.extend(range(r * width + rel - 1, r * width + n - 1))
            tgt.extend(toks[rel:])
            owner.extend([sample] * (n - rel))
        ids, mask = _to_device(ids, self.device), _to_device(mask, self.device)
        hid, tgt = (_to_device(torch.tensor(x), self.device) for x in (hid, tgt))
        owner = _to_device(torch.tensor(owner), self.device)
        if self.own_head:
            h = self.base(input_ids=ids, attention_mask=mask, use_cache=False)[0]
            nll = head_nll(h.flatten(0, 1)[hid], tgt, self.weight, self.bias)
        else:
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            logp = logits.flatten(0, 1)[hid].float().log_softmax(-1)
            nll = -logp.gather(1, tgt[:, None])[:, 0]
        return owner, nll


class _Gpt2Packed:
    """GPT-2 re-implemented lean: windows packed back to back, fp32 residual, matmuls in dtype.

    Linear layers run on all tokens of the batch as one [tokens, width] matrix (no padding); only
    attention needs the window boundaries: each run of equal-length windows is one causal SDPA call
    with positions restarting at 0, which is exactly what the model computes for a lone window.
    """

    @classmethod
    def supports(cls, model) -> bool:
        cfg = model.config
        return (
            type(model).__name__ == "GPT2LMHeadModel"
            and cfg.activation_function in GPT2_ACTIVATIONS
            and not getattr(cfg, "add_cross_attention", False)
            and getattr(model.lm_head, "bias", None) is None
        )

    def __init__(self, model, dtype: torch.dtype, device: str, compile_layers: bool):
        """MODEL: a GPT2LMHeadModel, or the same weights read from its files (Gpt2Weights)."""
        if isinstance(model, Gpt2Weights):
            cfg, state = model.config, model.state
        else:
            cfg = model.config
            state = {k.removeprefix("transformer."): v for k, v in model.state_dict().items()}
        self.device = device
        self.dtype = dtype
        self.heads = cfg.n_head
        self.eps = cfg.layer_norm_epsilon
        self.gelu = GPT2_ACTIVATIONS[cfg.activation_function]

        def f32(name):
            return state[name].detach().to(device=device, dtype=torch.float32)

        def lin(name):  # Conv1D stores [in, out]; F.linear wants [out, in]
            weight = state[f"{name}.weight"].detach().t()
            return weight.to(device=device, dtype=dtype).contiguous(), (
                state[f"{name}.bias"].detach().to(device=device, dtype=dtype)
            )

        self.wte, self.wpe = f32("wte.weight"), f32("wpe.weight")
        head_dim = cfg.n_embd // cfg.n_head
        self.layers = []
        for i in range(cfg.n_layer):
            scale = head_dim**-0.5 if cfg.scale_attn_weights else 1.0
            if cfg.scale_attn_by_inverse_layer_idx:
                scale /= i + 1
            h = f"h.{i}"
            self.layers.append(
                (
                    (f32(f"{h}.ln_1.weight"), f32(f"{h}.ln_1.bias")),
                    lin(f"{h}.attn.c_attn"),
                    lin(f"{h}.attn.c_proj"),
                    (f32(f"{h}.ln_2.weight"), f32(f"{h}.ln_2.bias")),
                    lin(f"{h}.mlp.c_fc"),
                    lin(f"{h}.mlp.c_proj"),
                    scale,
                )
            )
        self.ln_f = (f32("ln_f.weight"), f32("ln_f.bias"))
        self.weight, self.bias = _output_matrix(state["lm_head.weight"], None, dtype, device)
        self._fc_gelu = fused_fc_gelu(self.gelu, dtype, device) or self._fc_gelu_plain
        self._pre_attn, self._post_attn = self._pre_attn_eager, self._post_attn_eager
        self._lse = blocked_lse
        if compile_layers:
            self._pre_attn = torch.compile(self._pre_attn_eager, dynamic=True)
            # Inductor fuses the activation itself, from plain ops.
            self._fc_gelu = self._fc_gelu_plain
            self._post_attn = torch.compile(self._post_attn_eager, dynamic=True)
            self._lse = torch.compile(_chunk_lse, dynamic=True)

    def take_batch(self, pieces, i: int, budget: int):
        return take_packed(pieces, i, budget, self.device)

    def run(self, batch):
        packed = Packed.of(batch, self.device)
        ids, pos, hid, groups = packed.ids, packed.positions, packed.hidden_rows, packed.groups
        x = self.wte[ids] + self.wpe[pos]
        for layer in self.layers:
            x = self._layer(x, layer, groups)
        h = F.layer_norm(x[hid], x.shape[-1:], *self.ln_f, self.eps).to(self.dtype)
        return packed.owners, head_nll(h, packed.targets, self.weight, self.bias, self._lse)

    def _layer(self, x, layer, groups):
        ln1, qkv, out, ln2, fc, proj, scale = layer
        qkv = self._pre_attn(x, ln1, qkv)
        att = torch.empty(x.shape, dtype=self.dtype, device=x.device)
        for off, n, count in groups:
            span = slice(off, off + n * count)
            q, k, v = qkv[span].view(count, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
            att[span] = a.transpose(1, 2).reshape(n * count, -1)
        return self._post_attn(x, att, out, ln2, fc, proj)

    def _pre_attn_eager(self, x, ln1, qkv):
        return F.linear(F.layer_norm(x, x.shape[-1:], *ln1, self.eps).to(self.dtype), *qkv)

    def _post_attn_eager(self, x, att, out, ln2, fc, proj):
        x = x + F.linear(att, *out)
        h = F.layer_norm(x, x.shape[-1:], *ln2, self.eps).to(self.dtype)
        return x + F.linear(self._fc_gelu(h, *fc), *proj)

    def _fc_gelu_plain(self, h, weight, bias):
        return F.gelu(F.linear(h, weight, bias), approximate=self.gelu)


class _HfPacked:
    """The model's own layers on windows packed back to back; only attention is done here.

    Linear layers, norms and rotary embeddings are transformers' code, run on one [1, tokens] row
    with positions restarting in every window; the attention they call is `packed_attention`
    (registered with transformers' attention interface), one causal SDPA per run of equal-length
    windows, which is exactly what the model computes for a lone window. Model types are listed
    only once tested against the one-window oracle (tests/test_engine.py).
    """

    MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gpt_neox")
    ATTENTION = "infoprune_packed"

    @classmethod
    def supports(cls, model, window: int) -> bool:
        cfg = model.config
        sliding = getattr(cfg, "sliding_window", None)
        if getattr(cfg, "use_sliding_window", True) is False:
            sliding = None
        return (
            getattr(cfg, "model_type", None) in cls.MODEL_TYPES
            and not (sliding and sliding < window)
            and model.base_model is not model
            and isinstance(model.get_output_embeddings(), torch.nn.Linear)
        )

    def __init__(self, model, dtype: torch.dtype, device: str):
        from transformers import AttentionInterface

        AttentionInterface.register(self.ATTENTION, packed_attention)
        # A copy: the attention implementation is switched on it, the caller's model keeps its own.
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
        model.set_attn_implementation(self.ATTENTION)
        self.base = model.base_model
        self.device = device
        head = model.get_output_embeddings()
        self.weight, self.bias = _output_matrix(head.weight, head.bias, dtype, device)

    def take_batch(self, pieces, i: int, budget: int):
        return take_packed(pieces, i, budget, self.device)

    def run(self, batch):
        packed = Packed.of(batch, self.device)
        out = self.base(
            input_ids=packed.ids[None],
            position_ids=packed.positions[None],
            use_cache=False,
            packed_groups=packed.groups,
        )
        h = out[0][0][packed.hidden_rows]
        return packed.owners, head_nll(h, packed.targets, self.weight, self.bias)


def packed_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """transformers' attention-function contract for one packed row: QUERY [1, heads, tokens,
    dim], KEY and VALUE with as many or fewer (grouped) heads; returns [1, tokens, heads, dim]."""
    groups = kwargs.get("packed_groups")
    if groups is None:
        raise RuntimeError("packed_attention needs packed_groups: use it through core.engine")
    heads = query.shape[1]
    out = query.new_empty(1, query.shape[2], heads, value.shape[-1])
    for off, n, count in groups:
        span = slice(off, off + n * count)
        q, k, v = (
            t[0, :, span].unflatten(1, (count, n)).transpose(0, 1) for t in (query, key, value)
        )
        a = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scaling, enable_gqa=k.shape[1] != heads
        )
        out[0, span] = a.transpose(1, 2).flatten(0, 1)
    return out, None


def fused_fc_gelu(approximate: str, dtype: torch.dtype, device: str):
    """oneDNN's linear with GELU as a post-op, where this torch build has it, else None.

    Eager bf16 tanh-GELU alone took longer than the GEMM before it (10.8 against 8.4 ms at
    GPT-2's [4096, 768] x [768, 3072]); fused, both take 13.9 ms. A trial call must match the
    plain ops before the fused one is trusted.
    """
    if device != "cpu" or dtype == torch.float16:
        return None
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None:
        return None

    def fused(h, weight, bias):
        return op(h, weight, bias, "gelu", [], approximate)

    g = torch.Generator().manual_seed(0)
    h, w, b = (torch.randn(*shape, generator=g).to(dtype) for shape in ((8, 16), (32, 16), (32,)))
    try:
        got = fused(h, w, b).float()
    except (RuntimeError, NotImplementedError):
        return None
    want = F.gelu(F.linear(h.float(), w.float(), b.float()), approximate=approximate)
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    return fused if torch.allclose(got, want, rtol=tol, atol=tol) else None
