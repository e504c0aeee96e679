"""Loading a causal language model and its tokenizer, safely and with early, readable errors.

A model is a local Hugging Face directory or a hub id; a hub id is first fetched into the cache
(`snapshot_download`) so both take the same path from there. Remote code stays off unless asked for,
and pickle weights (`.bin`) are refused unless allowed: loading a pickle runs arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from core.devices import max_positions
from core.errors import InputError, first_line

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")
_hash_cache: dict[tuple, str] = {}


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    name: str
    local_dir: Path
    model_hash: str


def looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or Path(model).expanduser().exists()


def resolve_model_dir(model: str, allow_pickle: bool = False) -> Path:
    """A local directory for MODEL: the path itself, or the hub snapshot in the local cache."""
    if looks_like_path(model) or model.count("/") > 1:
        path = Path(model).expanduser()
        if not path.exists():
            raise InputError(f"model path {model} does not exist")
        if not path.is_dir():
            raise InputError(f"model {model} is a file — pass the model's directory")
        return path
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.py"]
        if allow_pickle:
            patterns.append("*.bin")
        return Path(snapshot_download(model, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, gated repo: all one message
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"cannot find model '{model}' locally or download it from the hub ({first[:200]}) "
            "— pass a local model directory"
        ) from exc


def check_model(model: str, allow_pickle: bool = False, trust_remote_code: bool = False) -> None:
    """Before a scoring job starts: a local MODEL directory has a config, a tokenizer and weights
    it may load (no torch or transformers imported). A hub id is checked by the job."""
    if looks_like_path(model) or model.count("/") > 1:
        check_model_files(resolve_model_dir(model), allow_pickle, trust_remote_code)


def check_model_dir(path: Path, allow_pickle: bool, trust_remote_code: bool) -> dict:
    """Fail before any work: config present and causal, weights safe, tokenizer present."""
    config = _read_config(path, trust_remote_code)
    _check_causal(config, path)
    _check_weights_and_tokenizer(path, allow_pickle)
    return config


def check_model_files(path: Path, allow_pickle: bool, trust_remote_code: bool) -> None:
    """check_model_dir without loading transformers: all but "is it a causal language model"."""
    _read_config(path, trust_remote_code)
    _check_weights_and_tokenizer(path, allow_pickle)


def _read_config(path: Path, trust_remote_code: bool) -> dict:
    """config.json, refused if the model needs its own code and that is not allowed."""
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise InputError(f"{path} is not a model directory (no config.json)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{cfg_path} is not valid JSON ({exc})") from exc
    if _needs_remote_code(config) and not trust_remote_code:
        raise InputError(
            f"{path} needs its own code to load — pass --trust-remote-code if you trust it",
            ui=f"{path} needs its own code to load — tick “Trust remote code” under Advanced "
            "if you trust it.",
        )
    return config


def _check_weights_and_tokenizer(path: Path, allow_pickle: bool) -> None:
    safetensors = sorted(path.glob("*.safetensors"))
    pickles = sorted(path.glob("*.bin"))
    if not safetensors:
        if pickles and not allow_pickle:
            raise InputError(
                f"{path} has only pickle weights (.bin), which can run code when loaded "
                "— convert them to safetensors or pass --allow-pickle if you trust the source",
                ui=f"{path} has only pickle weights (.bin), which can run code when loaded — "
                "convert them to safetensors, or tick “Allow pickle (.bin) weights” under "
                "Advanced if you trust the source.",
            )
        if not pickles:
            raise InputError(f"{path} holds no weights (*.safetensors)")
    if not any((path / f).exists() for f in TOKENIZER_FILES):
        raise InputError(
            f"{path} has no tokenizer (tokenizer.json or similar) — save one beside it"
        )


def _needs_remote_code(config: dict) -> bool:
    return "auto_map" in config and "AutoModelForCausalLM" in config["auto_map"]


def _check_causal(config: dict, path: Path) -> None:
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if _needs_remote_code(config):  # its own code says what it is (allowed by _read_config)
        return
    model_type = config.get("model_type")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        archs = ", ".join(config.get("architectures") or []) or str(model_type)
        raise InputError(f"{path} is not a causal language model ({archs})")
    AutoConfig.for_model(model_type)  # raises for a model type this transformers cannot build


def configured_max_positions(model: str) -> int | None:
    """The longest sequence MODEL was built for, from a local config.json (a hub model's only if
    it is in the local cache); None when unknown. Reads no weights, imports no transformers."""
    path = None
    if looks_like_path(model):
        path = Path(model).expanduser() / "config.json"
    elif model and model != "none":
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
            path = Path(cached) if isinstance(cached, str) else None
        except Exception:  # an id the hub library refuses: unknown, like an uncached one
            path = None
    try:
        config = json.loads(path.read_text()) if path and path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return None
    return max_positions(SimpleNamespace(**config))


def weights_hash(model_dir: str | Path) -> str:
    """A short sha256 over the weight files, so runs know exactly which weights scored them."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    key = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key in _hash_cache:
        return _hash_cache[key]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    _hash_cache[key] = h.hexdigest()[:16]
    return _hash_cache[key]


# What GPT2Config assumes for a key a GPT-2 config.json leaves out.
GPT2_DEFAULTS = {
    "vocab_size": 50257,
    "n_positions": 1024,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
}
# GPT-2 activations the packed path computes, as torch's GELU `approximate` argument.
GPT2_ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
# Tokenizers saved as a plain tokenizer.json (train-probe's, PreTrainedTokenizerFast's):
# transformers adds nothing to how they encode, so `tokenizers` alone gives the same ids.
PLAIN_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


