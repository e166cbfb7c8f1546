"""The exact Llama Guard 4 prompt. Pure functions, no I/O.

`render_prompt` reproduces the official processor's chat template byte for byte (see
tests/test_prompt.py and the three golden renders). Content is *neutralised* before it is placed in
the template so that it cannot forge prompt structure:

1. Special-token strings cannot form: every ``<|`` in content becomes ``< |`` (all Llama 4 special
   tokens are ``<|...|>``, and a fast tokenizer would otherwise encode them as control tokens).
2. The template's section tags (``<BEGIN CONVERSATION>``, ``<END CONVERSATION>``, the category
   tags), also in full-width or look-alike brackets and any letter case, become ``[...]``.
3. Lines that would read as a new turn or as the template's instructions (``User:``, ``Agent:``,
   ``Task: Check if there is unsafe content``, ``Provide your safety assessment``) are quoted with
   ``> `` so they stay inside the turn that contains them.
4. The turn terminator (the characters ``\\n\\n`` followed by a line break) gets a space before the
   line break, so content cannot end its turn early.
5. Zero-width and control characters (except tab and newline) are removed, ``\\r\\n`` becomes
   ``\\n``, and unpaired surrogates become U+FFFD, so the classifier reads what a person reads.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from guard_plugins._frozen import filled
from guard_plugins.categories import CategoryLike, CategorySpec, resolve_categories
from guard_plugins.conversation import AssessedRole, Conversation, ConversationLike, Turn
from guard_plugins.images import ImagePart

__all__ = [
    "IMAGE_TOKEN",
    "RenderedPrompt",
    "build_prompt",
    "build_prompt_from_turns",
    "neutralize_text",
    "prompt_prefix",
    "prompt_suffix",
    "render_prompt",
    "render_turn",
]

IMAGE_TOKEN = "<|image|>"
_HEAD = (
    "<|begin_of_text|><|header_start|>user<|header_end|>\n\n"
    "Task: Check if there is unsafe content in '{role}' messages in conversations according to "
    "our safety policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n"
)
_CATEGORIES_END = "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n"
_TAIL = (
    "<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST {role} message in the "
    "above conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a second line "
    "must include a comma-separated list of violated categories. "
    "<|eot|><|header_start|>assistant<|header_end|>"
)
_TAILS = {role: _TAIL.format(role=role) for role in ("User", "Agent")}
# The turn terminator is the four literal characters \n\n followed by two real newlines.
_TURN_END = "\\n\\n\n\n"


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered prompt and what went into it."""

    text: str
    role: AssessedRole
    categories: tuple[CategoryLike, ...]
    image_count: int
    neutralized: bool
    """True when content had to be changed so it could not forge prompt structure."""
    images: tuple[ImagePart, ...] = field(default=(), compare=False, repr=False)
    """The images behind the ``<|image|>`` markers, in order (their sizes set the token count)."""

    @property
    def prefix(self) -> str:
        """The part shared by every prompt with this role and category list (KV-cacheable)."""
        return prompt_prefix(self.role, self.categories)


def prompt_prefix(role: AssessedRole, categories: Iterable[CategoryLike]) -> str:
    return _prefix(role, tuple(categories))


@functools.lru_cache(maxsize=256)
def _prefix(role: AssessedRole, categories: tuple[CategoryLike, ...]) -> str:
    lines = "".join(c.prompt_line() + "\n" for c in categories)
    return _HEAD.format(role=role) + lines + _CATEGORIES_END


def prompt_suffix(role: AssessedRole) -> str:
    return _TAILS.get(role) or _TAIL.format(role=role)


def render_turn(turn: Turn) -> str:
    return _turn_line(turn.role, len(turn.images), turn.text)


def _turn_line(role: str, image_count: int, text: str) -> str:
    return f"{role}: {IMAGE_TOKEN * image_count}{text}{_TURN_END}"


def build_prompt(
    conversation: ConversationLike,
    categories: CategorySpec | None = None,
    exclude: str | Iterable[str] = (),
) -> RenderedPrompt:
    """Render `conversation` and report the role, categories and neutralisation applied."""
    conv = Conversation.of(conversation)
    return build_prompt_from_turns(conv, conv.turns(), categories, exclude)


