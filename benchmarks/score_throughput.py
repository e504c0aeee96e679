"""Scoring throughput: the one-sample fp32 loop against core.engine, side by side in one process.

Run by hand (a few minutes on 2 cores); prints a markdown table:

    .venv/bin/python benchmarks/score_throughput.py --gpt2-vocab /tmp/gpt2vocab/package

Run-to-run spread on a small VM is 10-15 %, which is why both sides run in the same process.

`--whole-cli` measures what a user waits for instead: `infoprune score` as a subprocess on a
fresh store of the corpus's first `--cli-docs` documents (start-up, model load, reading, scoring,
writing and the duplicates pass included), per model and dtype, against the one-document float32
loop on the same documents, alternating variant by variant; and the time from the command's start
to its first committed batch (its progress bar, read through a pseudo-terminal).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import resource
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.engine import EngineSettings, Scorer, naive_score  # noqa: E402

EOT = "<|endoftext|>"


def load_texts(corpus: str | None, n_docs: int) -> tuple[list[str], str]:
    """Documents from a parquet `text` column, else sections of the Python docs."""
    if corpus and Path(corpus).exists():
        import pyarrow.parquet as pq

        texts = pq.read_table(corpus, columns=["text"]).column("text").to_pylist()
        return [t for t in texts if t][:n_docs], corpus
    docs = []
    for path in sorted(Path("/usr/share/doc/python3.11").rglob("*.rst.txt")):
        section: list[str] = []
        for para in path.read_text(errors="replace").split("\n\n"):
            section.append(para)
            if sum(map(len, section)) > 1500:
                docs.append("\n\n".join(section))
                section = []
    if not docs:
        raise SystemExit("no corpus: pass --corpus a parquet file with a `text` column")
    # Every k-th section, so the sample spans many files rather than the first few.
    step = max(len(docs) // n_docs, 1)
    return docs[::step][:n_docs], "python3.11 docs sections"


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT)


def bpe_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return wrap(tok)


def gpt2_tokenizer(vocab_dir: str | None, texts: list[str]) -> tuple[PreTrainedTokenizerFast, str]:
    if vocab_dir:
        d = Path(vocab_dir)
        tok = Tokenizer(models.BPE.from_file(str(d / "encoder.json"), str(d / "vocab.bpe")))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return wrap(tok), "GPT-2 BPE"
    return bpe_tokenizer(texts, 50257), "BPE 50257 trained on the texts"


def matmul_peak(dtype: torch.dtype, n: int = 2048, trials: int = 6) -> float:
    """Best of several timed 2048^2 GEMMs, after a second of warm-up (clocks, thread pool)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t = time.perf_counter()
    while time.perf_counter() - t < 1.0:
        a @ b
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * n**3 / best


def flop_params(model) -> int:
    """N of the 2N-FLOP-per-token rule: every weight used in a matmul, the (tied) head once."""
    n = sum(p.numel() for p in model.parameters())
    pos = getattr(getattr(model, "transformer", None), "wpe", None)
    return n - (pos.weight.numel() if pos is not None else 0)


def rounds(texts, tokenizer, max_tokens, round_tokens):
    """The first max_tokens tokens' worth of texts, in rounds of about round_tokens."""
    out, cur, total, in_round = [], [], 0, 0
    for t in texts:
        n = len(tokenizer(t, add_special_tokens=False, verbose=False).input_ids)
        if total + n > max_tokens:
            break
        cur.append(t)
        total, in_round = total + n, in_round + n
        if in_round >= round_tokens:
            out.append(cur)
            cur, in_round = [], 0
    return out + ([cur] if cur else [])


