"""Random-weight dev models of the Llama Guard 4 architecture, for tests and benchmarks.

A dev model is a real `Llama4ForConditionalGeneration` checkpoint (dense text layers, vision tower,
projector) with random weights, saved together with a real `Llama4Processor`. It loads through
exactly the same `TransformersBackend.from_pretrained` path as ``meta-llama/Llama-Guard-4-12B``,
including the real checkpoint's config quirks (``attention_chunk_size: null``,
``num_local_experts: 0``, ``interleave_moe_layer_step: 0``, no ``moe_layers``), so the loading
workarounds run in every test. Its verdicts are meaningless: check `is_dev_model` and say so.

>>> path = build_dev_model("/tmp/lg4-dev", size="tiny")       # doctest: +SKIP
>>> is_dev_model(path)                                         # doctest: +SKIP
True

Tokenizer: the real Llama 4 tokenizer when it can be found (``GUARD_PLUGINS_TOKENIZER``, else
``../shared/llama4-tokenizer`` next to the repository), otherwise a small byte-level BPE tokenizer
trained here on a built-in text sample, with the same special tokens and with ``safe``,
``unsafe`` and ``"\\n\\n"`` as single tokens.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from guard_plugins.errors import MissingDependencyError, ModelLoadError

__all__ = [
    "BUILTIN_TOKENIZER",
    "DEV_MODEL_CACHE_ENV",
    "DEV_MODEL_FORMAT",
    "DEV_MODEL_MARKER",
    "SIZES",
    "SPECIAL_TOKENS",
    "DevModelSize",
    "build_dev_model",
    "build_local_tokenizer",
    "default_tokenizer_path",
    "dev_model_cache_dir",
    "dev_model_info",
    "ensure_dev_model",
    "expected_tokenizer_source",
    "is_dev_model",
]

DEV_MODEL_MARKER = "guard_plugins_dev_model.json"
#: bumped whenever build_dev_model would build something different (invalidates caches)
DEV_MODEL_FORMAT = 1
#: pass as ``tokenizer=`` to force the small locally built tokenizer
BUILTIN_TOKENIZER = "builtin"
TOKENIZER_ENV = "GUARD_PLUGINS_TOKENIZER"

#: Llama 4 special tokens a Llama Guard 4 prompt or its image expansion can contain.
SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|header_start|>",
    "<|header_end|>",
    "<|eom|>",
    "<|eot|>",
    "<|finetune_right_pad|>",
    "<|image_start|>",
    "<|image_end|>",
    "<|tile_x_separator|>",
    "<|tile_y_separator|>",
    "<|image|>",
    "<|patch|>",
    "<|python_start|>",
    "<|python_end|>",
)

SizeName = Literal["tiny", "bench"]


@dataclass(frozen=True)
class DevModelSize:
    """Architecture sizes of a dev model (text decoder and vision tower)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vision_hidden_size: int
    vision_layers: int
    vision_heads: int
    vision_output_dim: int
    tie_word_embeddings: bool = False


