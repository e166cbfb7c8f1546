"""Dev models: random-weight Llama Guard 4 architecture checkpoints for tests and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.model
for _module in ("torch", "torchvision", "transformers"):
    pytest.importorskip(_module, reason="needs the transformers extra")

from guard_plugins.backends.transformers import TransformersBackend  # noqa: E402
from guard_plugins.devmodel import (  # noqa: E402
    BUILTIN_TOKENIZER,
    DEV_MODEL_MARKER,
    SPECIAL_TOKENS,
    build_dev_model,
    build_local_tokenizer,
    dev_model_info,
    is_dev_model,
)


def test_tiny_model_carries_the_release_config_quirks(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    text = config["text_config"]
    assert text["attention_chunk_size"] is None
    assert text["num_local_experts"] == 0
    assert text["interleave_moe_layer_step"] == 0
    assert "moe_layers" not in text
    assert config["architectures"] == ["Llama4ForConditionalGeneration"]
    assert (text["hidden_size"], text["num_hidden_layers"], text["head_dim"]) == (64, 4, 16)


def test_plain_transformers_cannot_read_the_quirky_config(tiny_model_dir: Path) -> None:
    from transformers import Llama4Config

    # why the backend patches the config: interleave_moe_layer_step 0 → range(..., 0)
    with pytest.raises(ValueError, match="must not be zero"):
        Llama4Config.from_pretrained(tiny_model_dir)


def test_marker_and_processor(tiny_model_dir: Path) -> None:
    assert is_dev_model(tiny_model_dir)
    info = dev_model_info(tiny_model_dir)
    assert info is not None and info["size"] == "tiny" and info["seed"] == 0
    assert "meaningless" in info["note"]
    processor = json.loads((tiny_model_dir / "processor_config.json").read_text())
    image = processor.get("image_processor", processor)
    assert image["size"] == {"height": 336, "width": 336}
    assert image["max_patches"] == 16
    assert image["image_mean"] == image["image_std"] == [0.5, 0.5, 0.5]


def test_ids_in_config_come_from_the_tokenizer(tiny_backend: TransformersBackend) -> None:
    config = tiny_backend._model.config
    tokenizer = tiny_backend.encoder.tokenizer
    assert config.text_config.vocab_size == len(tokenizer)
    assert config.image_token_index == tokenizer.convert_tokens_to_ids("<|patch|>")
    assert config.boi_token_index == tokenizer.convert_tokens_to_ids("<|image_start|>")
    assert config.eoi_token_index == tokenizer.convert_tokens_to_ids("<|image_end|>")


def test_not_a_dev_model(tmp_path: Path) -> None:
    assert not is_dev_model(tmp_path)
    (tmp_path / DEV_MODEL_MARKER).write_text("not json")
    assert not is_dev_model(tmp_path)


def test_unknown_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dev model size"):
        build_dev_model(tmp_path, size="huge")  # type: ignore[arg-type]


def test_local_tokenizer_has_the_llama4_special_tokens() -> None:
    tokenizer = build_local_tokenizer()
    assert 2000 <= len(tokenizer) <= 8192
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS)
    for word in ("safe", "unsafe", "\n\n", "\n"):
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1
    eot = tokenizer.convert_tokens_to_ids("<|eot|>")
    assert eot in tokenizer.encode("hi <|eot|>", add_special_tokens=False)
    assert tokenizer.decode(tokenizer.encode("S1,S10 safe", add_special_tokens=False)) == (
        "S1,S10 safe"
    )


async def test_dev_model_with_the_builtin_tokenizer_runs(tmp_path: Path) -> None:
    path = build_dev_model(tmp_path / "builtin", tokenizer=BUILTIN_TOKENIZER, seed=1)
    info = dev_model_info(path)
    assert info is not None and info["tokenizer"] == BUILTIN_TOKENIZER and info["seed"] == 1
    async with TransformersBackend.from_pretrained(path, local_files_only=True) as backend:
        assert isinstance(backend, TransformersBackend)
        verdict = await backend.classify("How do I bake bread?", threshold=1e-9)
        assert not verdict.safe and verdict.categories
        assert backend.encoder.safe_id != backend.encoder.unsafe_id