def bench(name, model, tokenizer, texts, args):
    """Naive loop and engine(s) alternate round by round, so load from elsewhere hits all alike."""
    model.eval()
    variants = {"engine": False} | ({"engine, compiled": True} if args.compile else {})
    scorers, warm = {}, {}
    for label, compile_layers in variants.items():
        settings = EngineSettings(
            window=args.window, max_batch_tokens=args.batch_tokens, compile=compile_layers
        )
        t = time.perf_counter()
        scorers[label] = Scorer(model, tokenizer, settings)
        # First calls build oneDNN kernels (and compile); time them apart.
        scorers[label].score_texts(texts[0][:8])
        warm[label] = time.perf_counter() - t
    w, s = scorers["engine"].window, scorers["engine"].stride
    naive_score(model, tokenizer, texts[0][0], w, s)

    seconds = dict.fromkeys(["naive", *scorers], 0.0)
    ref, got = [], {label: [] for label in scorers}
    for docs in texts:
        t = time.perf_counter()
        ref += [naive_score(model, tokenizer, x, w, s) for x in docs]
        seconds["naive"] += time.perf_counter() - t
        for label, scorer in scorers.items():
            t = time.perf_counter()
            got[label] += scorer.score_texts(docs)
            seconds[label] += time.perf_counter() - t

    n_tok = sum(r.n_tokens for r in ref)
    n_params = flop_params(model)
    rows = []
    for label, scores in got.items():
        assert [g.n_tokens for g in scores] == [r.n_tokens for r in ref]
        pairs = [(g, r) for g, r in zip(scores, ref, strict=True) if r.n_tokens]
        rel = [abs(g.bits_total - r.bits_total) / r.bits_total for g, r in pairs]
        rows.append(
            {
                "model": name,
                "method": f"{label} ({scorers[label].dtype}, {scorers[label].path_name})",
                "params": n_params,
                "docs": len(ref),
                "tokens": n_tok,
                "window": f"{w}/{s}",
                "naive": n_tok / seconds["naive"],
                "engine": n_tok / seconds[label],
                "rel": f"{sum(rel) / len(rel):.1e} / {max(rel):.1e}",
                "warm": warm[label],
            }
        )
    return rows


ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).parent / "infoprune"  # what a user runs
INFOPRUNE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "core.cli"]


def llama_like(probe_dir: str, out_dir: Path) -> Path:
    """A Llama-shaped model the size of the shipped probe (RoPE, RMSNorm, SwiGLU, GQA), random
    weights, with the probe's tokenizer: what a user's Llama-style probe costs to run."""
    probe = AutoModelForCausalLM.from_pretrained(probe_dir)
    c = probe.config
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.n_embd,
        intermediate_size=int(c.n_embd * 8 / 3) // 8 * 8,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        num_key_value_heads=max(c.n_head // 2, 1),
        max_position_embeddings=c.n_positions,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(probe_dir).save_pretrained(out_dir)
    return out_dir


