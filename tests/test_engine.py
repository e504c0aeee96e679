"""The scoring engine against the one-sample float32 oracle, on tiny random models."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from core.engine import EngineSettings, Scorer, naive_score, sequence_for
from core.errors import InputError
from core.windows import plan_windows, positions_per_token

EOT = "<|endoftext|>"
MAX_POS = 64
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Information content is the number of bits an ideal coder spends on a sample.",
    "def score(text): return -sum(log2(q(w)) for w in text)",
    "Redundant boilerplate compresses well; rare facts do not.",
]
TEXTS = [
    "a",  # one token: predicted from the prefix alone
    "",  # nothing to predict
    "fox",
    "The quick brown fox.",
    " ".join(CORPUS),  # several windows
    " ".join(CORPUS * 3) + " Zebra quokka!",  # many windows, bytes unseen in training
    "Information content",
]


def make_tokenizer(**special) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny matmuls gain nothing from threads, and OpenMP barriers stall on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(bos_token=EOT, eos_token=EOT)


def make_model(kind: str, vocab: int):
    torch.manual_seed(0)
    common = {"vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 0}
    if kind.startswith("gpt2"):
        variant = (
            {"activation_function": "gelu", "scale_attn_by_inverse_layer_idx": True}
            if kind == "gpt2-variant"
            else {}
        )
        cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=MAX_POS, **variant, **common)
        model = GPT2LMHeadModel(cfg)
    elif kind == "neox":
        cfg = GPTNeoXConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=MAX_POS,
            **common,
        )
        model = GPTNeoXForCausalLM(cfg)
    elif kind == "qwen2":  # biases on q, k and v; grouped-query attention
        cfg = Qwen2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            intermediate_size=64,
            max_position_embeddings=MAX_POS,
            **common,
        )
        model = Qwen2ForCausalLM(cfg)
    else:
        cfg = LlamaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=MAX_POS,
            **common,
        )
        model = LlamaForCausalLM(cfg)
    # Random init gives near-uniform predictions; larger weights make the scores differ per token.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    return model.eval()


@pytest.fixture(scope="module")
def lms(tokenizer):
    kinds = ("gpt2", "gpt2-variant", "neox", "llama", "qwen2")
    return {k: make_model(k, len(tokenizer)) for k in kinds}


def rel_errors(got, ref):
    assert [g.n_tokens for g in got] == [r.n_tokens for r in ref]
    pairs = zip(got, ref, strict=True)
    return [abs(g.bits_total - r.bits_total) / r.bits_total for g, r in pairs if r.n_tokens]


@pytest.mark.parametrize("n", range(0, 50))
@pytest.mark.parametrize("window,stride", [(16, 8), (16, 16), (16, 5), (2, 1), (7, 3)])
def test_plan_scores_every_position_once_with_max_context(n, window, stride):
    plan = plan_windows(n, window, stride)
    step = min(stride, window - 1)
    scored = [p for start, end, first in plan for p in range(first, end)]
    assert scored == list(range(1, n))
    for k, (start, end, first) in enumerate(plan):
        assert start == k * step and end - start <= window and start < first < end
        # The first window that holds a position is the one with the most context for it.
        assert first - start >= min(first, window - step)


@pytest.mark.parametrize("window,stride", [(16, 8), (16, 16), (16, 5), (2, 1), (7, 3)])
def test_positions_per_token_is_what_the_windows_compute(window, stride):
    predicted = list(range(60))  # a sequence is one longer than what it predicts
    computed = sum(e - s for n in predicted for s, e, _ in plan_windows(n + 1, window, stride))
    cost = positions_per_token(predicted, window, stride)
    assert cost == pytest.approx(computed / sum(predicted))
    assert positions_per_token([0, 0], window, stride) is None
    # Long samples approach window / step.
    step = min(stride, window - 1)
    assert positions_per_token([10**6], window, stride) == pytest.approx(window / step, rel=1e-3)


@pytest.mark.parametrize("kind", ["gpt2", "gpt2-variant", "neox", "llama", "qwen2"])
@pytest.mark.parametrize("window,stride", [(16, 8), (16, 16), (16, 5)])
def test_float32_matches_oracle_for_any_batch_composition(lms, tokenizer, kind, window, stride):
    model = lms[kind]
    ref = [naive_score(model, tokenizer, t, window, stride) for t in TEXTS]
    assert ref[4].n_tokens > 2 * window  # the long samples really span several windows
    for budget in (16, 40, 4096):  # one window per batch .. everything in one batch
        scorer = Scorer(
            model,
            tokenizer,
            EngineSettings(window=window, stride=stride, max_batch_tokens=budget, dtype="float32"),
        )
        assert scorer.path_name == ("_Gpt2Packed" if kind.startswith("gpt2") else "_HfPacked")
        assert max(rel_errors(scorer.score_texts(TEXTS), ref)) < 1e-4
        # Each sample alone and in reverse company: the score must not depend on its neighbours.
        alone = [scorer.score_texts([t])[0] for t in TEXTS]
        assert max(rel_errors(alone, ref)) < 1e-4
        assert max(rel_errors(scorer.score_texts(TEXTS[::-1])[::-1], ref)) < 1e-4


@pytest.mark.parametrize("kind", ["gpt2", "llama", "neox"])
def test_padded_path_serves_any_model(lms, tokenizer, kind):
    model = lms[kind]
    ref = [naive_score(model, tokenizer, t, 16, 8) for t in TEXTS]
    settings = EngineSettings(window=16, stride=8, dtype="float32", fast_path=False)
    scorer = Scorer(model, tokenizer, settings)
    assert scorer.path_name == "_PaddedRows"
    assert max(rel_errors(scorer.score_texts(TEXTS), ref)) < 1e-4


def test_packed_path_leaves_the_model_and_sliding_windows_alone(lms, tokenizer):
    model = lms["llama"]
    implementation = model.config._attn_implementation
    Scorer(model, tokenizer, EngineSettings(window=16, dtype="float32")).score_texts(TEXTS[:2])
    assert model.config._attn_implementation == implementation  # switched on a copy only
    # A sliding window shorter than ours masks what a lone window sees: not packed.
    narrow = make_model("qwen2", len(tokenizer))
    narrow.config.use_sliding_window, narrow.config.sliding_window = True, 8
    scorer = Scorer(narrow, tokenizer, EngineSettings(window=16, dtype="float32"))
    assert scorer.path_name == "_PaddedRows"


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2"])
def test_bfloat16_stays_close_to_float32(lms, tokenizer, kind):
    model = lms[kind]
    ref = [naive_score(model, tokenizer, t, 32, 16) for t in TEXTS]
    scorer = Scorer(model, tokenizer, EngineSettings(window=32, dtype="bfloat16"))
    assert scorer.dtype == "bfloat16"
    errors = rel_errors(scorer.score_texts(TEXTS), ref)
    assert sum(errors) / len(errors) < 1e-3
    # The engine copied the weights: the caller's model is still float32.
    assert next(model.parameters()).dtype == torch.float32


def test_zero_token_samples_score_zero(lms, tokenizer):
    scorer = Scorer(lms["gpt2"], tokenizer, EngineSettings(window=16, dtype="float32"))
    assert scorer.score_texts([]) == []
    empty, one = scorer.score_texts(["", "a"])
    assert (empty.n_tokens, empty.bits_total) == (0, 0.0)
    assert one.n_tokens == 1 and one.bits_total > 0
    assert scorer.score_sequences([[], [5]]) == [empty, empty]


def test_prefix_is_bos_else_eos_else_nothing(lms):
    text = "The quick brown fox."
    ids = make_tokenizer()(text, add_special_tokens=False).input_ids
    eot = make_tokenizer().convert_tokens_to_ids(EOT)

    assert sequence_for(make_tokenizer(bos_token=EOT, eos_token=EOT), text) == (
        [eot, *ids],
        len(ids),
    )
    assert sequence_for(make_tokenizer(eos_token=EOT), text) == ([eot, *ids], len(ids))
    bare = make_tokenizer()
    assert sequence_for(bare, text) == (ids, len(ids) - 1)

    # Without a prefix the first token is context only: a one-token sample predicts nothing.
    scorer = Scorer(lms["gpt2"], bare, EngineSettings(window=16, dtype="float32"))
    got = scorer.score_texts(["a", text])
    assert (got[0].n_tokens, got[0].bits_total) == (0, 0.0)
    assert rel_errors(got[1:], [naive_score(lms["gpt2"], bare, text, 16, 8)])[0] < 1e-4


def test_stream_matches_one_call(lms, tokenizer):
    scorer = Scorer(lms["neox"], tokenizer, EngineSettings(window=16, dtype="float32"))
    chunks = [TEXTS[:3], [], TEXTS[3:]]
    streamed = list(scorer.score_stream(iter(chunks)))
    assert [len(c) for c in streamed] == [3, 0, len(TEXTS) - 3]
    assert sum(streamed, []) == scorer.score_texts(TEXTS)


def test_settings_are_validated(lms, tokenizer):
    model = lms["gpt2"]
    with pytest.raises(InputError) as err:
        Scorer(model, tokenizer, EngineSettings(window=MAX_POS + 1))
    assert str(err.value) == (
        f"window {MAX_POS + 1} exceeds the model's maximum of {MAX_POS} positions"
        f" — pass --window {MAX_POS} or less"
    )
    assert Scorer(model, tokenizer, EngineSettings()).window == MAX_POS
    for bad in (
        {"dtype": "float8"},
        {"device": "tpu"},
        {"window": 16, "stride": 17},
        {"window": 1},
        {"max_batch_tokens": 0},
    ):
        with pytest.raises(InputError):
            Scorer(model, tokenizer, EngineSettings(**bad))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_blocked_log_sum_exp_equals_one_pass_for_any_row_count(dtype):
    from core.engine import LSE_ROWS, blocked_lse

    g = torch.Generator().manual_seed(0)
    for rows in (1, LSE_ROWS - 1, LSE_ROWS, 2 * LSE_ROWS + 3):
        logits = (torch.randn(rows, 300, generator=g) * 8).to(dtype)
        # A first column far below the row's maximum costs the subtraction nothing noticeable.
        logits[: rows // 2, 0] = -60
        want = logits.double().logsumexp(-1).float()
        torch.testing.assert_close(blocked_lse(logits), want, rtol=1e-6, atol=2e-5)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_linear_gelu_matches_the_plain_ops_when_used(approximate, dtype):
    import torch.nn.functional as F

    from core.engine import fused_fc_gelu

    fused = fused_fc_gelu(approximate, dtype, "cpu")
    if fused is None:
        pytest.skip("this torch build has no oneDNN linear with a GELU post-op")
    g = torch.Generator().manual_seed(1)
    h, w, b = (torch.randn(*s, generator=g).to(dtype) for s in ((40, 24), (56, 24), (56,)))
    want = F.gelu(F.linear(h.float(), w.float(), b.float()), approximate=approximate)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(fused(h, w, b).float(), want, rtol=tol, atol=tol)
    assert fused_fc_gelu(approximate, dtype, "cuda:0") is None


def test_out_of_memory_halves_the_budget_for_good(lms, tokenizer):
    scorer = Scorer(
        lms["llama"], tokenizer, EngineSettings(window=16, max_batch_tokens=64, dtype="float32")
    )
    want = scorer.score_texts(TEXTS)
    run, refused = scorer.path.run, []

    def small_batches_only(batch):
        tokens = sum(len(window) for _, window, _ in batch)
        if tokens > 20:
            refused.append(tokens)
            raise torch.OutOfMemoryError("injected")
        return run(batch)

    scorer.path.run = small_batches_only
    assert max(rel_errors(scorer.score_texts(TEXTS), want)) < 1e-6
    assert refused and scorer.budget == 16  # 64 -> 32 -> 16
    refused.clear()
    scorer.score_texts(TEXTS)  # the next chunk starts from the halved budget
    assert refused == []


def test_a_model_in_training_mode_scores_without_dropout(tokenizer):
    model = make_model("neox", len(tokenizer))
    model.config.hidden_dropout = 0.5  # the layers' own dropout, applied in training mode
    for layer in model.gpt_neox.layers:
        layer.post_attention_dropout.p = layer.post_mlp_dropout.p = 0.5
    ref = [naive_score(model.eval(), tokenizer, t, 16, 8) for t in TEXTS]
    model.train()
    scorer = Scorer(model, tokenizer, EngineSettings(window=16, dtype="float32"))
    assert scorer.path_name == "_HfPacked"
    assert max(rel_errors(scorer.score_texts(TEXTS), ref)) < 1e-4