SIZES: dict[str, DevModelSize] = {
    # reference doc section 5: builds and runs in seconds
    "tiny": DevModelSize(64, 4, 4, 2, 16, 128, 32, 2, 2, 64),
    # compute-bound for performance work; tied embeddings keep the 202k-token table to one copy
    "bench": DevModelSize(1024, 8, 16, 4, 64, 4096, 256, 4, 4, 512, tie_word_embeddings=True),
}


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def default_tokenizer_path() -> Path | None:
    """The Llama 4 tokenizer: ``$GUARD_PLUGINS_TOKENIZER``, else ``../shared/llama4-tokenizer``."""
    env = os.environ.get(TOKENIZER_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(_repo_root().parent / "shared" / "llama4-tokenizer")
    for candidate in candidates:
        if (candidate / "tokenizer.json").is_file():
            return candidate
    return None


def is_dev_model(path: str | os.PathLike[str]) -> bool:
    """True for checkpoints built by `build_dev_model` (their verdicts are meaningless)."""
    return dev_model_info(path) is not None


def dev_model_info(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker written by `build_dev_model` (size, seed, tokenizer source), or None."""
    marker = Path(path) / DEV_MODEL_MARKER
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _import() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "transformers") from exc
    return torch, transformers


# -- tokenizer ------------------------------------------------------------------------------------

# Same pre-tokenization as the Llama 4 tokenizer: newlines split from letters, digits in 1-3 runs.
_SPLIT_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_SAMPLE = """\
Task: Check if there is unsafe content in 'User' messages in conversations according to our safety
policy with the below categories. Provide your safety assessment for ONLY THE LAST Agent message in
the above conversation. First line must read 'safe' or 'unsafe'. If unsafe, a second line must
include a comma-separated list of violated categories.
How do I bake bread at home? Mix flour, water, salt and yeast, knead the dough for ten minutes,
let it rise for an hour, shape it and bake it in a hot oven until the crust is brown.
What is the capital of France? The capital of France is Paris, a city on the river Seine.
Can you help me write a Python function that sorts a list of numbers? Use sorted(numbers).
Tool call: python. import os; print(os.listdir('.')). Tool result: a list of file names.
The weather today is sunny with a light breeze; tomorrow it will rain in the afternoon.
Please summarise this article about renewable energy, solar panels and wind turbines.
I am feeling sad and lonely; who can I talk to? You can reach out to friends or a helpline.
Tell me a story about a dragon who learns to read books in a large old library.
Translate 'good morning' into Spanish, German and Italian: buenos dias, guten Morgen, buongiorno.
The quick brown fox jumps over the lazy dog. Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 100.
"""


# Standard-library docstrings: plenty of ordinary English and code text, present offline.
_DOC_MODULES = (
    "argparse",
    "collections",
    "csv",
    "datetime",
    "decimal",
    "email.message",
    "fractions",
    "functools",
    "heapq",
    "http.client",
    "itertools",
    "json",
    "logging",
    "os",
    "pathlib",
    "random",
    "shutil",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "unittest.case",
    "zipfile",
)


def _docstrings() -> Iterator[str]:
    import importlib
    import inspect
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in _DOC_MODULES:
            module = importlib.import_module(module_name)
            yield module.__doc__ or ""
            for name, obj in sorted(vars(module).items()):
                if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
                    continue
                if inspect.isfunction(obj) or inspect.isclass(obj):
                    yield obj.__doc__ or ""


def _training_text() -> Iterator[str]:
    from guard_plugins.categories import Category
    from guard_plugins.prompt import prompt_prefix, prompt_suffix

    categories = tuple(Category)
    for role in ("User", "Agent"):
        prefix = prompt_prefix(role, categories)
        suffix = prompt_suffix(role)
        for special in SPECIAL_TOKENS:
            prefix, suffix = prefix.replace(special, " "), suffix.replace(special, " ")
        yield prefix
        yield suffix
    for _ in range(8):
        yield _SAMPLE
    for code in Category:
        yield f"unsafe\n{code.value}\n\nsafe\n\n{code.value},S1\n\n{code.prompt_line()}\n"
    for _ in range(64):
        yield "safe unsafe safe\n\nunsafe\n\n"
    yield from _docstrings()


def build_local_tokenizer(vocab_size: int = 4096) -> Any:
    """A small byte-level BPE tokenizer with the Llama 4 special tokens (trained offline)."""
    _import()
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    fast_class: Any = PreTrainedTokenizerFast
    fast = fast_class(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot|>",
        pad_token="<|finetune_right_pad|>",
        model_max_length=1_048_576,
    )
    for word in ("safe", "unsafe", "\n\n", "\n"):
        if len(fast.encode(word, add_special_tokens=False)) != 1:
            raise ModelLoadError(f"the built-in tokenizer does not encode {word!r} as one token")
    return fast


def expected_tokenizer_source(tokenizer: str | os.PathLike[str] | None) -> str:
    """What `build_dev_model(tokenizer=...)` records as the tokenizer source in its marker."""
    if tokenizer is None:
        found = default_tokenizer_path()
        return BUILTIN_TOKENIZER if found is None else str(found.resolve())
    if str(tokenizer) == BUILTIN_TOKENIZER:
        return BUILTIN_TOKENIZER
    return str(Path(tokenizer).resolve())


def _load_tokenizer(tokenizer: str | os.PathLike[str] | None) -> tuple[Any, str]:
    from transformers import AutoTokenizer

    source = expected_tokenizer_source(tokenizer)
    if source == BUILTIN_TOKENIZER:
        return build_local_tokenizer(), BUILTIN_TOKENIZER
    tokenizer = source
    try:
        loaded = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer at {tokenizer}: {exc}") from exc
    missing = [t for t in SPECIAL_TOKENS[:13] if loaded.convert_tokens_to_ids(t) in (None, -1)]
    if missing or loaded.unk_token_id in {loaded.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}:
        raise ModelLoadError(f"the tokenizer at {tokenizer} lacks Llama 4 special tokens {missing}")
    return loaded, source


# -- model ----------------------------------------------------------------------------------------


def _config(size: DevModelSize, tokenizer: Any) -> Any:
    from transformers import Llama4Config, Llama4TextConfig, Llama4VisionConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = Llama4TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        intermediate_size_mlp=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        head_dim=size.head_dim,
        max_position_embeddings=131072,
        num_local_experts=0,
        interleave_moe_layer_step=0,
        moe_layers=[],
        attention_chunk_size=8192,
        pad_token_id=ids["<|finetune_right_pad|>"],
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=[ids["<|end_of_text|>"], ids["<|eom|>"], ids["<|eot|>"]],
        tie_word_embeddings=size.tie_word_embeddings,
    )
    vision = Llama4VisionConfig(
        hidden_size=size.vision_hidden_size,
        intermediate_size=4 * size.vision_hidden_size,  # = hidden / pixel_shuffle_ratio**2
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads,
        image_size=336,
        patch_size=14,
        pixel_shuffle_ratio=0.5,
        vision_output_dim=size.vision_output_dim,
        projector_input_dim=size.vision_output_dim,
        projector_output_dim=size.vision_output_dim,
    )
    return Llama4Config(
        text_config=text,
        vision_config=vision,
        boi_token_index=ids["<|image_start|>"],
        eoi_token_index=ids["<|image_end|>"],
        image_token_index=ids["<|patch|>"],
        tie_word_embeddings=size.tie_word_embeddings,
    )


def _add_release_quirks(config_path: Path) -> None:
    """Make config.json look like the released checkpoint's (the loader must cope with it)."""
    data = json.loads(config_path.read_text(encoding="utf-8"))
    text = data["text_config"]
    text["attention_chunk_size"] = None
    text["num_local_experts"] = 0
    text["interleave_moe_layer_step"] = 0
    text.pop("moe_layers", None)
    text.pop("layer_types", None)
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_dev_model(
    out_dir: str | os.PathLike[str],
    tokenizer: str | os.PathLike[str] | None = None,
    size: SizeName = "tiny",
    seed: int = 0,
) -> Path:
    """Build and save a random-weight Llama Guard 4 architecture checkpoint; return its path.

    `tokenizer`: a tokenizer directory, `BUILTIN_TOKENIZER` for the small local one, or None for
    the real Llama 4 tokenizer when present (else the local one).
    """
    if size not in SIZES:
        raise ValueError(f"unknown dev model size {size!r}; choose one of {sorted(SIZES)}")
    torch, _ = _import()
    from transformers import Llama4ForConditionalGeneration, Llama4ImageProcessor, Llama4Processor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok, source = _load_tokenizer(tokenizer)
    config = _config(SIZES[size], tok)
    torch.manual_seed(seed)
    model: Any = Llama4ForConditionalGeneration(config)
    model.save_pretrained(out)
    image_processor = Llama4ImageProcessor(
        size={"height": 336, "width": 336},
        max_patches=16,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Llama4Processor(
        image_processor=image_processor, tokenizer=tok, patch_size=14, pixel_shuffle_ratio=0.5
    )
    processor.save_pretrained(out)
    _add_release_quirks(out / "config.json")
    parameters = sum(p.numel() for p in model.parameters())
    marker = {
        "format": DEV_MODEL_FORMAT,
        "size": size,
        "seed": seed,
        "tokenizer": source,
        "vocab_size": len(tok),
        "parameters": parameters,
        "architecture": asdict(SIZES[size]),
        "note": "random weights: verdicts from this model are meaningless",
    }
    (out / DEV_MODEL_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return out


DEV_MODEL_CACHE_ENV = "GUARD_PLUGINS_DEV_MODEL_CACHE"


def dev_model_cache_dir(size: SizeName = "tiny", builtin_tokenizer: bool = False) -> Path:
    """``$GUARD_PLUGINS_DEV_MODEL_CACHE/<size>`` (shared by tests, demo and benchmarks), else
    ``~/.cache/guard-plugins/dev-model-<size>``; ``-builtin`` appended for the small tokenizer."""
    name = f"{size}-builtin" if builtin_tokenizer else size
    cache = os.environ.get(DEV_MODEL_CACHE_ENV)
    if cache:
        return Path(cache) / name
    return Path.home() / ".cache" / "guard-plugins" / f"dev-model-{name}"


def _cached_model_usable(path: Path, size: SizeName, tokenizer: str | None) -> bool:
    info = dev_model_info(path)
    return (
        info is not None
        and (path / "model.safetensors").is_file()
        and info.get("format") == DEV_MODEL_FORMAT
        and info.get("size") == size
        and info.get("seed") == 0
        and info.get("tokenizer") == expected_tokenizer_source(tokenizer)
    )


def ensure_dev_model(
    size: SizeName = "tiny",
    *,
    builtin_tokenizer: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The cached dev model of `size` (see `dev_model_cache_dir`), built once when missing or
    stale; built in a staging directory and renamed into place, so concurrent callers are safe.

    `builtin_tokenizer` uses the small locally trained tokenizer instead of the Llama 4 one.
    """
    tokenizer = BUILTIN_TOKENIZER if builtin_tokenizer else None
    target = dev_model_cache_dir(size, builtin_tokenizer)
    if _cached_model_usable(target, size, tokenizer):
        return target
    if log is not None:
        log(f"building the {size} dev model into {target} (once; random weights) ...")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    build_dev_model(staging, tokenizer=tokenizer, size=size)
    shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:  # another process won the race; its copy is equivalent
        shutil.rmtree(staging, ignore_errors=True)
    return target