def timed_cli(args: list[str], env: dict) -> tuple[float, float | None, str]:
    """Wall seconds of the whole command, seconds to its first committed batch, its stdout."""
    out_fd, err_fd = pty.openpty()  # stderr a terminal: the progress bar draws every commit
    fcntl.ioctl(err_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # its width
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err_fd, env=env, cwd=ROOT)
    os.close(err_fd)
    first, seen = None, b""
    while True:
        ready, _, _ = select.select([out_fd], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(out_fd, 65536)
            except OSError:
                chunk = b""
            seen = (seen + chunk)[-4096:]
            if first is None and re.search(rb"score:\s+\d+%\|[^\r]*\|\s*[1-9]", seen):
                first = time.perf_counter() - t0
            if not chunk and proc.poll() is not None:
                break
        elif proc.poll() is not None:
            break
    stdout = proc.stdout.read().decode()
    proc.wait()
    os.close(out_fd)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{seen.decode(errors='replace')}")
    return wall, first, stdout


class Loop:
    """The one-document float32 loop (windows as ours) over every k-th document: what an engineer
    gets from ten lines of transformers. Timed right before each command run, side by side."""

    def __init__(self, model_dir: str, texts: list[str], max_tokens: int) -> None:
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.window = min(self.model.config.max_position_embeddings, 1 << 20)
        sizes = [len(self.tok(t, add_special_tokens=False).input_ids) for t in texts]
        self.docs = texts[:: max(sum(sizes) // max_tokens, 1)]
        self.rate()  # warm-up

    def rate(self) -> float:
        w = self.window
        t = time.perf_counter()
        n = sum(naive_score(self.model, self.tok, x, w, w // 2).n_tokens for x in self.docs)
        return n / (time.perf_counter() - t)


def whole_cli(args) -> None:
    import duckdb
    import pyarrow.parquet as pq

    work = Path(tempfile.mkdtemp(prefix="ip-cli-bench-"))
    table = pq.read_table(args.corpus).slice(0, args.cli_docs)
    pq.write_table(table, work / "docs.parquet")
    texts = table.column("text").to_pylist()
    trees = [Path(t).resolve() for t in args.trees.split(",")] if args.trees else [ROOT]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = work / "base.duckdb"
    subprocess.run(
        [*INFOPRUNE, "ingest", str(work / "docs.parquet"), "--name", "docs", "--db", str(base)],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
    )
    models = {"probe (GPT-2, shipped)": args.probe or str(ROOT / "sample_data/probe")}
    if not args.skip_llama:
        models["Llama-shaped, probe size"] = str(
            llama_like(models["probe (GPT-2, shipped)"], work / "llama")
        )
    dtypes = args.cli_dtypes.split(",")
    load_before = os.getloadavg()[0]
    results: dict[tuple[str, str, str], list[tuple[float, float | None, int, float]]] = {}
    loops = {name: Loop(model, texts, args.loop_tokens) for name, model in models.items()}
    for rep in range(args.cli_repeats):
        for name, model in models.items():
            for dtype, tree in [(d, t) for d in dtypes for t in trees]:
                loop = loops[name].rate()
                db = work / f"run-{rep}-{len(results)}.duckdb"
                shutil.copy(base, db)
                wall, first, run_id = timed_cli(
                    [
                        *INFOPRUNE,
                        "score",
                        "--db",
                        str(db),
                        "--dataset",
                        "docs",
                        "--model",
                        model,
                        "--dtype",
                        dtype,
                    ]
                    + (["--compile"] if args.compile else []),
                    {**env, "PYTHONPATH": str(tree)},
                )
                con = duckdb.connect(str(db), read_only=True)
                tokens = con.execute(
                    "SELECT tokens_done FROM runs WHERE run_id = ?", [run_id.strip()]
                ).fetchone()[0]
                con.close()
                db.unlink()
                key = (name, "" if len(trees) == 1 else f", tree {tree.name}", dtype)
                results.setdefault(key, []).append((wall, first, tokens, loop))
    print(
        f"\n{len(texts):,} documents of {args.corpus}; CPU: {cpu_name()}; "
        f"torch {torch.__version__}; load average before / after: "
        f"{load_before:.2f} / {os.getloadavg()[0]:.2f}\n"
    )
    print(
        "| model | dtype | tokens | whole process s | tokens/s, whole process | one-doc fp32 loop"
        " tokens/s | ratio | to first commit s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (name, tree, dtype), runs in results.items():
        wall = sorted(r[0] for r in runs)[len(runs) // 2]
        firsts = [r[1] for r in runs if r[1] is not None]
        first = sorted(firsts)[len(firsts) // 2] if firsts else None
        tokens = runs[0][2]
        loop = median([r[3] for r in runs])
        ratio = median([r[2] / r[0] / r[3] for r in runs])
        print(
            f"| {name}{tree} | {dtype} | {tokens:,} | {wall:.1f} | {tokens / wall:,.0f} | "
            f"{loop:,.0f} | {ratio:.2f}x | "
            f"{'—' if first is None else f'{first:.2f}'} |"
        )
    print(
        f"\nthe loop ran on every k-th document (~{args.loop_tokens:,} tokens) right before each"
        f" command run; ratio = the pair's rates; medians of {args.cli_repeats} run(s) per row"
    )
    shutil.rmtree(work)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="sample_data/corpus.parquet")
    ap.add_argument("--gpt2-vocab", help="folder with GPT-2's encoder.json and vocab.bpe")
    ap.add_argument("--model", help="a trained GPT-2-size model folder instead of random weights")
    ap.add_argument("--probe", help="a trained probe model folder instead of random weights")
    ap.add_argument("--docs", type=int, default=400, help="documents to draw from")
    ap.add_argument("--gpt2-tokens", type=int, default=16000)
    ap.add_argument("--probe-tokens", type=int, default=100000)
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--compile", action="store_true", help="also time the compiled engine")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-gpt2", action="store_true")
    cli = ap.add_argument_group("--whole-cli: the `infoprune score` process against the loop")
    cli.add_argument("--whole-cli", action="store_true")
    cli.add_argument("--cli-docs", type=int, default=2500, help="first N corpus documents")
    cli.add_argument("--cli-dtypes", default="auto,float32")
    cli.add_argument("--cli-repeats", type=int, default=1)
    cli.add_argument("--loop-tokens", type=int, default=60000, help="tokens per loop timing")
    cli.add_argument("--skip-llama", action="store_true")
    cli.add_argument(
        "--trees", help="source trees to run the command from, alternating (before,after)"
    )
    args = ap.parse_args()
    if args.whole_cli:
        whole_cli(args)
        return

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    peak_fp32, peak_bf16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    texts, source = load_texts(args.corpus, args.docs)
    rows = []

    if not args.skip_gpt2:
        if args.model:
            model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
            tokenizer, vocab = AutoTokenizer.from_pretrained(args.model), args.model
            name = f"{Path(args.model).name} (trained)"
        else:
            tokenizer, vocab = gpt2_tokenizer(args.gpt2_vocab, texts)
            model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer)))
            name = "GPT-2 small (random)"
        docs = rounds(texts, tokenizer, args.gpt2_tokens, 4096)
        rows += bench(f"{name}, {vocab}", model, tokenizer, docs, args)
        del model

    if args.probe:
        model = AutoModelForCausalLM.from_pretrained(args.probe, dtype=torch.float32)
        tokenizer, name = AutoTokenizer.from_pretrained(args.probe), Path(args.probe).name
    else:
        tokenizer = bpe_tokenizer(texts, 8192)
        cfg = GPT2Config(
            vocab_size=len(tokenizer), n_layer=4, n_embd=256, n_head=4, n_positions=512
        )
        model, name = GPT2LMHeadModel(cfg), "probe 4x256, V=8192 (random)"
    docs = rounds(texts, tokenizer, args.probe_tokens, 20000)
    rows += bench(name, model, tokenizer, docs, args)
    peak_bf16 = max(peak_bf16, matmul_peak(torch.bfloat16))

    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\ntexts: {source}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"matmul peak 2048^2: fp32 {peak_fp32 / 1e9:.0f}, bf16 {peak_bf16 / 1e9:.0f} GFLOP/s")
    print(f"load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"peak RSS of the whole run: {rss_gb:.2f} GB\n")
    print(
        "| model | method | N | docs | tokens | W/S | naive fp32 tok/s | tok/s | speedup"
        " | % bf16 peak | rel. diff mean / max | warm-up s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        frac = 2 * r["params"] * r["engine"] / peak_bf16
        print(
            f"| {r['model']} | {r['method']} | {r['params'] / 1e6:.1f}M | {r['docs']} |"
            f" {r['tokens']:,} | {r['window']} | {r['naive']:,.0f} | {r['engine']:,.0f} |"
            f" {r['engine'] / r['naive']:.2f}x | {100 * frac:.0f} % | {r['rel']} |"
            f" {r['warm']:.1f} |"
        )


if __name__ == "__main__":
    main()
