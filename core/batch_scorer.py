"""One scoring step for every driver: a batch of texts in, a table of its scores out.

The local loop (core/scoring.py) builds one per process and each Ray actor one per actor
(core/ray_engine/): the model is loaded once, in the constructor, and `score` / `score_stream`
are all a driver calls. Rows, ids and runs stay with the drivers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

import pyarrow as pa

from core.errors import InputError
from core.measures.base import Batch, Measure, compute_all
from core.scores import get_score

if TYPE_CHECKING:
    from core.corpus import CorpusStats
    from core.engine import SampleScore
    from core.score_options import ScoreOptions

K = TypeVar("K")
_ARROW_TYPES = {"BIGINT": pa.int64(), "DOUBLE": pa.float64()}


class BatchScorer:
    """The model (none for `--model none`) and the measures, ready to score batches.

    MODEL_HASH, when given, is the hash the driver saw: a node whose copy of the weights differs
    refuses to score rather than mix two models in one run.
    """

    def __init__(
        self, opts: ScoreOptions, measures: list[Measure], model_hash: str | None = None
    ) -> None:
        self.measures = measures
        self.scorer = None
        self.model_hash: str | None = None
        self.settings: dict = {}  # the resolved window, stride and dtype: part of a run's key
        self.device = "cpu"
        if opts.model_free:
            return
        from core.engine import EngineSettings, Scorer
        from core.models import load_model

        lm = load_model(opts.model, opts.allow_pickle, opts.trust_remote_code, weights_only=True)
        if model_hash is not None and lm.model_hash != model_hash:
            raise InputError(
                f"the weights of {opts.model} differ on this node (hash {lm.model_hash}, driver "
                f"{model_hash}) — give every node the same model files"
            )
        self.scorer = Scorer(
            lm.model,
            lm.tokenizer,
            EngineSettings(
                window=opts.window,
                stride=opts.stride,
                max_batch_tokens=opts.max_batch_tokens,
                dtype=opts.dtype,
                device=opts.device,
                compile=opts.compile,
            ),
        )
        self.model_hash = lm.model_hash
        self.device = self.scorer.device
        s = self.scorer
        self.settings = {"window": s.window, "stride": s.stride, "dtype": s.dtype}

    def score(self, texts: list[str], corpus: CorpusStats | None = None) -> pa.Table:
        """The scores of TEXTS, one row each, in order; CORPUS is what the measures read."""
        model_scores = self.scorer.score_texts(texts) if self.scorer else None
        return self.table(texts, model_scores, corpus)

    def score_stream(
        self, chunks: Iterable[tuple[K, list[str]]], corpus: CorpusStats | None = None
    ) -> Iterator[tuple[K, pa.Table]]:
        """(key, scores) per (key, texts) chunk; with a model, the next chunk is read and
        tokenised on a thread while this one is computed (the input is advanced from there)."""
        if self.scorer is None:
            for key, texts in chunks:
                yield key, self.table(texts, None, corpus)
            return
        pending: list[tuple[K, list[str]]] = []

        def texts_ahead() -> Iterator[list[str]]:
            for chunk in chunks:
                pending.append(chunk)
                yield chunk[1]

        for model_scores in self.scorer.score_stream(texts_ahead()):
            key, texts = pending.pop(0)
            yield key, self.table(texts, model_scores, corpus)

    def table(
        self, texts: list[str], model_scores: list[SampleScore] | None, corpus: CorpusStats | None
    ) -> pa.Table:
        """One row per text: its size, the model's scores (when given) and every measure."""
        n_bytes = [len(t.encode("utf-8")) for t in texts]
        cols: dict[str, list] = {"n_bytes": n_bytes}
        if model_scores is not None:
            cols["n_tokens"] = [s.n_tokens for s in model_scores]
            cols["bits_total"] = [s.bits_total for s in model_scores]
            cols["bits_per_token"] = [
                s.bits_total / s.n_tokens if s.n_tokens else None for s in model_scores
            ]
            cols["bits_per_byte"] = [
                s.bits_total / b if b else None for s, b in zip(model_scores, n_bytes, strict=True)
            ]
        batch = Batch(texts=texts, n_bytes=n_bytes, model_scores=model_scores)
        cols.update(compute_all(self.measures, batch, corpus))
        return pa.table(
            {c: pa.array(v, type=_ARROW_TYPES[get_score(c).sql_type]) for c, v in cols.items()}
        )
