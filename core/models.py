"""Loading a causal language model and its tokenizer, safely and with early, readable errors.

A model is a local Hugging Face directory or a hub id; a hub id is first fetched into the cache
(`snapshot_download`) so both take the same path from there. Remote code stays off unless asked for,
and pickle weights (`.bin`) are refused unless allowed: loading a pickle runs arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

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


def load_model(
    model: str, allow_pickle: bool = False, trust_remote_code: bool = False
) -> LoadedModel:
    """Load model + tokenizer in float32 on the CPU; the engine moves and casts them."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    path = resolve_model_dir(model, allow_pickle)
    check_model_dir(path, allow_pickle, trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise InputError(f"cannot load the tokenizer in {path} ({first_line(exc)})") from exc
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
