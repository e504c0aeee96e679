"""GPU check of core.engine in one command: exactness, tokens/s, memory, out-of-memory halving.

    .venv/bin/python benchmarks/gpu_check.py [--device auto|cuda|cpu] [--quick] [--json PATH]

Needs no network: GPT-2 small's shape with seeded random weights and the shipped probe
(sample_data/probe), both fed the probe's tokenizer and texts of sample_data/corpus.parquet.
Without CUDA (or with --quick) both shrink to a smoke size of seconds: the CI test. Prints PASS,
FAIL or SKIP per check and a markdown table; exit status 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import sys
import time
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.score_throughput import flop_params, load_texts  # noqa: E402
from core.devices import resolve_device  # noqa: E402
from core.engine import EngineSettings, Scorer, naive_score  # noqa: E402
from core.errors import InputError, first_line  # noqa: E402
from core.models import load_model  # noqa: E402
from core.windows import plan_windows  # noqa: E402

FP32_MAX_REL = 1e-4  # float32 engine against the one-document loop, per document
BF16_MEAN_REL = 1e-3  # bfloat16 engine against the float32 loop, mean over documents
GOAL_TOKENS_PER_S = 1_000_000  # GPT-2 small on one H100-class GPU (issue #17)
GPT2_VOCAB = 50257
MAX_RETRIES = 64  # injected out-of-memory errors before the engine is deemed not to halve


@dataclass(frozen=True)
class Size:
    gpt2: dict  # GPT2Config shape
    docs: int  # documents timed
    check_docs: int  # documents checked against the loop, spread over lengths
    budgets: tuple[int, ...]  # token budgets per batch


FULL = Size(
    gpt2={"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024},
    docs=2000,
    check_docs=48,
    budgets=(1024, 4096, 16384, 65536),
)
SMOKE = Size(
    gpt2={"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 128},
    docs=16,
    check_docs=8,
    budgets=(256, 1024, 4096),
)


@dataclass(frozen=True)
class Setup:
    device: str
    meter: Meter
    tokenizer: object
    budgets: tuple[int, ...]
    compile_layers: bool


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str
    values: dict = field(default_factory=dict)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


class Meter:
    """Peak memory of a span: CUDA's allocator statistics, else the process's peak RSS."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.kind = "max_memory_allocated" if self.cuda else "peak RSS of the process"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def reset(self) -> None:
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return
        with suppress(OSError):  # Linux: "5" resets the peak RSS (VmHWM) to the current RSS
            Path("/proc/self/clear_refs").write_text("5")

    def current(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else self._status("VmRSS")

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated() if self.cuda else self._status("VmHWM")

    @staticmethod
    def _status(key: str) -> int:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ForwardSpy:
    """Stands in for a Scorer's `path.run`: records each batch's tokens (and peak memory on CUDA),
    raises an out-of-memory error for any batch over LIMIT tokens, counts real ones passing."""

    def __init__(self, run, limit: int | None, cuda: bool):
        self.inner, self.limit, self.cuda = run, limit, cuda
        self.ran: list[int] = []  # tokens of each batch computed
        self.peaks: list[int] = []  # allocated bytes at the peak of each (CUDA only)
        self.injected: list[int] = []  # tokens of each batch refused
        self.real: list[int] = []  # tokens of each batch that ran out of memory for real

    def __call__(self, batch):
        tokens = sum(len(window) for _, window, _ in batch)
        if self.limit is not None and tokens > self.limit:
            self.injected.append(tokens)
            if len(self.injected) > MAX_RETRIES:
                raise RuntimeError(
                    f"{MAX_RETRIES} out-of-memory errors and the batch is still over "
                    f"{self.limit} tokens: the engine does not halve it"
                )
            raise torch.OutOfMemoryError(f"injected: batch of {tokens} > {self.limit} tokens")
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            out = self.inner(batch)
        except torch.OutOfMemoryError:
            self.real.append(tokens)
            raise
        self.ran.append(tokens)
        if self.cuda:
            self.peaks.append(torch.cuda.max_memory_allocated())
        return out


@contextmanager
def spying(scorer: Scorer, limit: int | None = None):
    spy = ForwardSpy(scorer.path.run, limit, scorer.device.startswith("cuda"))
    scorer.path.run = spy
    try:
        yield spy
    finally:
        del scorer.path.run  # the class's method again


def rel_diffs(got, ref) -> list[float] | None:
    """|got - ref| / ref per document with tokens; None when the token counts differ."""
    if [g.n_tokens for g in got] != [r.n_tokens for r in ref]:
        return None
    pairs = zip(got, ref, strict=True)
    return [abs(g.bits_total - r.bits_total) / r.bits_total for g, r in pairs if r.n_tokens]


def spread(texts: list[str], k: int) -> list[str]:
    """K texts evenly spaced by length, the shortest and the longest included, in corpus order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    picks = {order[round(j * (len(order) - 1) / max(k - 1, 1))] for j in range(k)}
    return [texts[i] for i in sorted(picks)]


def check_exactness(setup: Setup, name, model, texts) -> tuple[list[Check], Scorer]:
    """float32 engine = the one-document loop; bfloat16 close to it. Returns the float32 scorer."""
    tokenizer, budget = setup.tokenizer, max(setup.budgets)
    settings = EngineSettings(max_batch_tokens=budget, dtype="float32", device=setup.device)
    fp32 = Scorer(model, tokenizer, settings)
    w, s = fp32.window, fp32.stride
    seqs = fp32.tokenize(texts)
    windows = [len(plan_windows(len(q), w, s)) for q in seqs]
    scope = (
        f"{len(texts)} docs, {sum(len(q) for q in seqs):,} tokens, {sum(windows)} windows "
        f"of {w}/{s} (up to {max(windows)} per doc)"
    )
    ref = [naive_score(model, tokenizer, t, w, s) for t in texts]
    checks = []
    rel = rel_diffs(fp32.score_texts(texts), ref)
    if rel is None:
        checks.append(Check(f"{name}: float32 engine = loop", "FAIL", "token counts differ"))
    else:
        checks.append(
            Check(
                f"{name}: float32 engine = loop",
                verdict(max(rel) <= FP32_MAX_REL),
                f"max rel. diff {max(rel):.1e} (bound {FP32_MAX_REL:.0e}); {scope}",
                {"max_rel": max(rel), "bound": FP32_MAX_REL},
            )
        )
    settings = EngineSettings(max_batch_tokens=budget, dtype="bfloat16", device=setup.device)
    bf16 = Scorer(model, tokenizer, settings)
    rel = rel_diffs(bf16.score_texts(texts), ref)
    del bf16
    if rel is None:
        checks.append(Check(f"{name}: bfloat16 ~ float32", "FAIL", "token counts differ"))
    else:
        mean = sum(rel) / len(rel)
        checks.append(
            Check(
                f"{name}: bfloat16 ~ float32",
                verdict(mean <= BF16_MEAN_REL),
                f"mean rel. diff {mean:.1e} (bound {BF16_MEAN_REL:.0e}), max {max(rel):.1e}",
                {"mean_rel": mean, "max_rel": max(rel), "bound": BF16_MEAN_REL},
            )
        )
    return checks, fp32


def check_halving(name, scorer: Scorer, seqs) -> list[Check]:
    """An out-of-memory error for every batch over a quarter of the largest: the engine must halve
    its budget until batches fit, and score as if undisturbed. On CUDA, then a real one."""
    nominal = scorer.budget  # the engine keeps a halved budget: each check starts from this
    with spying(scorer) as calm:
        want = scorer.score_sequences(seqs)
    longest = max(min(len(q), scorer.window) for q in seqs)
    limit = max(max(calm.ran) // 4, longest)
    title = f"{name}: out-of-memory halving (injected)"
    if limit >= max(calm.ran):
        return [Check(title, "SKIP", f"batches never exceed one window ({limit} tokens)")]
    try:
        with spying(scorer, limit) as spy:
            got = scorer.score_sequences(seqs)
    except torch.OutOfMemoryError as exc:
        return [Check(title, "FAIL", f"the engine let it through: {first_line(exc)}")]
    except RuntimeError as exc:
        return [Check(title, "FAIL", first_line(exc))]
    rel = rel_diffs(got, want)
    ok = bool(spy.injected) and rel is not None and max(rel, default=0.0) <= FP32_MAX_REL
    checks = [
        Check(
            title,
            verdict(ok),
            f"{len(spy.injected)} errors at batches of {sorted(set(spy.injected))} tokens, then "
            f"batches of <= {max(spy.ran)} (limit {limit}, undisturbed up to {max(calm.ran)}); "
            f"max rel. diff {max(rel or [float('nan')]):.1e} from the undisturbed run",
            {
                "injected": spy.injected,
                "limit": limit,
                "largest_batch_before": max(calm.ran),
                "largest_batch_after": max(spy.ran),
                "max_rel": max(rel or [float("nan")]),
            },
        )
    ]
    scorer.budget = nominal
    if calm.peaks:
        checks.append(check_real_oom(name, scorer, seqs, want, calm))
        scorer.budget = nominal
    return checks


def check_real_oom(name, scorer: Scorer, seqs, want, calm: ForwardSpy) -> Check:
    """The allocator capped halfway between the peaks of one window and of the largest batch: a
    real out-of-memory error, which the engine must survive with the same scores."""
    title = f"{name}: out-of-memory halving (real, memory capped)"
    one = [p for p, n in zip(calm.peaks, calm.ran, strict=True) if n <= scorer.window]
    small, large = max(one, default=0), max(calm.peaks)
    if not one:
        return Check(title, "SKIP", "no batch of one window to set the cap from")
    if large - small < 16 * 2**20:
        return Check(title, "SKIP", "the largest batch needs < 16 MiB more than one window")
    cap = small + (large - small) // 2
    device = torch.device(scorer.device)
    total = torch.cuda.get_device_properties(device).total_memory
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(cap / total, device)
    try:
        with spying(scorer) as spy:
            got = scorer.score_sequences(seqs)
    except RuntimeError as exc:  # an out-of-memory error at one window included
        return Check(title, "FAIL", f"cap {cap / 2**20:.0f} MiB: {first_line(exc)}")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
    values = {"cap_bytes": cap, "real": spy.real, "largest_batch_after": max(spy.ran)}
    if not spy.real:
        return Check(title, "SKIP", f"no out-of-memory error at a cap of {cap / 2**20:.0f} MiB")
    rel = rel_diffs(got, want)
    values["max_rel"] = max(rel or [float("nan")])
    return Check(
        title,
        verdict(rel is not None and max(rel, default=0.0) <= FP32_MAX_REL),
        f"cap {cap / 2**20:.0f} MiB: {len(spy.real)} errors at batches of "
        f"{sorted(set(spy.real))} tokens, then <= {max(spy.ran)}; "
        f"max rel. diff {values['max_rel']:.1e} from the uncapped run",
        values,
    )


def measure(setup: Setup, name, model, seqs) -> list[dict]:
    """Tokens/s and peak memory of score_sequences (tokenised input) per budget, dtype auto."""
    rows, meter = [], setup.meter
    n_tok = sum(max(len(q) - 1, 0) for q in seqs)
    n_params = flop_params(model)
    for budget in setup.budgets:
        meter.free()
        settings = EngineSettings(
            max_batch_tokens=budget, device=setup.device, compile=setup.compile_layers
        )
        scorer = Scorer(model, setup.tokenizer, settings)
        scorer.score_sequences(seqs[:8])  # kernels built (and compiled) outside the timing
        meter.reset()
        resident = meter.current()
        t = time.perf_counter()
        scorer.score_sequences(seqs)
        meter.sync()
        seconds = time.perf_counter() - t
        rows.append(
            {
                "model": name,
                "params": n_params,
                "dtype": scorer.dtype,
                "path": scorer.path_name,
                "window": f"{scorer.window}/{scorer.stride}",
                "budget": budget,
                "docs": len(seqs),
                "tokens": n_tok,
                "seconds": seconds,
                "tokens_per_s": n_tok / seconds,
                "gflop_per_s": 2 * n_params * n_tok / seconds / 1e9,
                "resident_bytes": resident,
                "peak_bytes": meter.peak(),
            }
        )
        r = rows[-1]
        print(f"  {name} budget {budget:>6}: {r['tokens_per_s']:>12,.0f} tok/s", flush=True)
        del scorer
    meter.free()
    return rows


def print_table(rows: list[dict], meter: Meter) -> None:
    mem = "MiB allocated" if meter.cuda else "MiB RSS"
    print(
        "\n| model | N | dtype | path | W/S | budget | docs | tokens | s | tok/s | GFLOP/s"
        f" | resident {mem} | peak {mem} |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['dtype']} | {r['path']} |"
            f" {r['window']} | {r['budget']:,} | {r['docs']} | {r['tokens']:,} |"
            f" {r['seconds']:.2f} | {r['tokens_per_s']:,.0f} | {r['gflop_per_s']:,.0f} |"
            f" {r['resident_bytes'] / 2**20:,.0f} | {r['peak_bytes'] / 2**20:,.0f} |"
        )


def machine(device: str) -> str:
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(device)
        return f"{p.name}, {p.total_memory / 2**30:.0f} GiB"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                threads = torch.get_num_threads()
                name = line.split(":", 1)[1].strip()
                return f"CPU {name}, {threads} thread{'s' if threads > 1 else ''}"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()}"


def main() -> int:
    start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto|cuda|cuda:N|cpu (default auto)")
    ap.add_argument("--quick", action="store_true", help="the smoke size (always on without CUDA)")
    ap.add_argument("--budgets", type=int, nargs="+", help="token budgets per batch to time")
    ap.add_argument("--docs", type=int, help="documents to time")
    ap.add_argument("--check-docs", type=int, help="documents checked against the loop")
    ap.add_argument("--compile", action="store_true", help="torch.compile the engine's layers")
    ap.add_argument("--corpus", default=str(ROOT / "sample_data" / "corpus.parquet"))
    ap.add_argument("--probe", default=str(ROOT / "sample_data" / "probe"))
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()
    try:
        device = resolve_device(args.device)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meter = Meter(device)
    if meter.cuda:
        torch.cuda.set_device(device)  # the memory statistics below read the current device
    else:  # smoke-size matmuls gain nothing from threads, and OpenMP stalls on a busy machine
        torch.set_num_threads(1)
    quick = args.quick or not meter.cuda
    size = SMOKE if quick else FULL
    docs = args.docs or size.docs
    print(f"device {device} ({machine(device)}), torch {torch.__version__}")
    if quick:
        why = "--quick" if args.quick else "no CUDA device"
        print(
            f"{why}: SMOKE SIZE — GPT-2 shape shrunk to {size.gpt2}, {docs} documents;"
            " its figures are not GPU figures"
        )

    texts, _ = load_texts(args.corpus, docs)
    probe = load_model(args.probe)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=GPT2_VOCAB, **size.gpt2)).eval()
    gpt2_name = "GPT-2 tiny (random)" if quick else "GPT-2 small shape (random)"
    models = {gpt2_name: gpt2, "probe (trained)": probe.model}
    # The probe's tokenizer for both: its ids (< 8,192) are valid for GPT-2's 50,257 too.
    setup = Setup(device, meter, probe.tokenizer, tuple(args.budgets or size.budgets), args.compile)
    check_texts = spread(texts, args.check_docs or size.check_docs)

    checks: list[Check] = []
    for name, model in models.items():
        print(f"[{time.perf_counter() - start:5.1f} s] checking {name} ...", flush=True)
        model.to(device)
        found, fp32 = check_exactness(setup, name, model, check_texts)
        checks += found
        if model is gpt2:
            checks += check_halving(name, fp32, fp32.tokenize(check_texts))
        del fp32
        model.to("cpu")  # resident memory below is the engine's own
        meter.free()

    print(f"[{time.perf_counter() - start:5.1f} s] timing ...", flush=True)
    tokenizing = Scorer(probe.model, probe.tokenizer, EngineSettings(device="cpu"))
    tokenizing.tokenize(texts[:8])
    t = time.perf_counter()
    seqs = tokenizing.tokenize(texts)
    tokenize_rate = sum(len(q) for q in seqs) / (time.perf_counter() - t)
    rows = []
    for name, model in models.items():
        rows += measure(setup, name, model, seqs)

    print()
    for c in checks:
        print(f"{c.status}  {c.name}: {c.detail}")
    print_table(rows, meter)
    print(f"\nmemory: {meter.kind}; tokenizer (one batched call): {tokenize_rate:,.0f} tok/s")
    if not quick:
        best = max((r for r in rows if r["model"] == gpt2_name), key=lambda r: r["tokens_per_s"])
        met = "met" if best["tokens_per_s"] >= GOAL_TOKENS_PER_S else "NOT met"
        print(
            f"goal >= {GOAL_TOKENS_PER_S:,} tok/s for GPT-2 small: {met}"
            f" (best {best['tokens_per_s']:,.0f} at budget {best['budget']:,})"
        )
    failed = [c for c in checks if c.status == "FAIL"]
    print(
        f"\n{'FAIL' if failed else 'PASS'}: {len(checks) - len(failed)} of {len(checks)}"
        f" checks passed or skipped ({time.perf_counter() - start:.0f} s)"
    )
    if args.json:
        out = {
            "device": device,
            "machine": machine(device),
            "torch": torch.__version__,
            "quick": quick,
            "memory": meter.kind,
            "tokenizer_tokens_per_s": tokenize_rate,
            "checks": [asdict(c) for c in checks],
            "throughput": rows,
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
