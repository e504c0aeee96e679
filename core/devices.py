"""Where a model runs, in what precision, over which window: resolved here for every caller.

The scoring engine, the Ray driver and its workers, and probe training all turn `auto` and the
user's names into concrete values through these functions, so a device or dtype this machine lacks
is refused in the same words everywhere. Torch is imported only when a value is resolved.
"""

from __future__ import annotations

from core.errors import InputError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")  # what --device accepts
DTYPES = ("float32", "bfloat16", "float16")
DTYPE_CHOICES = ("auto", *DTYPES)  # what --dtype accepts


def resolve_device(name: str) -> str:
    """The device NAME means on this machine (`cuda` -> `cuda:0`), or an InputError."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()}"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                f"device {name} requested but torch sees no CUDA GPU — pass --device cpu",
                ui="This machine has no CUDA GPU that torch can use — choose Device cpu or auto.",
            )
        if name == "cuda":
            return f"cuda:{torch.cuda.current_device()}"
        index = name.removeprefix("cuda:")
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise InputError(
                f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)",
                ui=f"This machine has {torch.cuda.device_count()} GPU(s) — choose Device cuda.",
            )
        return name
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError(
            "device mps requested but it is not available — pass --device cpu",
            ui="This machine has no Apple GPU (mps) — choose Device cpu or auto.",
        )
    if name not in ("cpu", "mps"):
        raise InputError(
            f"unknown device {name!r} — pass --device {', '.join(DEVICES[:-1])} or {DEVICES[-1]}"
        )
    return name


def cpu_has_fast_bf16() -> bool:
    """x86 with native bf16 dot products (AVX512-bf16, AMX); elsewhere bf16 is emulated, slow."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_dtype(name: str, device: str) -> str:
    """The dtype NAME means on DEVICE (a resolved one): `auto` is bfloat16 where it is fast."""
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
        return "bfloat16" if device == "cpu" and cpu_has_fast_bf16() else "float32"
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r} — pass --dtype {', '.join(DTYPE_CHOICES)}")
    if device == "mps" and name == "bfloat16":
        raise InputError(
            "mps supports float32 and float16 only — pass --dtype float16",
            ui="An Apple GPU (mps) computes in float32 or float16 only — choose Precision float16.",
        )
    return name


def resolve_device_and_dtype(device: str, dtype: str) -> tuple[str, str]:
    """Both, as this machine resolves them (the Ray driver asks a worker)."""
    resolved = resolve_device(device)
    return resolved, resolve_dtype(dtype, resolved)


def max_positions(config) -> int | None:
    """The longest sequence a model was built for, from its (Hugging Face) config."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_window(window: int | None, stride: int | None, max_pos: int | None) -> tuple[int, int]:
    """(window, stride): the model's maximum and half of it unless given, checked against it."""
    window = window or max_pos
    if window is None:
        raise InputError("the model does not state its maximum positions — pass --window")
    if max_pos is not None and window > max_pos:
        raise InputError(
            f"window {window} exceeds the model's maximum of {max_pos} positions"
            f" — pass --window {max_pos} or less"
        )
    if window < 2:
        raise InputError(
            f"window {window} is too small to predict anything — pass --window 2 or more"
        )
    stride = stride or window // 2
    if not 1 <= stride <= window:
        raise InputError(f"stride {stride} must be between 1 and the window {window}")
    return window, stride
