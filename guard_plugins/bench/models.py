"""The models a benchmark run compares: the dev model cache, the baseline and our backend.

`HFBaseline` is the usage shown in Llama Guard 4's release notes, on the same checkpoint: one
message at a time, the processor turns the chat-template prompt into ids, then
``model.generate(**inputs, max_new_tokens=3, do_sample=False)`` (three tokens: ``"\\n\\n"``,
``"safe"``, ``<|eot|>`` — the length of a real "safe" answer). A dev model has no Llama Guard
chat template, so the prompt text comes from `guard_plugins.prompt.render_prompt`, which is byte
identical to the official template (tests/test_prompt.py), and is tokenized by the processor
exactly as ``apply_chat_template(tokenize=True)`` would (no extra special tokens).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard_plugins.conversation import Conversation
from guard_plugins.devmodel import DEV_MODEL_CACHE_ENV
from guard_plugins.prompt import render_prompt

__all__ = [
    "DEV_MODEL_CACHE_ENV",
    "BaselineCheck",
    "HFBaseline",
    "dev_model_dir",
    "ensure_dev_model",
    "load_backend",
    "model_description",
]

BASELINE_NEW_TOKENS = 3

Log = Callable[[str], None]


def dev_model_dir(size: str, builtin_tokenizer: bool = False) -> Path:
    """Where the benchmark's dev model of `size` is cached (`devmodel.dev_model_cache_dir`)."""
    from guard_plugins.devmodel import dev_model_cache_dir

    return dev_model_cache_dir("bench" if size == "bench" else "tiny", builtin_tokenizer)


def ensure_dev_model(size: str, log: Log, *, builtin_tokenizer: bool = False) -> Path:
    """The cached dev model of `size`, built once (`devmodel.ensure_dev_model`)."""
    from guard_plugins.devmodel import ensure_dev_model as ensure

    return ensure(
        "bench" if size == "bench" else "tiny", builtin_tokenizer=builtin_tokenizer, log=log
    )


def model_description(path: Path) -> dict[str, Any]:
    """Size, parameters and dev-model status of the checkpoint at `path`."""
    from guard_plugins.devmodel import dev_model_info

    info = dev_model_info(path)
    described: dict[str, Any] = {"path": str(path), "dev_model": info is not None}
    if info is not None:
        for key in ("size", "parameters", "vocab_size", "tokenizer", "architecture"):
            described[key] = info.get(key)
    return described


def load_backend(path: Path, device: str) -> Any:
    """Our `TransformersBackend` on `path`, with its default options (prefix cache on).

    The throughput suite changes ``max_batch_size`` per run and restores it, so the guard suite
    sees the backend as users get it.
    """
    from guard_plugins.backends.transformers import TransformersBackend

    return TransformersBackend.from_pretrained(path, device=device, local_files_only=True)


@dataclass(frozen=True)
class BaselineCheck:
    """One baseline check: prompt length, tokens generated and wall time."""

    prompt_tokens: int
    new_tokens: int
    seconds: float

    @property
    def tokens_computed(self) -> int:
        """Positions run through the decoder: the prompt at prefill, then one per decode step."""
        return self.prompt_tokens + max(self.new_tokens - 1, 0)


class HFBaseline:
    """Llama Guard 4 as its release notes use it (see the module docstring).

    `processor`: an already loaded `Llama4Processor` of the same checkpoint (else loaded here).
    """

    def __init__(self, path: Path, device: str = "cpu", processor: Any = None) -> None:
        import importlib

        import torch

        from guard_plugins.backends.transformers import load_llama_guard_config

        transformers: Any = importlib.import_module("transformers")

        self._torch = torch
        self.device = torch.device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        # The released config.json needs the same attention_chunk_size workaround as ours.
        config = load_llama_guard_config(str(path), local_files_only=True)
        # The backend's processor is the same object type loaded from the same files; sharing
        # it only saves loading the 200k-token tokenizer twice.
        self.processor = processor or transformers.AutoProcessor.from_pretrained(
            str(path), local_files_only=True
        )
        model = transformers.Llama4ForConditionalGeneration.from_pretrained(
            str(path), config=config, dtype=dtype, local_files_only=True
        )
        self.model = model.to(self.device).eval()
        self.eot_id = self.processor.tokenizer.convert_tokens_to_ids("<|eot|>")

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        batch = self.processor(
            text=[render_prompt(conversation)], add_special_tokens=False, return_tensors="pt"
        )
        return list(batch["input_ids"][0].tolist())

    def check(self, conversation: Conversation) -> BaselineCheck:
        """Render, tokenize and generate three tokens greedily; time all of it."""
        start = time.perf_counter()
        inputs = self.processor(
            text=[render_prompt(conversation)], add_special_tokens=False, return_tensors="pt"
        ).to(self.device)
        with self._torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=BASELINE_NEW_TOKENS,
                do_sample=False,
                pad_token_id=self.eot_id,
            )
        if self.device.type == "cuda":
            self._torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        prompt_tokens = int(inputs["input_ids"].shape[1])
        return BaselineCheck(prompt_tokens, int(output.shape[1]) - prompt_tokens, seconds)

    def weight_bytes(self) -> int:
        """Bytes of the model's parameters (the same checkpoint and dtype as the backend's)."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def close(self) -> None:
        self.model = None