@dataclass
class Gpt2Weights:
    """A GPT-2 checkpoint as the engine's packed path reads it, without transformers' model code
    (importing that took longer than scoring the first samples): its config and float32 tensors
    named as GPT2LMHeadModel's state dict names them, less the `transformer.` prefix."""

    config: SimpleNamespace
    state: dict = field(repr=False)


class PlainTokenizer:
    """A plain tokenizer.json through `tokenizers` alone, called as transformers' fast tokenizer
    is called for scoring: the same ids, without importing transformers."""

    def __init__(self, path: Path, special: dict) -> None:
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.backend.no_truncation()
        self.backend.no_padding()
        self.bos_token_id = self._token_id(special.get("bos_token"))
        self.eos_token_id = self._token_id(special.get("eos_token"))

    def _token_id(self, token) -> int | None:
        if isinstance(token, dict):
            token = token.get("content")
        return None if token is None else self.backend.token_to_id(token)

    def __call__(self, text, add_special_tokens: bool = False, verbose: bool = False):
        if isinstance(text, str):
            ids = self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        else:
            batch = self.backend.encode_batch(list(text), add_special_tokens=add_special_tokens)
            ids = [e.ids for e in batch]
        return SimpleNamespace(input_ids=ids)


def gpt2_weights_only(config: dict, path: Path) -> bool:
    """Whether PATH holds a GPT-2 checkpoint the packed path reads from its files alone."""
    archs = config.get("architectures") or ["GPT2LMHeadModel"]
    return (
        config.get("model_type") == "gpt2"
        and archs == ["GPT2LMHeadModel"]
        and "auto_map" not in config
        and config.get("activation_function", "gelu_new") in GPT2_ACTIVATIONS
        and not config.get("add_cross_attention", False)
        and any(path.glob("*.safetensors"))
    )


def read_gpt2_weights(path: Path, config: dict) -> Gpt2Weights:
    import torch
    from safetensors.torch import load_file

    state = {}
    try:
        for f in sorted(path.glob("*.safetensors")):
            for name, tensor in load_file(f).items():
                state[name.removeprefix("transformer.")] = tensor.to(torch.float32)
    except Exception as exc:
        raise InputError(f"cannot load the model in {path} ({first_line(exc)})") from exc
    cfg = {**GPT2_DEFAULTS, **config}
    cfg["max_position_embeddings"] = cfg.get("n_positions") or cfg.get("n_ctx")
    if "lm_head.weight" not in state or cfg["tie_word_embeddings"]:
        state["lm_head.weight"] = state.get("wte.weight")
    missing = [k for k in ("wte.weight", "wpe.weight", "ln_f.weight") if k not in state]
    if missing or "lm_head.bias" in state:
        raise InputError(f"cannot load the model in {path} (not GPT-2 weights: {missing})")
    return Gpt2Weights(SimpleNamespace(**cfg), state)


def load_tokenizer(path: Path, trust_remote_code: bool = False, plain_ok: bool = False):
    """The model's tokenizer; with PLAIN_OK a plain tokenizer.json skips transformers."""
    special_file = path / "tokenizer_config.json"
    special = json.loads(special_file.read_text()) if special_file.exists() else {}
    if (
        plain_ok
        and (path / "tokenizer.json").exists()
        and special.get("tokenizer_class") in PLAIN_TOKENIZER_CLASSES
        and "add_prefix_space" not in special
    ):
        try:
            return PlainTokenizer(path, special)
        except Exception as exc:
            raise InputError(f"cannot load the tokenizer in {path} ({first_line(exc)})") from exc
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise InputError(f"cannot load the tokenizer in {path} ({first_line(exc)})") from exc


def load_model(
    model: str,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    weights_only: bool = False,
) -> LoadedModel:
    """Load model + tokenizer in float32 on the CPU; the engine moves and casts them.

    WEIGHTS_ONLY: a GPT-2 checkpoint comes back as Gpt2Weights (and a plain tokenizer.json as a
    PlainTokenizer), which is all the engine's packed path needs — a second or more sooner.
    """
    path = resolve_model_dir(model, allow_pickle)
    if weights_only:
        config = _read_config(path, trust_remote_code)
        if gpt2_weights_only(config, path):
            _check_weights_and_tokenizer(path, allow_pickle)
            return LoadedModel(
                model=read_gpt2_weights(path, config),
                tokenizer=load_tokenizer(path, trust_remote_code, plain_ok=True),
                name=model,
                local_dir=path,
                model_hash=weights_hash(path),
            )
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    check_model_dir(path, allow_pickle, trust_remote_code)
    tokenizer = load_tokenizer(path, trust_remote_code)
    try:
        lm = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch.float32,
            trust_remote_code=trust_remote_code,
            use_safetensors=not allow_pickle or any(path.glob("*.safetensors")),
        )
    except Exception as exc:
        raise InputError(f"cannot load the model in {path} ({first_line(exc)})") from exc
    lm.eval()
    return LoadedModel(
        model=lm,
        tokenizer=tokenizer,
        name=model,
        local_dir=path,
        model_hash=weights_hash(path),
    )


def read_probe_card(model_dir: Path) -> dict | None:
    """The `infoprune.json` card a trained probe carries, if any."""
    card = Path(model_dir) / "infoprune.json"
    if not card.exists():
        return None
    try:
        return json.loads(card.read_text())
    except json.JSONDecodeError:
        return None
