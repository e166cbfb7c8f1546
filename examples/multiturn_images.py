"""A multi-turn chat with images, guarded turn by turn.

Each user turn (text and images) is checked in the context of the conversation so far before the
assistant answers; each reply is checked before it is shown. Earlier turns are not re-judged: one
check per new turn.

Run: GUARD_PLUGINS_MODEL=<model or dev-model dir> python examples/multiturn_images.py
(on a dev model the verdicts are random: the run shows the plumbing).
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from guard_plugins import Conversation, Guard, Message


def picture(color: tuple[int, int, int]) -> bytes:
    img = Image.new("RGB", (640, 400), (245, 245, 245))
    ImageDraw.Draw(img).ellipse((180, 80, 460, 320), fill=color)
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def assistant_reply(conversation: Conversation) -> str:
    """Stand-in for your chat model."""
    last = conversation.turns()[-1]
    return f"I see {len(last.images)} image(s). You asked: {last.text[:40]!r}"


def main() -> None:
    guard = Guard.from_env()
    conversation = Conversation(())
    user_turns = [
        ("What fruit could this be?", [picture((220, 40, 40))]),
        ("And compare it with this one.", [picture((250, 200, 40)), picture((60, 160, 60))]),
        ("Which is best for a pie?", []),
    ]
    for text, images in user_turns:
        conversation = conversation.append(Message.user(text, images))
        decision = guard.check_input(conversation)
        print(f"user  [{len(images)} img] {decision.summary()}")
        if not decision.allowed:
            print(f"      -> {decision.refusal}")
            break
        reply = assistant_reply(conversation)
        candidate = conversation.append(Message.assistant(reply))
        verdict = guard.check_output(candidate)
        print(f"agent          {verdict.summary()}")
        shown = reply if verdict.allowed else (verdict.refusal or "")
        conversation = conversation.append(Message.assistant(shown))
    print(f"{len(conversation)} messages, {len(conversation.images)} images in the conversation")


if __name__ == "__main__":
    main()
