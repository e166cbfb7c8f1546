"""Llama Guard 4 in-process with Hugging Face transformers (extra ``transformers``).

`PromptEncoder` is the tokenizer/processor half (exactly the ids the model sees; no model
needed), `TransformersBackend` adds the model. torch and transformers are imported here only.

How a check runs (cheapest path that gives the model's own numbers):

- Scoring is one forward pass over prompt + ``"\\n\\n"`` (the model's first output token,
  teacher-forced). Text prompts run the decoder alone and project the last position onto the two
  output-head rows of ``unsafe`` and ``safe`` only (the other ~202k rows are never multiplied);
  score = P(unsafe) / (P(unsafe) + P(safe)) of the verdict token.
- Only when score >= threshold are the categories decoded: ``unsafe`` + ``"\\n"`` are
  teacher-forced on the KV cache of the scoring pass and at most 20 tokens are decoded greedily,
  constrained to comma-separated codes of the listed categories (so even a dev model's output
  parses; only those tokens' head rows are projected), stopping at ``<|eot|>``.
- Text requests are sorted by length and cut into sub-batches (`max_batch_size`,
  `max_batch_tokens`), left-padded. A sub-batch whose padding would exceed 30% is instead
  *packed* into one row with a 4-D attention mask (``packing="auto"``; ``True`` always packs, with
  mixed roles and category lists in one row; ``False`` never). Image requests run one at a time
  (the vision tower dominates their cost).
- The prompt part up to ``<BEGIN CONVERSATION>\\n`` is the same for every check with the same role
  and categories; with ``prefix_cache=True`` its KV is computed once and reused (LRU). The KV of
  each text check's conversation is kept too (`conversation_cache_tokens` positions in total):
  the next check of a growing conversation computes only its new turns and the closing lines.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from guard_plugins.backends._kv_reuse import ConversationCache, KVEntry
from guard_plugins.backends._last_layer import FinalFeedForward
from guard_plugins.backends.base import Backend, ClassificationRequest
from guard_plugins.categories import CategorySpec
from guard_plugins.conversation import AssessedRole, ConversationLike
from guard_plugins.devmodel import is_dev_model
from guard_plugins.errors import (
    BackendError,
    ImageError,
    MissingDependencyError,
    ModelLoadError,
    PromptIntegrityError,
    PromptTooLongError,
)
from guard_plugins.images import ImagePart
from guard_plugins.prompt import IMAGE_TOKEN, RenderedPrompt, prompt_suffix
from guard_plugins.verdict import Verdict, parse_verdict, score_from_logprobs

__all__ = [
    "DEFAULT_MODEL_ID",
    "BackendStats",
    "PromptEncoder",
    "RawCompletion",
    "TransformersBackend",
    "default_max_prompt_tokens",
    "load_llama_guard_config",
    "prompt_token_ids",
]

_T = TypeVar("_T")
_log = logging.getLogger(__name__)
DEFAULT_MODEL_ID = "meta-llama/Llama-Guard-4-12B"
#: what `attention_chunk_size: null` is replaced with (identical results below 8192 positions)
CHUNK_SIZE_WORKAROUND = 8192
#: positions kept free after the prompt: "\n\n", "unsafe", "\n" and the category tokens
DECODE_RESERVE = 32
MAX_CATEGORY_TOKENS = 20
#: a cached conversation is used when it covers at least this many ids past the template prefix
#: (every conversation starts with "User:"; a couple of tokens do not pay for assembling the KV)
MIN_CONVERSATION_REUSE = 8
#: longest row of packed prompts (their attention mask is quadratic in it)
PACK_MAX_TOKENS = 4096
#: ``packing="auto"`` packs a sub-batch of one role and category list when padding would be more
#: than this share of it: a packed row attends densely over every prompt in it (torch's SDPA does
#: not skip masked blocks), which costs more than a little padding does. A sub-batch mixing roles
#: or category lists is always packed: padded, each would be a pass of its own
PACK_WHEN_PADDING = 0.3
_HUB_KEYS = ("local_files_only", "revision", "token", "cache_dir", "force_download", "subfolder")
_STRUCTURE = {
    "<|begin_of_text|>": 1,
    "<|header_start|>": 2,
    "<|header_end|>": 2,
    "<|eot|>": 1,
}
_IMAGE_TOKENS = ("<|image_start|>", "<|image_end|>", IMAGE_TOKEN)
_CONVERSATION_START = "<BEGIN CONVERSATION>\n"
_ALLOWED_SPECIAL = (
    *_STRUCTURE, *_IMAGE_TOKENS, "<|patch|>", "<|tile_x_separator|>", "<|tile_y_separator|>",
)


def _deps() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "transformers") from exc
    return torch, transformers


def _load_error(source: str, exc: BaseException) -> ModelLoadError:
    reason = (str(exc).strip().splitlines() or [""])[0][:300]
    kind = "" if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: "
    return ModelLoadError(
        f"cannot load Llama Guard 4 from {source!r}: {kind}{reason}\n"
        "Options:\n"
        "  - a local checkpoint: --model PATH (TransformersBackend.from_pretrained(PATH)); "
        f"{DEFAULT_MODEL_ID} is gated: accept its licence on Hugging Face and log in first\n"
        "  - a served model (vLLM or a hosted API): --endpoint URL (OpenAICompatibleBackend)\n"
        "  - for development and tests: `guard-plugins dev-model DIR`, then --model DIR "
        "(random weights: its verdicts are meaningless)"
    )


@dataclass(frozen=True)
class RawCompletion:
    """Greedy output of `TransformersBackend.generate_raw`.

    `top_logprobs[i]` lists the most likely tokens at generated position i as (decoded text,
    log-probability), best first; `token_logprobs[i]` is the log-probability of the chosen token.
    """

    text: str
    token_ids: list[int]
    top_logprobs: list[list[tuple[str, float]]]
    token_logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"
    prompt_tokens: int = 0


@dataclass
class BackendStats:
    """Counters for benchmarks: what the model actually computed."""

    checks: int = 0
    forward_passes: int = 0
    tokens_computed: int = 0
    """Token positions run through the decoder (padding excluded, decoding included)."""
    padding_tokens: int = 0
    decoded_checks: int = 0
    prefix_hits: int = 0
    """Checks that reused cached KV (the template prefix, or more of a cached conversation)."""
    prefix_misses: int = 0
    conversation_hits: int = 0
    """Checks that reused a cached conversation beyond the template prefix."""
    reused_tokens: int = 0
    """Prompt positions taken from a cache instead of computed."""

    @property
    def tokens_per_check(self) -> float:
        return self.tokens_computed / self.checks if self.checks else 0.0

    def reset(self) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, 0)


# -- configuration ----------------------------------------------------------------------------


def load_llama_guard_config(source: str, **hub_kwargs: Any) -> Any:
    """The checkpoint's `Llama4Config`, with the released config.json's quirks worked around.

    ``attention_chunk_size: null`` crashes transformers' mask code; 8192 is equivalent below 8192
    positions. ``num_local_experts: 0`` / ``interleave_moe_layer_step: 0`` mean dense layers, but
    a step of 0 without ``moe_layers`` crashes the config (``range(-1, n, 0)``), so
    ``moe_layers = []``.
    """
    _, transformers = _deps()
    config_dict, _ = transformers.PretrainedConfig.get_config_dict(source, **hub_kwargs)
    if config_dict.get("model_type") != "llama4":
        raise ModelLoadError(
            f"this is not a Llama 4 checkpoint (model_type "
            f"{config_dict.get('model_type')!r}); Llama Guard 4 is model_type 'llama4'"
        )
    text = config_dict.setdefault("text_config", {})
    if text.get("attention_chunk_size") is None:
        text["attention_chunk_size"] = CHUNK_SIZE_WORKAROUND
    if text.get("num_local_experts") == 0 or text.get("interleave_moe_layer_step") == 0:
        text["moe_layers"] = []
    return transformers.Llama4Config.from_dict(config_dict)


def default_max_prompt_tokens(text_config: Any) -> int:
    """Longest prompt accepted by default.

    Below 8192 positions the chunked-attention workaround and the NoPE layers' temperature tuning
    (``floor_scale``) are exact no-ops, and left padding or a reused prefix cannot move any token
    across a chunk boundary; `DECODE_RESERVE` positions stay free for the verdict and categories.
    """
    limit = min(
        int(text_config.max_position_embeddings),
        int(text_config.attention_chunk_size or CHUNK_SIZE_WORKAROUND),
        int(getattr(text_config, "floor_scale", CHUNK_SIZE_WORKAROUND) or CHUNK_SIZE_WORKAROUND),
    )
    return limit - DECODE_RESERVE


def _resolve_dtype(torch: Any, dtype: Any, device: Any) -> Any:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32"}
        name = aliases.get(dtype.lower(), dtype.lower())
        resolved = getattr(torch, name, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use bfloat16, float16 or float32")
        return resolved
    return dtype


# -- prompt encoding --------------------------------------------------------------------------


@dataclass
class _Encoded:
    ids: list[int]
    pixel_values: Any = None
    image_count: int = 0
    prefix_key: str | None = None
    prefix_len: int = 0
    reuse: KVEntry | None = None
    """A cached conversation whose first `reuse_len` ids this prompt starts with."""
    reuse_len: int = 0

    @property
    def reused(self) -> int:
        """Leading positions whose KV comes from a cache."""
        return self.reuse_len if self.reuse is not None else self.prefix_len


class PromptEncoder:
    """Rendered prompts → the exact token ids (and pixel values) Llama Guard 4 is fed.

    Needs only the tokenizer for text; images need the checkpoint's `Llama4Processor`.

    >>> encoder = PromptEncoder.load("/path/to/llama4-tokenizer")      # doctest: +SKIP
    >>> encoder.prompt_token_ids("How to make a bomb?")[:2]            # doctest: +SKIP
    [200000, 200005]
    """

    def __init__(self, tokenizer: Any, processor: Any | None = None, *, source: str = "") -> None:
        self.tokenizer = tokenizer
        self.processor = processor
        self.source = source
        self.special = {t: self._token_id(t) for t in (*_ALLOWED_SPECIAL, "<|finetune_right_pad|>")}
        self.safe_id = self._single("safe")
        self.unsafe_id = self._single("unsafe")
        self.double_newline_id = self._single("\n\n")
        self.newline_id = self._single("\n")
        self.pad_id = self.special["<|finetune_right_pad|>"]
        self.eot_id = self.special["<|eot|>"]
        allowed = {self.special[t] for t in _ALLOWED_SPECIAL}
        specials = set(getattr(tokenizer, "all_special_ids", ()))
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        specials |= {i for i, tok in decoder.items() if getattr(tok, "special", False)}
        self._forbidden = frozenset(specials - allowed)
        self._plain_vocab: list[tuple[int, str]] | None = None
        self._prefix_ids: dict[str, tuple[int, ...]] = {}
        self._constraints: dict[tuple[str, ...], _CodeConstraint] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | os.PathLike[str], **hub_kwargs: Any) -> PromptEncoder:
        """Load the processor (tokenizer + image processor) or, failing that, the tokenizer."""
        _, transformers = _deps()
        source = str(path)
        processor = None
        if _may_have_processor(source):
            verbosity = transformers.logging.get_verbosity()
            # The processor warns about a generic config class it builds internally.
            transformers.logging.set_verbosity_error()
            try:
                processor = transformers.Llama4Processor.from_pretrained(source, **hub_kwargs)
            except Exception:  # no processor files: a tokenizer-only directory is fine for text
                processor = None
            finally:
                transformers.logging.set_verbosity(verbosity)
        try:
            tokenizer = (
                processor.tokenizer if processor is not None
                else transformers.AutoTokenizer.from_pretrained(source, **hub_kwargs)
            )
        except Exception as exc:
            raise _load_error(source, exc) from exc
        return cls(tokenizer, processor, source=source)

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if not isinstance(token_id, int) or token_id < 0 or token_id == self.tokenizer.unk_token_id:
            raise ModelLoadError(f"the tokenizer of {self.source!r} has no {token} token")
        return token_id

    def _single(self, text: str) -> int:
        ids = self.encode_text(text)
        if len(ids) != 1:
            raise ModelLoadError(f"the tokenizer of {self.source!r} splits {text!r} into {ids}")
        return ids[0]

    def encode_text(self, text: str) -> list[int]:
        """Tokenize with the template's special tokens recognised; nothing is added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    # -- images -----------------------------------------------------------------------------

    def _require_processor(self) -> Any:
        if self.processor is None:
            raise ModelLoadError(
                f"images need the Llama4Processor of a model checkpoint; {self.source!r} has "
                "only a tokenizer"
            )
        return self.processor

    def image_token_count(self, image: ImagePart) -> int:
        """Tokens one image expands to: 147 for one tile, 147 + 145·h·w for h×w tiles (>1)."""
        processor = self._require_processor()
        image_processor = processor.image_processor
        tile = int(image_processor.size["height"])
        rows, cols = _tile_grid(
            image.height, image.width, tile, int(image_processor.max_patches),
            bool(getattr(image_processor, "resize_to_max_canvas", False)),
        )
        patch = int(processor.patch_size)
        per_tile = (tile // patch) ** 2 // int(processor.downsample_ratio)
        count = per_tile + 3
        if rows * cols > 1:
            count += rows * cols * per_tile + rows * cols
        return count

    def _pixel_inputs(self, text: str, images: Sequence[ImagePart]) -> tuple[list[int], Any]:
        processor = self._require_processor()
        pictures = []
        for index, image in enumerate(images):
            try:
                pictures.append(image.to_pil())
            except Exception as exc:
                raise ImageError(f"image {index + 1} cannot be decoded: {exc}") from exc
        try:
            batch = processor(
                text=[text], images=pictures, add_special_tokens=False, return_tensors="pt"
            )
        except Exception as exc:
            raise ImageError(f"the image processor rejected the images: {exc}") from exc
        return batch["input_ids"][0].tolist(), batch["pixel_values"]

    # -- prompts ----------------------------------------------------------------------------

    def count_tokens(
        self, prompt: RenderedPrompt, images: Sequence[ImagePart] | None = None
    ) -> int:
        """Exact prompt length including image expansion (images default to the prompt's own)."""
        if images is None:
            images = getattr(prompt, "images", None)
        count = len(self.encode_text(prompt.text))
        if images is None:
            # Without the images only the single-tile size is known: a lower bound.
            return count + 146 * prompt.image_count
        return count + sum(self.image_token_count(img) - 1 for img in images)

    def encode(self, request: ClassificationRequest, limit: int | None = None) -> _Encoded:
        """Ids (and pixel values) for `request`, checked for length and integrity."""
        prompt = request.prompt
        images = request.conversation.images
        if len(images) != prompt.image_count or prompt.text.count(IMAGE_TOKEN) != len(images):
            raise PromptIntegrityError(
                f"the prompt has {prompt.text.count(IMAGE_TOKEN)} image markers for "
                f"{len(images)} images"
            )
        if not images:
            ids = self.encode_text(prompt.text)
            if limit is not None and len(ids) > limit:
                raise PromptTooLongError(len(ids), limit)
            self.check_integrity(ids, 0)
            return _Encoded(ids)
        if limit is not None:
            expected = self.count_tokens(prompt, images)
            if expected > limit:
                raise PromptTooLongError(expected, limit)
        ids, pixel_values = self._pixel_inputs(prompt.text, images)
        if limit is not None and len(ids) > limit:
            raise PromptTooLongError(len(ids), limit)
        self.check_integrity(ids, len(images))
        return _Encoded(ids, pixel_values, len(images))

    def check_integrity(self, ids: Sequence[int], image_count: int) -> None:
        """Raise `PromptIntegrityError` unless the special tokens are exactly the template's."""
        expected = dict(_STRUCTURE)
        expected.update(dict.fromkeys(_IMAGE_TOKENS, image_count))
        counts = dict.fromkeys(expected, 0)
        by_id = {self.special[t]: t for t in expected}
        forbidden = 0
        for token_id in ids:
            name = by_id.get(token_id)
            if name is not None:
                counts[name] += 1
            elif token_id in self._forbidden:
                forbidden += 1
        wrong = [f"{t}: {counts[t]} (expected {n})" for t, n in expected.items() if counts[t] != n]
        if forbidden:
            wrong.append(f"{forbidden} other special token(s)")
        if not wrong and (ids[0] != self.special["<|begin_of_text|>"]
                          or ids[-1] != self.special["<|header_end|>"]):
            wrong.append("the prompt does not start and end with the template's tokens")
        if wrong:
            raise PromptIntegrityError(
                "the tokenized prompt has an unexpected structure: " + "; ".join(wrong)
            )

    def prefix_ids(self, prefix: str) -> list[int]:
        """Ids of a prompt prefix (`RenderedPrompt.prefix`), memoised."""
        with self._lock:
            ids = self._prefix_ids.get(prefix)
        if ids is None:
            ids = tuple(self.encode_text(prefix))
            with self._lock:
                self._prefix_ids[prefix] = ids
                while len(self._prefix_ids) > 256:
                    self._prefix_ids.pop(next(iter(self._prefix_ids)))
        return list(ids)

    def prompt_token_ids(
        self,
        request_or_conversation: ClassificationRequest | ConversationLike,
        categories: CategorySpec | None = None,
        exclude: str | Iterable[str] = (),
    ) -> list[int]:
        """Exactly the ids the backend feeds the model for this check (before ``"\\n\\n"``)."""
        request = ClassificationRequest.of(request_or_conversation, categories, exclude)
        return self.encode(request).ids

    # -- constrained category decoding --------------------------------------------------------

    def plain_vocab(self) -> list[tuple[int, str]]:
        """Tokens made only of ASCII letters, digits, ``_`` and ``,`` (byte-level ≡ text)."""
        if self._plain_vocab is None:
            allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_,")
            self._plain_vocab = sorted(
                (i, tok) for tok, i in self.tokenizer.get_vocab().items()
                if tok and set(tok) <= allowed and i not in self._forbidden
            )
        return self._plain_vocab

    def code_constraint(self, codes: tuple[str, ...]) -> _CodeConstraint:
        """The decoding constraint for a category list (cached per list)."""
        with self._lock:
            constraint = self._constraints.get(codes)
            if constraint is None:
                chars = set("".join(codes)) | {","}
                vocab = [(i, tok) for i, tok in self.plain_vocab() if set(tok) <= chars]
                constraint = self._constraints[codes] = _CodeConstraint(codes, vocab, self.eot_id)
                while len(self._constraints) > 32:
                    self._constraints.pop(next(iter(self._constraints)))
            return constraint


class _CodeConstraint:
    """Greedy choice restricted to ``CODE(,CODE)*`` over the listed codes, then ``<|eot|>``."""

    def __init__(self, codes: tuple[str, ...], vocab: list[tuple[int, str]], eot_id: int) -> None:
        self.codes = frozenset(codes)
        self.prefixes = frozenset(c[:i] for c in codes for i in range(len(c) + 1))
        self.ids = [i for i, _ in vocab]
        self.pieces = [t for _, t in vocab]
        self.eot_id = eot_id
        self._ids_tensor: Any = None

    def valid(self, text: str) -> bool:
        """`text` can still become a list of distinct listed codes."""
        *done, last = text.split(",")
        if len(set(done)) != len(done) or not all(p in self.codes for p in done):
            return False
        return last in self.prefixes and any(
            c.startswith(last) for c in self.codes if c not in done
        )

    def complete(self, text: str) -> bool:
        parts = text.split(",")
        return bool(text) and len(set(parts)) == len(parts) and all(p in self.codes for p in parts)

    def choose(self, text: str, logits: Any) -> tuple[int, str]:
        """The best allowed next token for `text` given one row of logits: (id, piece)."""
        torch, _ = _deps()
        if self._ids_tensor is None or self._ids_tensor.device != logits.device:
            self._ids_tensor = torch.tensor(self.ids, dtype=torch.long, device=logits.device)
        scores = logits.index_select(0, self._ids_tensor)
        best: tuple[int, str, float] | None = None
        for j in torch.argsort(scores, descending=True).tolist():
            if self.valid(text + self.pieces[j]):
                best = (self.ids[j], self.pieces[j], float(scores[j]))
                break
        if self.complete(text) and (best is None or float(logits[self.eot_id]) >= best[2]):
            return self.eot_id, ""
        if best is None:
            return self.eot_id, ""
        return best[0], best[1]

    def finish(self, text: str) -> str:
        """`text` cut back to its last complete code (decoding may stop mid-code)."""
        while text and not self.complete(text):
            text = text[:-1]
        return text


def _packed_length(jobs: Sequence[_Job]) -> int:
    """Upper bound of a packed row's length: every prompt whole, plus ``"\\n\\n"``."""
    return sum(len(job.encoded.ids) + 1 for job in jobs)


def _set_scores(jobs: Sequence[_Job], verdict_logits: Any, rerun: bool = False) -> list[int]:
    """Set each job's score from its (unsafe, safe) logits; return the rows at or over threshold.

    A `rerun` (jobs already flagged by a packed pass, recomputed only to decode categories) keeps
    the scores that flagged them, so score and verdict cannot disagree by float noise, and
    returns every row.
    """
    rows = []
    for row, job in enumerate(jobs):
        unsafe, safe = (float(x) for x in verdict_logits[row])
        if not (math.isfinite(unsafe) and math.isfinite(safe)):
            raise BackendError("the model produced non-finite logits")
        if rerun:
            rows.append(row)
            continue
        top = max(unsafe, safe)
        # Shifting both log-probabilities by the same amount keeps the ratio exact and avoids
        # exp() underflow.
        job.score = score_from_logprobs(unsafe - top, safe - top) or 0.0
        if job.score >= job.request.threshold:
            rows.append(row)
    return rows


def _packed_mask(segments: Sequence[tuple[int, int, int, int]], past: int, dtype: Any) -> Any:
    """The 4-D additive mask of a packed row.

    `segments` are (first row, end row, first reused column, reused length) per prompt: its
    rows see its reused columns and, causally, its own columns (after the `past` ones).
    """
    torch, _ = _deps()
    total = segments[-1][1] if segments else 0
    blocked = torch.finfo(dtype).min
    mask = torch.full((total, past + total), blocked, dtype=dtype)
    for start, stop, reused_start, reused in segments:
        if reused:
            mask[start:stop, reused_start: reused_start + reused] = 0
        mask[start:stop, past + start: past + stop] = torch.triu(
            torch.full((stop - start, stop - start), blocked, dtype=dtype), diagonal=1
        )
    return mask[None, None]


def _text_parts(model: Any) -> tuple[Any, Any]:
    """The text decoder (embeddings → layers → final norm) and the output head's weight.

    (None, None) when the model is not laid out like `Llama4ForConditionalGeneration` (or the
    head has a bias): the backend then calls the whole model and reads the full logits.
    """
    torch, _ = _deps()
    language_model = getattr(model, "language_model", None)
    decoder = getattr(language_model, "model", None)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    # Only a plain, materialised floating-point head can be sliced by rows: quantized or
    # offloaded heads (accelerate hooks, weights on "meta") go through the model itself.
    if decoder is None or head is None or type(head) is not torch.nn.Linear:
        return None, None
    if head.bias is not None:
        return None, None
    weight = head.weight
    if not weight.is_floating_point() or weight.device.type == "meta" or hasattr(head, "_hf_hook"):
        return None, None
    return decoder, weight


def _may_have_processor(source: str) -> bool:
    local = os.path.isdir(source)
    return not local or any(
        os.path.isfile(os.path.join(source, name))
        for name in ("processor_config.json", "preprocessor_config.json")
    )


def _tile_grid(
    height: int, width: int, tile: int, max_patches: int, resize_to_max_canvas: bool
) -> tuple[int, int]:
    """The tile grid (rows, cols) Llama4ImageProcessor picks for an image of this size."""
    torch, _ = _deps()
    from transformers.image_utils import SizeDict
    from transformers.models.llama4.image_processing_llama4 import (
        find_supported_resolutions,
        get_best_fit,
    )

    resolutions = torch.tensor(
        find_supported_resolutions(max_patches, SizeDict(height=tile, width=tile))
    )
    canvas = get_best_fit((height, width), resolutions, resize_to_max_canvas=resize_to_max_canvas)
    return int(canvas[0]) // tile, int(canvas[1]) // tile


def prompt_token_ids(
    tokenizer_path_or_encoder: str | os.PathLike[str] | PromptEncoder,
    request_or_conversation: ClassificationRequest | ConversationLike,
    categories: CategorySpec | None = None,
    exclude: str | Iterable[str] = (),
) -> list[int]:
    """The ids `TransformersBackend` would feed the model; loads only the tokenizer/processor."""
    encoder = (
        tokenizer_path_or_encoder if isinstance(tokenizer_path_or_encoder, PromptEncoder)
        else PromptEncoder.load(tokenizer_path_or_encoder)
    )
    return encoder.prompt_token_ids(request_or_conversation, categories, exclude)


# -- the backend ------------------------------------------------------------------------------


@dataclass
class _Job:
    index: int
    request: ClassificationRequest
    encoded: _Encoded
    score: float = 0.0
    categories_text: str | None = None



class TransformersBackend(Backend):
    """Llama Guard 4 run in-process by transformers (GPU or CPU).

    One model class is loaded: `Llama4ForConditionalGeneration`. Text-only checks call it without
    pixel values, which runs exactly its language-model path (embeddings → decoder → head), so
    logits are identical to `Llama4ForCausalLM` on the same checkpoint; loading that class as
    well would hold a second copy of the text weights, and loading it instead would make images
    impossible. The idle vision tower costs memory only (a few percent of the 12B weights).

    Model work runs on a single worker thread owned by the backend (torch work serialised, the
    event loop never blocks); `aclose()` stops it and drops the model.

    Options: `max_batch_size` / `max_batch_tokens` bound a text sub-batch, sorted by length and
    left-padded, or packed into one row without padding (`packing`: ``"auto"`` packs when padding
    would exceed 30%, ``True`` always, ``False`` never); image requests run one at a time.
    `prefix_cache` keeps the KV of up to `prefix_cache_size` prompt prefixes (everything through
    ``<BEGIN CONVERSATION>\\n``, keyed by its text, i.e. role + category list, per loaded model),
    used only when the prefix's ids are a true prefix of the prompt's ids, and the KV of recent
    checks' conversations, up to `conversation_cache_tokens` positions (text only: image positions
    depend on pixels the ids do not show; 0 turns it off). Per position this costs 2 × layers ×
    KV heads × head dim × dtype bytes — about 196 KB for the 12B model in bfloat16 assuming Llama
    4 Scout's text geometry (48 layers, 8 KV heads of 128), so the default 4096 positions take
    ≈ 800 MB. Results equal the uncached, unpacked path within float tolerance (1e-4 on scores in
    float32). `stats` counts the tokens computed and reused per check.

    >>> backend = TransformersBackend.from_pretrained(device="cuda")   # doctest: +SKIP
    >>> backend.classify_sync("How do I make a bomb?").codes          # doctest: +SKIP
    ('S9',)
    """

    name = "transformers"

    def __init__(
        self,
        model: Any,
        encoder: PromptEncoder,
        *,
        max_prompt_tokens: int | None = None,
        max_batch_size: int = 8,
        max_batch_tokens: int = 32768,
        prefix_cache: bool = True,
        prefix_cache_size: int = 8,
        conversation_cache_tokens: int = 4096,
        packing: bool | Literal["auto"] = "auto",
        source: str = "",
    ) -> None:
        torch, _ = _deps()
        if max_batch_size < 1 or max_batch_tokens < 1:
            raise ValueError("max_batch_size and max_batch_tokens must be >= 1")
        if prefix_cache_size < 0 or conversation_cache_tokens < 0:
            raise ValueError("prefix_cache_size and conversation_cache_tokens must be >= 0")
        self._torch = torch
        self._model: Any = model
        self.encoder = encoder
        self.source = source
        self.device = next(model.parameters()).device
        self.dtype = model.dtype
        text_config = model.config.get_text_config()
        self._limit = max_prompt_tokens or default_max_prompt_tokens(text_config)
        self.max_prompt_tokens = self._limit
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.prefix_cache = prefix_cache and prefix_cache_size > 0
        self.prefix_cache_size = prefix_cache_size
        if packing not in (True, False, "auto"):
            raise ValueError("packing must be True, False or 'auto'")
        self.packing: bool | Literal["auto"] = packing
        self.stats = BackendStats()
        #: True when the checkpoint is a random-weight dev model (its verdicts are meaningless)
        self.dev_model = bool(source) and is_dev_model(source)
        if self.dev_model:
            _log.warning("%s is a random-weight dev model: its verdicts are meaningless", source)
        eos = text_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self._stop_ids = frozenset(eos_ids | {encoder.eot_id})
        self._prefixes: OrderedDict[str, KVEntry] = OrderedDict()
        self._conversations = ConversationCache(conversation_cache_tokens)
        self._suffix_lengths: dict[AssessedRole, int] = {}
        self._decoder, self._head_weight = _text_parts(model)
        self._final_feed_forward = FinalFeedForward(self._decoder)
        # the hooks stay on a caller's model otherwise: take them off when this backend goes
        self._remove_hooks = weakref.finalize(self, self._final_feed_forward.remove)
        self._verdict_head: Any = None
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="guard-plugins-transformers"
        )

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | os.PathLike[str] = DEFAULT_MODEL_ID,
        device: str | Any | None = None,
        dtype: str | Any | None = None,
        max_prompt_tokens: int | None = None,
        *,
        max_batch_size: int = 8,
        max_batch_tokens: int = 32768,
        prefix_cache: bool = True,
        prefix_cache_size: int = 8,
        conversation_cache_tokens: int = 4096,
        packing: bool | Literal["auto"] = "auto",
        **kwargs: Any,
    ) -> TransformersBackend:
        """Load Llama Guard 4 (or a dev model) from the Hub or a local directory.

        bfloat16 on CUDA, float32 on CPU unless `dtype` says otherwise. Extra keyword arguments
        (``local_files_only``, ``revision``, ``token``, ``device_map``, ``attn_implementation``...)
        go to ``from_pretrained``; the Hub ones also to the config and processor.
        """
        torch, transformers = _deps()
        source = os.fspath(model_id_or_path)
        hub = {k: kwargs[k] for k in _HUB_KEYS if k in kwargs}
        target = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu"
        )
        torch_dtype = _resolve_dtype(torch, dtype, target)
        try:
            config = load_llama_guard_config(source, **hub)
            model, info = transformers.Llama4ForConditionalGeneration.from_pretrained(
                source, config=config, dtype=torch_dtype, output_loading_info=True, **kwargs
            )
            missing = sorted(info.get("missing_keys") or ())
            if missing:
                raise ModelLoadError(
                    f"the checkpoint lacks {len(missing)} weights (e.g. {missing[0]}); refusing "
                    "to run a partly random model"
                )
            encoder = PromptEncoder.load(source, **hub)
            if encoder.processor is None:
                raise ModelLoadError("no Llama4Processor (processor_config.json) was found")
        except MissingDependencyError:
            raise
        except Exception as exc:
            raise _load_error(source, exc) from exc
        if "device_map" not in kwargs:
            model = model.to(target)
        model.eval()
        return cls(
            model,
            encoder,
            max_prompt_tokens=max_prompt_tokens,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
            prefix_cache=prefix_cache,
            prefix_cache_size=prefix_cache_size,
            conversation_cache_tokens=conversation_cache_tokens,
            packing=packing,
            source=source,
        )

    @staticmethod
    def load_tokenizer(path: str | os.PathLike[str], **hub_kwargs: Any) -> PromptEncoder:
        """Only the tokenizer/processor part (for ``guard-plugins render --tokens``)."""
        return PromptEncoder.load(path, **hub_kwargs)

    # -- public API ---------------------------------------------------------------------------

    async def classify_batch(self, requests: Sequence[ClassificationRequest]) -> list[Verdict]:
        if not requests:
            return []
        return await self._run(self._classify, list(requests))

    def count_tokens(
        self, prompt: RenderedPrompt, images: Sequence[ImagePart] | None = None
    ) -> int:
        """Exact prompt length in tokens, image expansion included."""
        return self.encoder.count_tokens(prompt, images)

    def prompt_token_ids(
        self,
        request_or_conversation: ClassificationRequest | ConversationLike,
        categories: CategorySpec | None = None,
        exclude: str | Iterable[str] = (),
    ) -> list[int]:
        """Exactly the ids this backend feeds the model for a check (before ``"\\n\\n"``)."""
        return self.encoder.prompt_token_ids(request_or_conversation, categories, exclude)

    async def generate_raw(
        self,
        prompt: str,
        images: Sequence[ImagePart] = (),
        max_new_tokens: int = 10,
        top_logprobs: int = 5,
    ) -> RawCompletion:
        """Plain greedy generation on a raw prompt string (nothing added, specials recognised)."""
        if max_new_tokens < 0 or top_logprobs < 0:
            raise ValueError("max_new_tokens and top_logprobs must be >= 0")
        return await self._run(self._generate, prompt, tuple(images), max_new_tokens, top_logprobs)

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        self._remove_hooks()
        self._model = self._decoder = self._head_weight = self._verdict_head = None
        self.clear_cache()
        gc.collect()
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()

    @property
    def conversation_cache_tokens(self) -> int:
        """Positions of conversation KV kept for reuse (0: off). Set between calls only."""
        return self._conversations.max_tokens

    @conversation_cache_tokens.setter
    def conversation_cache_tokens(self, value: int) -> None:
        executor = self._executor
        if executor is None:
            self._conversations.resize(value)
        else:  # after the work already queued, which may be using the cache
            executor.submit(self._conversations.resize, value).result()

    def clear_cache(self) -> None:
        """Drop every cached prefix and conversation KV (the next checks start cold).

        Waits for the model work already queued, which may be using them.
        """
        executor = self._executor
        if executor is None:
            self._clear_cache()
        else:
            executor.submit(self._clear_cache).result()

    def _clear_cache(self) -> None:
        self._prefixes.clear()
        self._conversations.clear()

    def __repr__(self) -> str:
        return f"<TransformersBackend {self.source!r} device={self.device} dtype={self.dtype}>"

    # -- worker side ----------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        executor = self._executor
        if executor is None:
            raise BackendError("the TransformersBackend is closed")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    def _forward(self, **inputs: Any) -> Any:
        if self._model is None:
            raise BackendError("the TransformersBackend is closed")
        with self._torch.inference_mode():
            return self._model(**inputs, use_cache=True, logits_to_keep=1)

    def _new_cache(self, kv: Sequence[tuple[Any, Any]] = ()) -> Any:
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=list(kv) or None, config=self._model.config)

    def _classify(self, requests: list[ClassificationRequest]) -> list[Verdict]:
        start = time.perf_counter()
        jobs = [
            _Job(i, r, self.encoder.encode(r, self._limit))
            for i, r in enumerate(requests)
        ]
        for job in jobs:
            if self.prefix_cache:
                self._find_reusable(job.request, job.encoded)
        text_jobs = sorted(
            (j for j in jobs if j.encoded.pixel_values is None),
            key=lambda j: (j.encoded.prefix_key or "", len(j.encoded.ids) - j.encoded.reused),
        )
        groups: list[list[_Job]] = []
        packing = self._packing_enabled() and self.packing
        for job in text_jobs:
            last = groups[-1] if groups else None
            if last is None or len(last) >= self.max_batch_size:
                fits = False
            else:
                fits = packing is not True and (
                    last[0].encoded.prefix_key == job.encoded.prefix_key
                    and self._padded_fits([*last, job])
                )
                # packed, any prefixes and lengths fit, up to the packed row's limit (with
                # "auto", a group that mixes roles or category lists is then packed)
                fits = fits or (bool(packing) and _packed_length([*last, job]) <= self._pack_limit)
            if fits and last is not None:
                last.append(job)
            else:
                groups.append([job])
        groups += [[j] for j in jobs if j.encoded.pixel_values is not None]
        for group in groups:
            self._score(group)
        self.stats.checks += len(jobs)
        latency = (time.perf_counter() - start) * 1000
        return [self._verdict(job, latency) for job in jobs]

    def _verdict(self, job: _Job, latency: float) -> Verdict:
        request = job.request
        common: dict[str, Any] = {
            "score": job.score, "role": request.prompt.role, "backend": self.name,
            "latency_ms": latency,
        }
        if job.categories_text is None:
            return Verdict(safe=True, raw="\n\nsafe", **common)
        return parse_verdict("\n\nunsafe\n" + job.categories_text, request.listed, **common)

    def _find_reusable(self, request: ClassificationRequest, encoded: _Encoded) -> None:
        """Set the template prefix of `encoded` and, for text, the longest cached conversation."""
        key = request.prompt.prefix
        encoded.prefix_len = self._usable_prefix(key, encoded.ids)
        encoded.prefix_key = key if encoded.prefix_len else None
        if encoded.prefix_key is None or encoded.pixel_values is not None:
            return  # image positions depend on pixels the ids do not show: never reused
        entry, shared = self._conversations.match(
            key, encoded.ids, encoded.prefix_len + MIN_CONVERSATION_REUSE - 1
        )
        if entry is not None:
            encoded.reuse, encoded.reuse_len = entry, shared

    def _usable_prefix(self, prefix: str, ids: Sequence[int]) -> int:
        """Length of `prefix` in tokens if its ids are a true prefix of `ids`, else 0."""
        prefix_ids = self.encoder.prefix_ids(prefix)
        if len(prefix_ids) < len(ids) and list(ids[: len(prefix_ids)]) == prefix_ids:
            return len(prefix_ids)
        return 0

    def _prefix(self, key: str, ids: Sequence[int], count: bool = True) -> KVEntry:
        entry = self._prefixes.get(key)
        if entry is not None and entry.ids == tuple(ids):
            self._prefixes.move_to_end(key)
            self.stats.prefix_hits += count
            return entry
        torch = self._torch
        cache = self._new_cache()
        input_ids = torch.tensor([list(ids)], device=self.device)
        if self._decoder is None:
            self._forward(input_ids=input_ids, past_key_values=cache)
        else:  # only the keys and values are kept: no position's output is read
            nothing = torch.empty(0, dtype=torch.long, device=self.device)
            with torch.inference_mode(), self._final_feed_forward.selected(nothing):
                self._decoder(input_ids=input_ids, past_key_values=cache, use_cache=True)
        entry = KVEntry(tuple(ids), [(layer.keys, layer.values) for layer in cache.layers])
        self.stats.prefix_misses += 1
        self.stats.forward_passes += 1
        self.stats.tokens_computed += len(ids)
        self._prefixes[key] = entry
        while len(self._prefixes) > self.prefix_cache_size:
            self._prefixes.popitem(last=False)
        return entry

    def _score(self, jobs: list[_Job], decode_all: bool = False) -> None:
        """One forward pass for `jobs`, then categories for the unsafe ones (or all)."""
        if not decode_all and self._can_pack(jobs):
            flagged = self._score_packed(jobs)
            if flagged:  # rare: rerun padded, whose per-row cache category decoding continues
                self._score(flagged, decode_all=True)
            return
        if len(jobs) > 1 and not self._padded_fits(jobs):
            # (a group formed for packing, or its flagged re-run) halves, each within its own
            # prompt length and the token budget; one prompt alone always fits its own length
            middle = len(jobs) // 2
            self._score(jobs[:middle], decode_all)
            self._score(jobs[middle:], decode_all)
            return
        torch = self._torch
        first = jobs[0].encoded
        reused = [self._reused_kv(job.encoded, count=not decode_all) for job in jobs]
        lengths = [length for _, length in reused]
        past = max(lengths)
        rests = [[*j.encoded.ids[n:], self.encoder.double_newline_id] for j, n in zip(
            jobs, lengths, strict=True
        )]
        width = max(len(r) for r in rests)
        input_ids = torch.full((len(jobs), width), self.encoder.pad_id, dtype=torch.long)
        new_mask = torch.zeros((len(jobs), width), dtype=torch.long)
        past_mask = torch.zeros((len(jobs), past), dtype=torch.long)
        for row, (rest, length) in enumerate(zip(rests, lengths, strict=True)):
            input_ids[row, width - len(rest):] = torch.tensor(rest, dtype=torch.long)
            new_mask[row, width - len(rest):] = 1
            past_mask[row, past - length:] = 1
        positions = (
            torch.tensor(lengths, dtype=torch.long)[:, None]
            + (new_mask.cumsum(-1) - 1).clamp(min=0)
        )
        mask = torch.cat([past_mask, new_mask], 1)
        cache = self._new_cache(self._past_kv(reused, past))
        inputs: dict[str, Any] = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "position_ids": positions.to(self.device),
            "past_key_values": cache,
        }
        verdict_ids = [self.encoder.unsafe_id, self.encoder.safe_id]
        if first.pixel_values is not None or self._decoder is None:
            if first.pixel_values is not None:
                inputs["pixel_values"] = first.pixel_values.to(self.device, dtype=self.dtype)
            verdict_logits = self._forward(**inputs).logits[:, -1, verdict_ids].double().cpu()
        else:
            verdict_logits = self._project(self._last_hidden(**inputs), None).double().cpu()
        self.stats.forward_passes += 1
        computed = sum(len(r) for r in rests)
        self.stats.tokens_computed += computed
        self.stats.padding_tokens += len(jobs) * (past + width) - computed - sum(lengths)
        self.stats.reused_tokens += sum(lengths)
        self._remember(jobs, lengths, cache, [
            (row, past - length, past + width - len(rest))
            for row, (length, rest) in enumerate(zip(lengths, rests, strict=True))
        ])
        unsafe_rows = _set_scores(jobs, verdict_logits, rerun=decode_all)
        if unsafe_rows:
            last_positions = positions[:, -1]
            self._decode_categories(
                [jobs[r] for r in unsafe_rows], unsafe_rows, cache, mask, last_positions
            )

    @staticmethod
    def _padded_width(jobs: Sequence[_Job]) -> int:
        """Cache columns of a padded pass: the longest reused part plus the longest new part.

        Kept within the prompt limit (below 8192), where cache columns, not positions, still
        leave the NoPE layers' temperature and the chunked attention unaffected.
        """
        reused = max(job.encoded.reused for job in jobs)
        return reused + max(len(job.encoded.ids) - job.encoded.reused + 1 for job in jobs)

    def _padded_fits(self, jobs: Sequence[_Job]) -> bool:
        """Whether `jobs` can run as one padded pass: width within the prompt limit, rows ×
        width within `max_batch_tokens`."""
        width = self._padded_width(jobs)
        return width <= self._limit and len(jobs) * width <= self.max_batch_tokens

    @property
    def _pack_limit(self) -> int:
        """Longest packed row (bounds `_packed_length`)."""
        return min(self._limit, PACK_MAX_TOKENS, self.max_batch_tokens)

    def _packing_enabled(self) -> bool:
        if not self.packing or self._decoder is None:
            return False
        config = getattr(self._decoder, "config", None) or self._model.config
        implementation = getattr(config, "_attn_implementation", None) or "sdpa"
        return implementation in ("sdpa", "eager")  # others need their own mask format

    def _can_pack(self, jobs: Sequence[_Job]) -> bool:
        if len(jobs) < 2 or not self._packing_enabled():
            return False
        if any(job.encoded.pixel_values is not None for job in jobs):
            return False
        if _packed_length(jobs) > self._pack_limit:
            return False
        if self.packing == "auto":
            if len({job.encoded.prefix_key for job in jobs}) > 1:
                return True  # padded, each role or category list would be its own pass
            computed = [len(job.encoded.ids) - job.encoded.reused + 1 for job in jobs]
            padded = len(computed) * max(computed)
            return padded - sum(computed) > PACK_WHEN_PADDING * padded
        return True

    def _score_packed(self, jobs: list[_Job]) -> list[_Job]:
        """Score text `jobs` in one row without padding; return those at or over threshold.

        Every distinct reused KV (template prefix, cached conversations) is laid out once, then
        the computed part of every prompt; a 4-D mask lets each prompt see only its own reused
        positions and, causally, its own tokens. Positions are each prompt's own. The packed
        length stays below the 8192-position limit (`default_max_prompt_tokens`), where the
        chunked attention and the NoPE layers' temperature are unaffected by where in the row a
        prompt sits.
        """
        torch = self._torch
        reused = [self._reused_kv(job.encoded) for job in jobs]
        blocks: dict[int, tuple[KVEntry, int]] = {}
        for entry, length in reused:
            if entry is not None and length:
                known = blocks.get(id(entry), (entry, 0))[1]
                blocks[id(entry)] = (entry, max(known, length))
        offsets, past = {}, 0
        for key, (_, length) in blocks.items():
            offsets[key] = past
            past += length
        rests = [
            [*job.encoded.ids[length:], self.encoder.double_newline_id]
            for job, (_, length) in zip(jobs, reused, strict=True)
        ]
        total = sum(len(r) for r in rests)
        ids: list[int] = []
        positions: list[int] = []
        ends: list[int] = []
        layout: list[tuple[int, int, int]] = []
        segments: list[tuple[int, int, int, int]] = []
        start = 0
        for (entry, length), rest in zip(reused, rests, strict=True):
            size = len(rest)
            offset = offsets[id(entry)] if entry is not None and length else 0
            segments.append((start, start + size, offset, length))
            ids += rest
            positions += range(length, length + size)
            layout.append((0, offset, past + start))
            start += size
            ends.append(start - 1)
        mask_4d = _packed_mask(segments, past, self.dtype).to(self.device)
        kv = [
            (torch.cat([e.kv[layer][0][:, :, :n] for e, n in blocks.values()], dim=2),
             torch.cat([e.kv[layer][1][:, :, :n] for e, n in blocks.values()], dim=2))
            for layer in range(len(next(iter(blocks.values()))[0].kv))
        ] if blocks else []
        cache = self._new_cache(kv)
        if self._decoder is None:
            raise BackendError("the TransformersBackend is closed")
        read = torch.tensor(ends, device=self.device)
        with torch.inference_mode(), self._final_feed_forward.selected(read):
            hidden = self._decoder(
                input_ids=torch.tensor([ids], device=self.device),
                attention_mask={"full_attention": mask_4d, "chunked_attention": mask_4d},
                position_ids=torch.tensor([positions], device=self.device),
                past_key_values=cache,
                use_cache=True,
            ).last_hidden_state[0, ends]
        verdict_logits = self._project(hidden, None).double().cpu()
        self.stats.forward_passes += 1
        self.stats.tokens_computed += total
        self.stats.reused_tokens += sum(length for _, length in reused)
        self._remember(jobs, [length for _, length in reused], cache, layout)
        return [jobs[row] for row in _set_scores(jobs, verdict_logits)]

    def _reused_kv(self, encoded: _Encoded, count: bool = True) -> tuple[KVEntry | None, int]:
        """The cached KV `encoded` starts with (a conversation, else its template prefix)."""
        if encoded.reuse is not None:
            if count:
                self.stats.prefix_hits += 1
                self.stats.conversation_hits += 1
            return encoded.reuse, encoded.reuse_len
        if encoded.prefix_key is not None and encoded.prefix_len:
            entry = self._prefix(encoded.prefix_key, encoded.ids[: encoded.prefix_len], count)
            return entry, encoded.prefix_len
        return None, 0

    def _past_kv(
        self, reused: Sequence[tuple[KVEntry | None, int]], past: int
    ) -> list[tuple[Any, Any]]:
        """Per-layer past KV for a batch, each row's reused positions right-aligned at `past`."""
        sources = [(entry, length) for entry, length in reused if entry is not None and length]
        if not sources:
            return []
        count = len(reused)
        entry, length = sources[0]
        if len(sources) == count and all(e is entry and n == length for e, n in sources):
            return [(k[:, :, :length].expand(count, -1, -1, -1),
                     v[:, :, :length].expand(count, -1, -1, -1)) for k, v in entry.kv]
        layers = []
        for index, (k0, v0) in enumerate(entry.kv):
            keys = k0.new_zeros((count, k0.shape[1], past, k0.shape[3]))
            values = v0.new_zeros((count, v0.shape[1], past, v0.shape[3]))
            for row, (source, n) in enumerate(reused):
                if source is not None and n:
                    k, v = source.kv[index]
                    keys[row, :, past - n:] = k[0, :, :n]
                    values[row, :, past - n:] = v[0, :, :n]
            layers.append((keys, values))
        return layers

    def _remember(
        self,
        jobs: Sequence[_Job],
        lengths: Sequence[int],
        cache: Any,
        layout: Sequence[tuple[int, int, int]],
    ) -> None:
        """Keep the KV of each text prompt's conversation part for later checks of it.

        `layout[i]` locates job i in the pass's cache: (batch row, first column of its reused
        positions, first column of its computed positions).
        """
        if not (self.prefix_cache and self._conversations.max_tokens):
            return
        torch = self._torch
        for job, length, (row, past_start, start) in zip(jobs, lengths, layout, strict=True):
            encoded = job.encoded
            if encoded.prefix_key is None or encoded.pixel_values is not None:
                continue
            cut = len(encoded.ids) - self._suffix_length(job.request.prompt.role)
            if cut <= length:
                continue
            columns = torch.cat([
                torch.arange(past_start, past_start + length),
                torch.arange(start, start + cut - length),
            ]).to(self.device)
            kv = [
                (layer.keys[row: row + 1].index_select(2, columns),
                 layer.values[row: row + 1].index_select(2, columns))
                for layer in cache.layers
            ]
            self._conversations.add(KVEntry(tuple(encoded.ids[:cut]), kv, encoded.prefix_key))

    def _suffix_length(self, role: AssessedRole) -> int:
        """Tokens of the closing lines after the conversation (never shared between checks)."""
        length = self._suffix_lengths.get(role)
        if length is None:
            length = self._suffix_lengths[role] = len(self.encoder.encode_text(prompt_suffix(role)))
        return length

    def _last_hidden(self, **inputs: Any) -> Any:
        """The decoder's final hidden state at the last position (no vocabulary projection)."""
        if self._decoder is None:
            raise BackendError("the TransformersBackend is closed")
        torch = self._torch
        last = torch.tensor([inputs["input_ids"].shape[1] - 1], device=self.device)
        with torch.inference_mode(), self._final_feed_forward.selected(last):
            return self._decoder(**inputs, use_cache=True).last_hidden_state[:, -1, :]

    def _project(self, hidden: Any, token_ids: Sequence[int] | None) -> Any:
        """Logits of `token_ids` only (None: ``unsafe``, ``safe``) in float32.

        The same rows of the output head the full projection would use; skipping the other
        ~202k rows removes the largest matrix product of a pass on a small batch.
        """
        torch = self._torch
        with torch.inference_mode():
            if token_ids is None:
                if self._verdict_head is None:
                    rows = [self.encoder.unsafe_id, self.encoder.safe_id]
                    self._verdict_head = self._head_weight[rows].float()
                weight = self._verdict_head
            else:
                index = torch.tensor(
                    list(token_ids), dtype=torch.long, device=self._head_weight.device
                )
                weight = self._head_weight.index_select(0, index).float()
            return torch.nn.functional.linear(hidden.to(weight.device).float(), weight)

    def _decode_categories(
        self, jobs: list[_Job], rows: list[int], cache: Any, mask: Any, last_positions: Any
    ) -> None:
        """Teacher-force ``unsafe\\n`` on the scoring pass's cache, then decode codes greedily."""
        torch = self._torch
        index = torch.tensor(rows, dtype=torch.long)
        if len(rows) < mask.shape[0]:
            for layer in cache.layers:
                layer.batch_select_indices(index.to(self.device))
        mask, positions = mask[index], last_positions[index][:, None]
        count = len(rows)
        step = torch.tensor([[self.encoder.unsafe_id, self.encoder.newline_id]] * count)
        texts = [""] * count
        done = [False] * count
        constraints = [
            self.encoder.code_constraint(tuple(c.code for c in job.request.listed))
            for job in jobs
        ]
        # Only tokens a constraint can choose are projected; the others stay at -inf.
        candidates = sorted({self.encoder.eot_id}.union(*(c.ids for c in constraints)))
        candidate_index = torch.tensor(candidates, dtype=torch.long)
        for _ in range(MAX_CATEGORY_TOKENS):
            width = step.shape[1]
            mask = torch.cat([mask, torch.ones((count, width), dtype=torch.long)], 1)
            positions = positions[:, -1:] + torch.arange(1, width + 1)
            inputs = {
                "input_ids": step.to(self.device),
                "attention_mask": mask.to(self.device),
                "position_ids": positions.to(self.device),
                "past_key_values": cache,
            }
            if self._decoder is None:
                logits = self._forward(**inputs).logits[:, -1, :].float().cpu()
            else:
                selected = self._project(self._last_hidden(**inputs), candidates).cpu()
                logits = torch.full((count, self._head_weight.shape[0]), -math.inf)
                logits[:, candidate_index] = selected
            self.stats.forward_passes += 1
            self.stats.tokens_computed += count * width
            chosen = []
            for row in range(count):
                token = self.encoder.pad_id
                if not done[row]:
                    token, piece = constraints[row].choose(texts[row], logits[row])
                    if token == self.encoder.eot_id:
                        done[row] = True
                    texts[row] += piece
                chosen.append([token])
            if all(done):
                break
            step = torch.tensor(chosen, dtype=torch.long)
        self.stats.decoded_checks += count
        for job, text, constraint in zip(jobs, texts, constraints, strict=True):
            job.categories_text = constraint.finish(text)

    def _generate(
        self, prompt: str, images: tuple[ImagePart, ...], max_new_tokens: int, top_k: int
    ) -> RawCompletion:
        torch = self._torch
        if images:
            ids, pixel_values = self.encoder._pixel_inputs(prompt, images)
        else:
            ids, pixel_values = self.encoder.encode_text(prompt), None
        if not ids:
            raise BackendError("the prompt is empty")
        limit = self._limit + DECODE_RESERVE
        if len(ids) + max_new_tokens > limit:
            raise PromptTooLongError(len(ids) + max_new_tokens, limit)
        prefix_len, kv = 0, []
        cut = prompt.find(_CONVERSATION_START)
        if self.prefix_cache and cut >= 0:
            prefix = prompt[: cut + len(_CONVERSATION_START)]
            prefix_len = self._usable_prefix(prefix, ids)
            if prefix_len:
                kv = self._prefix(prefix, ids[:prefix_len]).kv
        cache = self._new_cache(kv)
        inputs: dict[str, Any] = {
            "input_ids": torch.tensor([ids[prefix_len:]], device=self.device),
            "position_ids": torch.arange(prefix_len, len(ids), device=self.device)[None],
        }
        if pixel_values is not None:
            inputs["pixel_values"] = pixel_values.to(self.device, dtype=self.dtype)
        generated: list[int] = []
        chosen_logprobs: list[float] = []
        tops: list[list[tuple[str, float]]] = []
        finish = "length"
        position = len(ids)
        for _ in range(max_new_tokens):
            out = self._forward(past_key_values=cache, **inputs)
            self.stats.forward_passes += 1
            self.stats.tokens_computed += inputs["input_ids"].shape[1]
            logprobs = torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu()
            token = int(torch.argmax(logprobs))
            generated.append(token)
            chosen_logprobs.append(float(logprobs[token]))
            if top_k:
                values, indices = torch.topk(logprobs, min(top_k, logprobs.shape[0]))
                tops.append([
                    (self.encoder.decode([int(i)], skip_special_tokens=False), float(v))
                    for v, i in zip(values.tolist(), indices.tolist(), strict=True)
                ])
            if token in self._stop_ids:
                finish = "stop"
                break
            inputs = {
                "input_ids": torch.tensor([[token]], device=self.device),
                "position_ids": torch.tensor([[position]], device=self.device),
            }
            position += 1
        return RawCompletion(
            text=self.encoder.decode(generated, skip_special_tokens=True),
            token_ids=generated,
            top_logprobs=tops,
            token_logprobs=chosen_logprobs,
            finish_reason=finish,
            prompt_tokens=len(ids),
        )
