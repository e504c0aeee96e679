"""Where a whole `infoprune score` run of the shipped probe spends its time, phase by phase.

Run by hand (a few minutes on 2 cores); prints a markdown table:

    .venv/bin/python benchmarks/score_profile.py --docs 2500

Each phase of the command is timed on its own, one after the other, in this process, on the first
DOCS documents of the sample corpus in a fresh store: the imports (each in a fresh interpreter),
loading the model, reading the dataset, counting its words, tokenising, planning windows,
packing batches, the layers, the head, the model-free measures, writing scores to DuckDB and the
duplicates pass. The command itself overlaps reading and tokenising with the model (a thread), so
its wall time is below the sum; it is timed last, as a subprocess, for comparison.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROBE = ROOT / "sample_data" / "probe"


def import_seconds(statement: str) -> float:
    """Wall seconds of STATEMENT in a fresh interpreter, less the interpreter's own start."""

    def run(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
        return time.perf_counter() - t

    bare = min(run("pass") for _ in range(3))
    return min(run(statement) for _ in range(3)) - bare


class Timer:
    """Seconds per phase, accumulated."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def wrap(self, phase: str, fn):
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(phase, time.perf_counter() - t)

        return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2500)
    ap.add_argument("--model", default=str(PROBE))
    args = ap.parse_args()

    import pyarrow.parquet as pq

    work = Path(tempfile.mkdtemp(prefix="ip-profile-"))
    table = pq.read_table(ROOT / "sample_data" / "corpus.parquet").slice(0, args.docs)
    pq.write_table(table, work / "docs.parquet")
    cli = [str(Path(sys.executable).parent / "infoprune")]
    db = work / "store.duckdb"
    subprocess.run(
        [*cli, "ingest", str(work / "docs.parquet"), "--name", "docs", "--db", str(db)],
        check=True,
        capture_output=True,
    )
    load_before = os.getloadavg()[0]
    rows: list[tuple[str, float]] = [
        ("start-up: Python and the CLI's own modules", import_seconds("import core.cli")),
        ("start-up: torch", import_seconds("import torch")),
        (
            "start-up: everything else the score command imports",
            import_seconds("import core.scoring, core.engine")
            - import_seconds("import torch; import core.cli"),
        ),
    ]

    import pyarrow as pa
    import torch

    import core.engine as engine
    from core.batch_scorer import BatchScorer
    from core.corpus import load_corpus_for
    from core.datasets import get_dataset, read_texts_after
    from core.duplicates import prepare_duplicates
    from core.engine import Packed
    from core.score_options import ScoreOptions
    from core.scoring import insert_scores, measures_for
    from core.store import Store
    from core.windows import plan_windows

    timer = Timer()
    t = time.perf_counter()
    step = BatchScorer(ScoreOptions(model=args.model), measures_for(True))
    timer.add("loading the model (weights, tokenizer, engine set-up)", time.perf_counter() - t)
    scorer = step.scorer
    store = Store(db)
    info = get_dataset(store, "docs")
    t = time.perf_counter()
    corpus = load_corpus_for(store, info, step.measures)
    timer.add("counting the corpus's words (once per dataset content)", time.perf_counter() - t)

    # The forward path's parts, timed where the engine calls them.
    engine.head_nll = timer.wrap(
        "head: vocabulary GEMM, log-sum-exp, target logits", engine.head_nll
    )
    pack = Packed.of
    Packed.of = classmethod(
        lambda cls, batch, device: timer.wrap("packing batches", pack)(batch, device)
    )
    run = scorer.path.run
    scorer.path.run = timer.wrap("forward: layers + head + packing", run)

    last, n_tokens, chunk = -1, 0, 256
    while True:
        t = time.perf_counter()
        got = read_texts_after(store, "docs", last, chunk)
        timer.add("reading texts from the store", time.perf_counter() - t)
        if not got:
            break
        last = got[-1][0]
        texts = [r[2] for r in got]
        t = time.perf_counter()
        seqs = scorer.tokenize(texts)
        timer.add("tokenising", time.perf_counter() - t)
        t = time.perf_counter()
        pieces = [
            (i, s[a:b], f - a)
            for i, s in enumerate(seqs)
            for a, b, f in plan_windows(len(s), scorer.window, scorer.stride)
        ]
        pieces.sort(key=lambda p: len(p[1]), reverse=True)
        timer.add("planning windows", time.perf_counter() - t)
        scores = scorer.score_sequences(seqs)
        n_tokens += sum(s.n_tokens for s in scores)
        t = time.perf_counter()
        scored = step.table(texts, scores, corpus)
        timer.add("model-free measures (word entropy, gzip) and the table", time.perf_counter() - t)
        ids = pa.array([r[1] for r in got], pa.string())
        t = time.perf_counter()
        with store.transaction() as con:
            insert_scores(con, "profile", scored.add_column(0, "sample_id", ids))
        timer.add("writing scores to DuckDB", time.perf_counter() - t)
    t = time.perf_counter()
    prepare_duplicates(store, "docs", info.fingerprint)
    timer.add("duplicates pass (exact and MinHash)", time.perf_counter() - t)

    forward = timer.seconds.pop("forward: layers + head + packing")
    head = timer.seconds["head: vocabulary GEMM, log-sum-exp, target logits"]
    packing = timer.seconds["packing batches"]
    timer.seconds["layers (embeddings, attention, MLP, norms)"] = forward - head - packing
    rows += sorted(timer.seconds.items(), key=lambda kv: -kv[1])

    whole_db = work / "whole.duckdb"
    subprocess.run(
        [*cli, "ingest", str(work / "docs.parquet"), "--name", "docs", "--db", str(whole_db)],
        check=True,
        capture_output=True,
    )
    t = time.perf_counter()
    subprocess.run(
        [*cli, "score", "--db", str(whole_db), "--dataset", "docs", "--model", args.model],
        check=True,
        capture_output=True,
    )
    whole = time.perf_counter() - t

    total = sum(s for _, s in rows)
    print(
        f"\n{args.docs:,} documents, {n_tokens:,} tokens, model {args.model}, dtype "
        f"{scorer.dtype}, path {scorer.path_name}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average before / after: {load_before:.2f} / "
        f"{os.getloadavg()[0]:.2f}\n"
    )
    print("| phase | seconds | share |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {100 * seconds / total:.1f} % |")
    print(f"| **sum of the phases, one after the other** | **{total:.2f}** | 100 % |")
    print(f"| **`infoprune score`, whole process (overlapped)** | **{whole:.2f}** | |")
    print(f"\ntokens per second: {n_tokens / whole:,.0f} whole process")


if __name__ == "__main__":
    main()
