"""Reuse of computed KV across checks (conversation cache) and the verdict-only output head."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from guard_plugins.backends._kv_reuse import ConversationCache, KVEntry, common_prefix_length
from guard_plugins.backends.base import ClassificationRequest
from guard_plugins.conversation import Conversation
from guard_plugins.prompt import build_prompt
from tests._images import png_bytes

SCORE_TOL = 1e-4


# -- the store (no model) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((), (1, 2), 0),
        ((1, 2, 3), (1, 2, 3), 3),
        ((1, 2, 3), (1, 2), 2),
        ((1, 2, 3, 4, 5, 6, 7), (1, 2, 3, 4, 9, 6, 7), 4),
        ((5,), (6,), 0),
        (tuple(range(1000)), (*range(999), -1), 999),
    ],
)
def test_common_prefix_length(a: tuple[int, ...], b: tuple[int, ...], expected: int) -> None:
    assert common_prefix_length(a, b) == expected == common_prefix_length(b, a)


def _entry(ids: tuple[int, ...], key: str = "k") -> KVEntry:
    return KVEntry(ids, [], key)


def test_store_finds_the_longest_match_of_the_same_prefix_key() -> None:
    cache = ConversationCache(max_tokens=100)
    cache.add(_entry((1, 2, 3, 4)))
    cache.add(_entry((1, 2, 7, 8, 9)))
    cache.add(_entry((1, 2, 3, 4, 5, 6), key="other"))
    entry, shared = cache.match("k", (1, 2, 3, 4, 5, 6), minimum=2)
    assert entry is not None and entry.ids == (1, 2, 3, 4) and shared == 4
    # Sharing only the template prefix (the minimum) is not a match.
    assert cache.match("k", (1, 2, 9), minimum=2) == (None, 0)
    assert cache.match("missing", (1, 2, 3, 4), minimum=0) == (None, 0)


def test_store_drops_entries_a_newer_one_extends_and_keeps_its_budget() -> None:
    cache = ConversationCache(max_tokens=10)
    cache.add(_entry((1, 2, 3)))
    cache.add(_entry((1, 2, 3, 4, 5)))  # extends the first: it replaces it
    assert len(cache) == 1 and cache.tokens == 5
    cache.add(_entry((7, 8, 9, 10)))
    assert len(cache) == 2 and cache.tokens == 9
    cache.match("k", (1, 2, 3, 4, 5, 6), minimum=0)  # most recently used now
    cache.add(_entry((20, 21, 22)))  # over budget: the least recently used goes
    assert cache.tokens <= 10
    assert cache.match("k", (7, 8, 9, 10), minimum=0) == (None, 0)
    assert cache.match("k", (1, 2, 3, 4, 5), minimum=0)[1] == 5
    cache.add(_entry(tuple(range(11))))  # larger than the whole budget: not stored
    assert cache.tokens <= 10
    cache.clear()
    assert len(cache) == 0 and cache.tokens == 0
    with pytest.raises(ValueError, match="max_tokens"):
        ConversationCache(-1)


# -- on the tiny dev model -------------------------------------------------------------------------


@pytest.fixture
def cached(tiny_backend: Any) -> Iterator[Any]:
    from guard_plugins.backends.transformers import TransformersBackend

    backend = TransformersBackend(tiny_backend._model, tiny_backend.encoder, max_batch_size=4)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def uncached(tiny_backend: Any) -> Iterator[Any]:
    from guard_plugins.backends.transformers import TransformersBackend

    backend = TransformersBackend(tiny_backend._model, tiny_backend.encoder, prefix_cache=False)
    yield backend
    backend.close()


def _turn_by_turn() -> list[Conversation]:
    """The checks an application makes as a conversation grows: each new turn, with context."""
    turns = [
        ("user", "How do I keep basil alive on a windowsill?"),
        ("assistant", "Give it six hours of sun, water when the top soil is dry, pinch the tips."),
        ("user", "And what if the leaves turn yellow at the bottom?"),
        ("assistant", "Usually overwatering: let the pot drain fully and water less often."),
    ]
    conversations = []
    for end in range(1, len(turns) + 1):
        conversations.append(Conversation.from_openai(
            [{"role": role, "content": text} for role, text in turns[:end]]
        ))
    return conversations


def _assert_same(got: Any, want: Any) -> None:
    assert got.score == pytest.approx(want.score, abs=SCORE_TOL)
    assert (got.safe, got.codes, got.role) == (want.safe, want.codes, want.role)


async def test_a_growing_conversation_reuses_its_checked_turns(cached: Any, uncached: Any) -> None:
    checks = _turn_by_turn()
    computed = []
    for conversation in checks:
        cached.stats.reset()
        uncached.stats.reset()
        # Threshold 1.0: the safe path, so no category decoding adds positions.
        _assert_same(await cached.classify(conversation, threshold=1.0),
                     await uncached.classify(conversation, threshold=1.0))
        computed.append((cached.stats.tokens_computed, uncached.stats.tokens_computed))
    # Checks 3 and 4 (User, then Agent again) start with the conversations of checks 1 and 2:
    # only what follows the longest shared ids is computed, plus the teacher-forced "\n\n".
    for index in (2, 3):
        ours, full = computed[index]
        earlier = cached.prompt_token_ids(checks[index - 2])
        prompt = cached.prompt_token_ids(checks[index])
        shared = common_prefix_length(earlier, prompt)
        assert full == len(prompt) + 1
        assert ours == len(prompt) + 1 - shared
        assert shared > len(cached.encoder.prefix_ids(build_prompt(checks[index]).prefix)) + 5
    cached.stats.reset()
    await cached.classify(checks[3].with_user("Thanks!"))
    assert cached.stats.conversation_hits == 1


async def test_a_batch_mixing_reused_lengths_equals_one_check_at_a_time(
    cached: Any, uncached: Any
) -> None:
    checks = _turn_by_turn()
    for conversation in checks[:2]:
        await cached.classify(conversation)
    requests = [
        ClassificationRequest.of(checks[2]),  # reuses check 1's conversation
        ClassificationRequest.of(checks[3]),  # reuses check 2's
        ClassificationRequest.of("Something new entirely"),  # template prefix only
        ClassificationRequest.of("Other categories", categories=["S1", "S14"]),  # cold prefix
        ClassificationRequest.of(checks[2], threshold=1e-9),  # decodes categories after reuse
    ]
    cached.stats.reset()
    batched = await cached.classify_batch(requests)
    assert cached.stats.conversation_hits == 3
    for got, want in zip(batched, await uncached.classify_batch(requests), strict=True):
        _assert_same(got, want)
    assert not batched[-1].safe and batched[-1].codes


async def test_unsafe_path_after_reuse_decodes_the_same_categories(
    cached: Any, uncached: Any
) -> None:
    checks = _turn_by_turn()
    await cached.classify(checks[0])
    for conversation in checks[1:]:
        got = await cached.classify(conversation, threshold=1e-9)
        want = await uncached.classify(conversation, threshold=1e-9)
        _assert_same(got, want)
        assert not got.safe


async def test_verdict_only_head_equals_the_full_projection(cached: Any, tiny_backend: Any) -> None:
    from guard_plugins.backends.transformers import TransformersBackend

    full = TransformersBackend(
        tiny_backend._model, tiny_backend.encoder, conversation_cache_tokens=0
    )
    full._decoder = None  # the whole model and all 202k logits, as before the shortcut
    try:
        requests = [ClassificationRequest.of(c, threshold=t)
                    for c in _turn_by_turn() for t in (1.0, 1e-9)]
        for got, want in zip(
            await cached.classify_batch(requests), await full.classify_batch(requests), strict=True
        ):
            _assert_same(got, want)
    finally:
        full.close()


def test_final_feed_forward_runs_only_where_read_and_changes_nothing_else(
    tiny_backend: Any,
) -> None:
    import threading

    import torch

    from guard_plugins.backends._last_layer import FinalFeedForward

    decoder = tiny_backend._decoder
    hook = FinalFeedForward(decoder)
    assert hook.installed
    mlp = decoder.layers[-1].feed_forward
    seen: list[int] = []
    counter = mlp.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    def forty_one(text: str) -> list[int]:  # ids of whichever tokenizer the dev model has
        return (tiny_backend.encoder.encode_text(text * 41))[:41]

    ids = torch.tensor([forty_one("a quiet garden "), forty_one("rain on the window ")])
    try:
        with torch.inference_mode():
            plain = decoder(input_ids=ids).last_hidden_state
            with hook.selected(torch.tensor([40, 7])):
                restricted = decoder(input_ids=ids).last_hidden_state
                other_thread: list[Any] = []
                worker = threading.Thread(
                    target=lambda: other_thread.append(decoder(input_ids=ids).last_hidden_state))
                with torch.inference_mode():
                    worker.start()
                    worker.join()
            after = decoder(input_ids=ids).last_hidden_state
    finally:
        counter.remove()
        hook.remove()
    # hooks run in registration order: ours shrank the restricted call's input before the counter
    assert seen == [41, 2, 41, 41]  # plain, restricted, other thread, after
    assert torch.allclose(restricted[:, [40, 7]], plain[:, [40, 7]], atol=1e-5)
    assert not torch.allclose(restricted[:, 20], plain[:, 20], atol=1e-3)  # really not computed
    assert torch.equal(other_thread[0], plain)  # another thread's call is untouched
    assert torch.equal(after, plain)  # nothing is left behind
    assert not hook.installed


def test_final_feed_forward_is_not_installed_on_routed_or_unknown_layers() -> None:
    import torch

    from guard_plugins.backends._last_layer import FinalFeedForward

    class TextMLP(torch.nn.Linear):
        pass

    class Layer(torch.nn.Module):
        def __init__(self, moe: bool) -> None:
            super().__init__()
            self.is_moe_layer = moe
            self.feed_forward = TextMLP(4, 4)

    class Decoder(torch.nn.Module):
        def __init__(self, moe: bool) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList([Layer(False), Layer(moe)])

    assert FinalFeedForward(Decoder(moe=False)).installed
    assert not FinalFeedForward(Decoder(moe=True)).installed
    assert not FinalFeedForward(None).installed
    plain = Decoder(moe=False)
    plain.layers[-1].feed_forward = torch.nn.Linear(4, 4)  # not a known row-wise MLP
    assert not FinalFeedForward(plain).installed


async def test_images_are_never_reused_or_stored(cached: Any, uncached: Any) -> None:
    picture = Conversation.user("what is in this picture?", images=[png_bytes(40, 30)])
    first = await cached.classify(picture)
    cached.stats.reset()
    second = await cached.classify(picture)
    assert cached.stats.conversation_hits == 0
    assert cached._conversations.tokens == 0
    _assert_same(first, second)
    _assert_same(second, await uncached.classify(picture))


async def test_cache_is_bounded_and_can_be_cleared(tiny_backend: Any) -> None:
    from guard_plugins.backends.transformers import TransformersBackend

    backend = TransformersBackend(
        tiny_backend._model, tiny_backend.encoder, conversation_cache_tokens=400
    )
    try:
        for index in range(12):
            await backend.classify(f"message number {index} about gardening")
            assert backend._conversations.tokens <= 400
        assert len(backend._conversations) >= 1
        backend.clear_cache()
        assert backend._conversations.tokens == 0 and not backend._prefixes
        backend.stats.reset()
        await backend.classify("message number 3 about gardening")
        assert backend.stats.prefix_misses == 1 and backend.stats.conversation_hits == 0
    finally:
        backend.close()
    with pytest.raises(ValueError, match="conversation_cache_tokens"):
        TransformersBackend(tiny_backend._model, tiny_backend.encoder, conversation_cache_tokens=-1)


async def test_packed_batches_equal_padded_ones_and_pad_nothing(tiny_backend: Any) -> None:
    from guard_plugins.backends.transformers import TransformersBackend

    def make(packing: bool) -> Any:
        return TransformersBackend(
            tiny_backend._model, tiny_backend.encoder, packing=packing, conversation_cache_tokens=0
        )

    packed, padded = make(True), make(False)
    safe_path = [  # threshold 1.0: never flagged, so one scoring pass and nothing else
        ClassificationRequest.of("short", threshold=1.0),
        ClassificationRequest.of("a much longer message " * 12, threshold=1.0),
        ClassificationRequest.of(_turn_by_turn()[1], threshold=1.0),  # Agent: another prefix
        ClassificationRequest.of("listed differently", categories=["S2", "S14"], threshold=1.0),
    ]
    flagged = [  # rerun padded after the packed pass, to decode their categories
        ClassificationRequest.of("flagged", threshold=1e-9),
        ClassificationRequest.of(_turn_by_turn()[3], threshold=1e-9),
    ]
    try:
        await packed.classify_batch(safe_path)  # computes the three template prefixes
        packed.stats.reset()
        got = await packed.classify_batch(safe_path)
        assert packed.stats.forward_passes == 1 and packed.stats.padding_tokens == 0
        for a, b in zip(got, await padded.classify_batch(safe_path), strict=True):
            _assert_same(a, b)
        padded.stats.reset()
        got = await packed.classify_batch([*safe_path, *flagged])
        want = await padded.classify_batch([*safe_path, *flagged])
        assert padded.stats.padding_tokens > 0
        for a, b in zip(got, want, strict=True):
            _assert_same(a, b)
        assert not got[-1].safe and not got[-2].safe and got[-1].codes
    finally:
        packed.close()
        padded.close()


def test_store_can_be_resized() -> None:
    cache = ConversationCache(max_tokens=10)
    cache.add(_entry((1, 2, 3)))
    cache.add(_entry((4, 5, 6, 7)))
    cache.resize(5)
    assert cache.tokens == 4 and cache.match("k", (4, 5, 6, 7, 8), 0)[1] == 4
    cache.resize(0)
    assert cache.tokens == 0 and len(cache) == 0
    with pytest.raises(ValueError, match="max_tokens"):
        cache.resize(-2)


async def test_auto_packing_packs_sub_batches_that_would_pad_a_lot_or_mix_roles(tiny_backend: Any) -> None:
    from guard_plugins.backends.transformers import TransformersBackend

    backend = TransformersBackend(
        tiny_backend._model, tiny_backend.encoder, conversation_cache_tokens=0
    )
    try:
        assert backend.packing == "auto"
        await backend.classify("warm the prefix", threshold=1.0)
        similar = [ClassificationRequest.of(text, threshold=1.0)
                   for text in ("why?", "why not?", "why would it?", "why would it be so?")]
        backend.stats.reset()
        await backend.classify_batch(similar)
        assert backend.stats.padding_tokens > 0  # a few tokens: padded, not packed
        uneven = [ClassificationRequest.of("hi", threshold=1.0),
                  ClassificationRequest.of("a long message about nothing " * 20, threshold=1.0)]
        backend.stats.reset()
        await backend.classify_batch(uneven)
        assert backend.stats.padding_tokens == 0 and backend.stats.forward_passes == 1
        # two roles (two template prefixes) of similar lengths: one packed pass, not one per role
        mixed = [ClassificationRequest.of(c, threshold=1.0) for c in _turn_by_turn()[:2]]
        await backend.classify_batch(mixed)  # computes the Agent template prefix
        backend.stats.reset()
        got = await backend.classify_batch(mixed)
        assert backend.stats.forward_passes == 1 and backend.stats.padding_tokens == 0
        for request, verdict in zip(mixed, got, strict=True):
            _assert_same(verdict, await backend.classify(request))  # alone: no packing
    finally:
        backend.close()
    with pytest.raises(ValueError, match="packing"):
        TransformersBackend(tiny_backend._model, tiny_backend.encoder, packing="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize("packing", ["auto", True, False])
async def test_no_padded_pass_exceeds_max_batch_tokens(tiny_backend: Any, packing: Any) -> None:
    """Groups formed for packing, and the padded re-run of flagged packed prompts, are split
    when padded they would exceed the token budget."""
    from guard_plugins.backends.transformers import TransformersBackend

    texts = ["a", "b", "c", "word " * 250]
    lengths = [len(tiny_backend.prompt_token_ids(ClassificationRequest.of(t))) for t in texts]
    budget = sum(n + 1 for n in lengths) + 2  # a packed row fits, the padded 4 × longest not
    assert 4 * (max(lengths) + 1) > budget
    backend = TransformersBackend(
        tiny_backend._model, tiny_backend.encoder, max_batch_tokens=budget, packing=packing,
        conversation_cache_tokens=0,
    )
    padded_passes: list[int] = []
    last_hidden = backend._last_hidden

    def spy(**inputs: Any) -> Any:
        rows, width = inputs["input_ids"].shape
        if width > 2:  # a scoring pass, not a category decoding step
            padded_passes.append(rows * inputs["attention_mask"].shape[1])
        return last_hidden(**inputs)

    backend._last_hidden = spy  # type: ignore[method-assign]
    try:
        await backend.classify("warm the prefix", threshold=1.0)
        for threshold in (1.0, 1e-9):  # safe path; flagged: packed, then re-run padded
            padded_passes.clear()
            verdicts = await backend.classify_batch(
                [ClassificationRequest.of(t, threshold=threshold) for t in texts])
            assert len(verdicts) == 4 and all(v.safe == (threshold == 1.0) for v in verdicts)
            assert max(padded_passes, default=0) <= budget
            if packing is False or threshold < 1.0:  # padded throughout, or the re-run
                assert len(padded_passes) >= 2  # split: one pass would not fit
    finally:
        backend.close()


def test_hooks_leave_the_model_with_the_backend(tiny_backend: Any) -> None:
    import gc

    from guard_plugins.backends.transformers import TransformersBackend

    feed_forward = tiny_backend._decoder.layers[-1].feed_forward
    before = len(feed_forward._forward_hooks), len(feed_forward._forward_pre_hooks)
    for _ in range(3):
        TransformersBackend(tiny_backend._model, tiny_backend.encoder)  # dropped, never closed
    gc.collect()
    assert (len(feed_forward._forward_hooks), len(feed_forward._forward_pre_hooks)) == before
    closed = TransformersBackend(tiny_backend._model, tiny_backend.encoder)
    assert len(feed_forward._forward_hooks) == before[0] + 1
    closed.close()
    assert len(feed_forward._forward_hooks) == before[0]


async def test_long_reuse_and_long_prompts_in_one_call_stay_within_the_position_limit(
    cached: Any, uncached: Any
) -> None:
    """A row's reused part and another row's new part must not add up past the prompt limit
    (cache columns past 8192 would change the NoPE layers' scaling and the chunked attention)."""
    def text_of(phrase: str, tokens: int) -> str:  # at least `tokens` tokens, any tokenizer
        count = max(tokens // len(cached.encoder.encode_text(phrase)), 1)
        while len(cached.encoder.encode_text(phrase * count)) < tokens:
            count += count // 10 + 1
        return phrase * count

    history = Conversation.user(text_of("tell me about rivers ", 3000))
    await cached.classify(history)
    reused = cached._conversations.tokens
    assert reused > 2000
    follow_up = history.with_assistant("Rivers flow.").with_user("And lakes?")
    # New tokens that, next to the reused ones, would pass the limit in one padded row.
    fresh = Conversation.user(
        text_of("describe the ocean floor ", cached.max_prompt_tokens - reused + 100)
    )
    requests = [ClassificationRequest.of(follow_up), ClassificationRequest.of(fresh)]
    lengths = [len(cached.prompt_token_ids(r)) for r in requests]
    assert all(n <= cached.max_prompt_tokens for n in lengths)
    assert reused + lengths[1] > cached.max_prompt_tokens
    cached.stats.reset()
    got = await cached.classify_batch(requests)
    assert cached.stats.conversation_hits == 1
    for a, b in zip(got, await uncached.classify_batch(requests), strict=True):
        _assert_same(a, b)


async def test_a_flagged_packed_check_keeps_the_score_that_flagged_it(tiny_backend: Any) -> None:
    from guard_plugins.backends.transformers import TransformersBackend

    backend = TransformersBackend(tiny_backend._model, tiny_backend.encoder, packing=True)
    try:
        requests = [ClassificationRequest.of(t, threshold=1e-9) for t in ("one", "two things")]
        verdicts = await backend.classify_batch(requests)
        assert backend.stats.decoded_checks == 2
        for verdict, request in zip(verdicts, requests, strict=True):
            assert not verdict.safe and verdict.score >= request.threshold and verdict.codes
    finally:
        backend.close()