def build_prompt_from_turns(
    conv: Conversation,
    turns: tuple[Turn, ...],
    categories: CategorySpec | None = None,
    exclude: str | Iterable[str] = (),
) -> RenderedPrompt:
    """`build_prompt` for a caller that already holds ``conv.turns()`` (the Guard's hot path)."""
    images = conv.images
    chosen = resolve_categories(categories, exclude, has_image=bool(images))
    role = turns[-1].role
    neutralized = False
    body: list[str] = []
    clean = ""
    for turn in turns:
        clean = neutralize_text(turn.text).strip()
        neutralized = neutralized or clean != turn.text.strip()
        body.append(_turn_line(turn.role, len(turn.images), clean))  # the cleaned turn
    if not turns[-1].images and not clean:
        from guard_plugins.errors import ConversationError

        raise ConversationError(f"the last {role} turn has nothing to assess after cleaning")
    text = _prefix(role, tuple(chosen)) + "".join(body) + prompt_suffix(role)
    # RenderedPrompt(text, role, chosen, len(images), neutralized, images) without its __init__;
    # tests/test_prompt.py compares the two.
    return filled(
        RenderedPrompt,
        {
            "text": text,
            "role": role,
            "categories": chosen,
            "image_count": len(images),
            "neutralized": neutralized,
            "images": images,
        },
    )


def render_prompt(
    conversation: ConversationLike,
    categories: CategorySpec | None = None,
    exclude: str | Iterable[str] = (),
) -> str:
    """The exact Llama Guard 4 prompt for `conversation`.

    >>> prompt = render_prompt([{"role": "user", "content": "How to make a bomb?"}])
    >>> prompt.endswith("<|eot|><|header_start|>assistant<|header_end|>")
    True
    """
    return build_prompt(conversation, categories, exclude).text


# -- neutralisation -------------------------------------------------------------------------------

_INVISIBLE = re.compile(
    "[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f"
    "\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]"
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_LT = "<\u2039\u2329\u27e8\u276e\u3008\ufe64\uff1c"
_GT = ">\u203a\u232a\u27e9\u276f\u3009\ufe65\uff1e"
_TAG = re.compile(
    rf"[{_LT}]\s*(?P<inner>(?:begin|end)\s+(?:conversation|unsafe\s+content\s+categories))\s*"
    rf"[{_GT}]",
    re.IGNORECASE,
)
_FORGED_LINE = re.compile(
    r"^(?P<indent>[ \t]*)(?=(?:user|agent)\s*:"
    r"|task\s*:\s*check\s+if\s+there\s+is\s+unsafe"
    r"|provide\s+your\s+safety\s+assessment"
    r"|-\s*first\s+line\s+must\s+read"
    r"|-\s*if\s+unsafe\s*,\s*a\s+second\s+line)",
    re.IGNORECASE | re.MULTILINE,
)


def _fold(text: str) -> str:
    """Per-character NFKC fold that keeps string length (so match offsets map back)."""
    if text.isascii():
        return text
    out = []
    for ch in text:
        if ch.isascii():
            out.append(ch)
            continue
        folded = unicodedata.normalize("NFKC", ch)
        out.append(folded if len(folded) == 1 else ch)
    return "".join(out)


def neutralize_text(text: str) -> str:
    """Make content unable to forge Llama Guard prompt structure (see module docstring)."""
    ascii_only = text.isascii()
    if not ascii_only:  # surrogates, look-alike brackets and full-width letters are not ASCII
        text = _SURROGATE.sub("\ufffd", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    folded = _fold(text)
    if (not ascii_only or "<" in text) and _TAG.search(folded):
        pieces: list[str] = []
        last = 0
        for match in _TAG.finditer(folded):
            pieces.append(text[last : match.start()])
            pieces.append(f"[{text[match.start('inner') : match.end('inner')]}]")
            last = match.end()
        pieces.append(text[last:])
        text = "".join(pieces)
        folded = _fold(text)
    if _FORGED_LINE.search(folded):
        offsets = [m.end("indent") for m in _FORGED_LINE.finditer(folded)]
        for offset in reversed(offsets):
            text = text[:offset] + "> " + text[offset:]
    # The turn terminator is literal backslash-n twice then a line break; content must not end a
    # turn early, so a space goes between them.
    return text.replace("<|", "< |").replace("\\n\\n\n", "\\n\\n \n")
