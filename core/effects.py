"""What a validation found: each arm against its random arm, with an honest interval.

Computed from the bits of every evaluation document under every arm (`validation_doc_bits`),
so the same numbers come out overall, per evaluation set (the in-distribution held-out set and the
user's target) and per group of a metadata column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.store import Store
from core.validation_spec import RANDOM_PARTNER

HELDOUT, TARGET = "heldout", "target"  # the evaluation sets: in-distribution, the user's target
BOOTSTRAP = 2000  # resamples of the evaluation documents for an effect's interval

EFFECT_COLUMNS = [
    "eval_set",
    "group",
    "arm",
    "ratio",
    "seeds",
    "docs",
    "minus_random",
    "ci_low",
    "ci_high",
    "detectable",
    "verdict",
]
NO_DIFFERENCE = "no detectable difference"


def effects(
    store: Store, validation_id: str, by_group: bool = False, n_boot: int = BOOTSTRAP
) -> pd.DataFrame:
    """Each arm's effect against its random partner (bits/token, paired by seed), with a 95 %
    bootstrap interval over seeds and evaluation documents, per evaluation set (and per group).

    The estimate is the mean over seeds of (Σbits(arm) − Σbits(random)) / Σtokens over the same
    documents. Each resample draws the seeds with replacement and, independently, the documents
    with replacement (the same documents for every drawn seed and both arms), so the interval
    covers both which documents were held out and how training runs vary with the seed; with one
    seed it covers the documents only (say so: `seeds` is in the table). `detectable` is the
    smallest difference this set could have told from 0 (2.8 bootstrap standard errors: 80 %
    power at the 5 % level). An interval containing 0 is NO_DIFFERENCE.
    """
    bits = store.query_df(
        "SELECT b.eval_set, b.arm, coalesce(b.ratio, -1.0) AS ratio, b.seed, b.doc, b.bits, "
        "b.tokens, d.grp FROM validation_doc_bits b LEFT JOIN validation_eval_docs d "
        "ON d.validation_id = b.validation_id AND d.eval_set = b.eval_set AND d.doc = b.doc "
        "WHERE b.validation_id = ?",
        [validation_id],
    )
    rows = []
    rng = np.random.default_rng(0)
    for eval_set, part in bits.groupby("eval_set", sort=False):
        docs = part.groupby("doc")["grp"].first().sort_index()
        slices = [(None, docs.index.to_numpy())]
        if by_group:
            slices += [
                (g, docs.index[docs.to_numpy() == g].to_numpy())
                for g in sorted(docs.dropna().unique())
            ]
        for arm, partner in RANDOM_PARTNER.items():
            for ratio in sorted(part.loc[part["arm"] == arm, "ratio"].unique()):
                paired = _paired(part, arm, partner, ratio)
                if paired is None:
                    continue
                diff, tokens = paired  # (seeds x docs) bits differences, tokens per doc
                for group, doc_ids in slices:
                    rows.append(
                        {
                            "eval_set": eval_set,
                            "group": group,
                            "arm": arm,
                            "ratio": None if ratio < 0 else float(ratio),
                            "seeds": diff.shape[0],
                            "docs": len(doc_ids),
                            **_interval(diff[:, doc_ids], tokens[doc_ids], n_boot, rng),
                        }
                    )
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def _paired(part: pd.DataFrame, arm: str, partner: str, ratio: float):
    """(bits of ARM − bits of PARTNER per seed and document, tokens per document), over the
    seeds where both finished; None when none did."""
    wide = part[part["ratio"] == ratio].pivot_table(
        index=["seed", "doc"], columns="arm", values="bits"
    )
    if arm not in wide or partner not in wide:
        return None
    both = (wide[arm] - wide[partner]).dropna().unstack("doc")
    both = both.dropna()  # seeds with every document evaluated under both arms
    if both.empty:
        return None
    tokens = part.groupby("doc")["tokens"].first().reindex(both.columns).to_numpy(dtype=float)
    return both.to_numpy(dtype=float), tokens


def _interval(diff: np.ndarray, tokens: np.ndarray, n_boot: int, rng) -> dict:
    if diff.shape[1] == 0 or tokens.sum() <= 0:
        return {
            "minus_random": None,
            "ci_low": None,
            "ci_high": None,
            "detectable": None,
            "verdict": NO_DIFFERENCE,
        }
    n_seeds, n_docs = diff.shape
    estimate = diff.mean(axis=0).sum() / tokens.sum()
    doc_draws = rng.multinomial(n_docs, np.full(n_docs, 1 / n_docs), size=n_boot)  # B x D
    seed_draws = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot) / n_seeds
    per_seed = (doc_draws @ diff.T) / np.maximum(doc_draws @ tokens, 1e-9)[:, None]  # B x S
    boot = (per_seed * seed_draws).sum(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    verdict = NO_DIFFERENCE
    if high < 0:
        verdict = "better than random"
    elif low > 0:
        verdict = "worse than random"
    return {
        "minus_random": float(estimate),
        "ci_low": float(low),
        "ci_high": float(high),
        "detectable": float(2.8 * boot.std(ddof=1)),
        "verdict": verdict,
    }


def format_effects(table: pd.DataFrame) -> str:
    """The effects as the CLI prints them."""
    lines = [
        f"{'set':<8} {'group':<22} {'arm':<12} {'ratio':>5} {'docs':>5} "
        f"{'minus random':>12} {'95% interval':>21} {'detectable':>10}  verdict"
    ]
    for r in table.itertuples():
        ratio = "" if r.ratio is None or pd.isna(r.ratio) else f"{r.ratio:g}"
        group = "(all)" if r.group is None or pd.isna(r.group) else str(r.group)[:22]
        if r.minus_random is None or pd.isna(r.minus_random):
            numbers = f"{'':>12} {'':>21} {'':>10}"
        else:
            interval = f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
            numbers = f"{r.minus_random:>+12.4f} {interval:>21} {r.detectable:>10.4f}"
        lines.append(
            f"{r.eval_set:<8} {group:<22} {r.arm:<12} {ratio:>5} {r.docs:>5} {numbers}  {r.verdict}"
        )
    return "\n".join(lines)
