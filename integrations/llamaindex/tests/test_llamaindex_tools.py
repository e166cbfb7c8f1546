"""guard_tool / GuardedTool on real LlamaIndex tools, including the real CodeInterpreterToolSpec."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from guard_plugins import GuardBlocked, Hook
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.span import SimpleSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.tools import BaseTool, FunctionTool, ToolMetadata, ToolOutput
from llamaindex_support import CodeInterpreterToolSpec, make_guard

from guard_plugins_llamaindex import GuardedTool, guard_tool, guard_tools


def _writes(path: Path, marker: str = "") -> str:
    return f"open({str(path)!r}, 'w').write('ran'); print('wrote')  # {marker}"


def test_code_interpreter_spec_abusive_code_never_runs(tmp_path: Path) -> None:
    guard, recorder = make_guard()
    (tool,) = guard_tools(CodeInterpreterToolSpec().to_tool_list(), guard, language="python")
    target = tmp_path / "side_effect"
    output = tool.call(code=_writes(target, "EVIL"))
    assert output.is_error
    assert not target.exists()  # the code was never executed
    assert "S14 Code Interpreter Abuse" in output.content
    assert isinstance(output.exception, GuardBlocked)
    assert output.exception.decision.hook is Hook.TOOL_CALL
    # The model saw the code verbatim, fenced, as a call of this tool.
    assert recorder.texts()[0].startswith("Tool call: code_interpreter\n```python\n")


async def test_code_interpreter_spec_benign_code_runs(tmp_path: Path) -> None:
    guard, recorder = make_guard()
    (tool,) = guard_tools(CodeInterpreterToolSpec().to_tool_list(), guard)
    target = tmp_path / "side_effect"
    output = await tool.acall(code=_writes(target))
    assert not output.is_error
    assert target.read_text() == "ran"
    assert "wrote" in output.content
    assert [role for role, _ in recorder.assessed] == ["Agent", "User"]  # call, then result
    assert recorder.texts()[1].startswith("Tool result (code_interpreter):")


def test_metadata_and_schema_are_kept() -> None:
    def add(a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    original = FunctionTool.from_defaults(add)
    guard, _ = make_guard()
    guarded = guard_tool(original, guard)
    assert isinstance(guarded, GuardedTool)
    assert guarded.metadata is original.metadata
    assert guarded.metadata.get_parameters_dict() == original.metadata.get_parameters_dict()
    assert guarded.metadata.to_openai_tool() == original.metadata.to_openai_tool()
    assert guarded.call(a=1).content == "3"
    # Introspection sees the original function (CodeActAgent describes tools this way).
    assert guarded.real_fn.__name__ == "add"
    assert inspect.signature(guarded.real_fn) == inspect.signature(add)
    assert guard_tool(guarded, guard) is guarded


def test_refused_output_becomes_error_tool_output() -> None:
    guard, _ = make_guard()
    tool = guard_tool(lambda query: "how to do CRIME step by step", guard)
    output = tool.call(query="look it up")
    assert output.is_error
    assert isinstance(output.exception, GuardBlocked)
    assert output.exception.decision.hook is Hook.TOOL_RESULT
    assert "CRIME" not in output.content


def test_output_with_nothing_to_assess_is_not_checked() -> None:
    guard, recorder = make_guard()
    tool = guard_tool(lambda: "   ", guard)
    assert tool.call().content == "   "
    assert len(recorder.assessed) == 1  # only the call


def test_guarded_functions_do_not_bypass_the_guard(tmp_path: Path) -> None:
    guard, _ = make_guard()
    ran: list[str] = []

    def python(code: str) -> str:
        ran.append(code)
        return "ok"

    tool = guard_tool(python, guard)
    with pytest.raises(GuardBlocked):
        tool.fn(code="EVIL")
    with pytest.raises(GuardBlocked):
        tool.real_fn(code="EVIL")
    assert tool.fn(code="print(1)") == "ok"
    assert ran == ["print(1)"]


async def test_async_fn_is_guarded() -> None:
    guard, _ = make_guard()
    tool = guard_tool(lambda code: "ok", guard)
    with pytest.raises(GuardBlocked):
        await tool.async_fn(code="EVIL")


def test_custom_code_argument_is_assessed_as_code() -> None:
    guard, recorder = make_guard()

    def run_snippet(snippet: str, timeout: int = 5) -> str:
        """Run a snippet."""
        return "done"

    tool = guard_tool(run_snippet, guard, code_argument="snippet", language="bash")
    tool.call(snippet="ls -la", timeout=3)
    assert (
        recorder.texts()[0]
        == 'Tool call: run_snippet\nArguments: {"timeout": 3}\n```bash\nls -la\n```'
    )


class _SyncOnlyTool(BaseTool):
    """A legacy tool with only `__call__(input)` (no async), as some integrations still ship."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []

    @property
    def metadata(self) -> ToolMetadata:
        return ToolMetadata(name="legacy", description="A legacy tool.")

    def __call__(self, input: Any) -> ToolOutput:
        self.inputs.append(input)
        return ToolOutput(
            content=f"got {input}", tool_name="legacy", raw_input={"input": input}, raw_output=input
        )


async def test_sync_only_tool_is_wrapped() -> None:
    guard, _ = make_guard()
    inner = _SyncOnlyTool()
    tool = guard_tool(inner, guard)
    assert (await tool.acall("hi")).content == "got hi"
    assert tool.call("hello").content == "got hello"
    assert (await tool.acall("EVIL")).is_error
    assert inner.inputs == ["hi", "hello"]


def test_decisions_are_traced(decision_events: list[Any]) -> None:
    guard, _ = make_guard()
    guard_tool(lambda code: "ok", guard).call(code="print(1)")
    assert [(e.hook, e.source, e.tool_name) for e in decision_events] == [
        ("tool_call", "tool", "<lambda>"),
        ("tool_result", "tool", "<lambda>"),
    ]


class Spans(BaseSpanHandler[SimpleSpan]):
    """Every span opened: its id, parent and bound arguments."""

    opened: list[tuple[str, str | None, dict[str, Any]]] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Spans"

    def new_span(
        self,
        id_: str,
        bound_args: Any,
        instance: Any = None,
        parent_span_id: Any = None,
        tags: Any = None,
        **kwargs: Any,
    ) -> SimpleSpan:
        self.opened.append((id_, parent_span_id, dict(bound_args.arguments)))
        return SimpleSpan(id_=id_, parent_id=parent_span_id)

    def prepare_to_exit_span(
        self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kwargs: Any
    ) -> SimpleSpan | None:
        return None

    def prepare_to_drop_span(
        self, id_: str, bound_args: Any, instance: Any = None, err: Any = None, **kwargs: Any
    ) -> SimpleSpan | None:
        return None


@pytest.mark.parametrize("mode", ["call", "acall"])
async def test_the_guarded_call_is_its_own_span_around_the_tools(
    decision_events: list[Any], mode: str
) -> None:
    """The span LlamaIndex opens for the guarded call (signature precomputed) binds the same
    arguments as before, and the call's decisions are dispatched inside it."""
    spans = Spans()
    root = get_dispatcher()
    root.add_span_handler(spans)
    try:
        guard, _ = make_guard()
        tool = guard_tool(lambda code: "ok", guard)
        if mode == "call":
            assert tool.call(code="print(1)").content == "ok"
        else:
            assert (await tool.acall(code="print(1)")).content == "ok"
    finally:
        root.span_handlers.remove(spans)
    guarded = [s for s in spans.opened if s[0].startswith(f"GuardedTool.{mode}-")]
    ((span_id, _, bound),) = guarded
    assert bound == {"kwargs": {"code": "print(1)"}}
    inner = [s for s in spans.opened if s[0].startswith(f"FunctionTool.{mode}-")]
    assert [parent for _, parent, _ in inner] == [span_id]
    assert [e.span_id for e in decision_events] == [span_id, span_id]
    signature = getattr(type(tool), mode).__wrapped__.__signature__
    assert str(signature) == "(self, *args: 'Any', **kwargs: 'Any') -> 'ToolOutput'"


def _index() -> Any:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    return VectorStoreIndex.from_documents(
        [Document(text="Opening hours: 9 to 5."), Document(text="CRIME manual, page 1.")],
        embed_model=MockEmbedding(embed_dim=8),
    )


async def test_query_engine_and_retriever_tools() -> None:
    from llama_index.core.llms import MockLLM
    from llama_index.core.tools import QueryEngineTool, RetrieverTool

    guard, recorder = make_guard()
    index = _index()
    qe_tool = guard_tool(
        QueryEngineTool.from_defaults(
            index.as_query_engine(llm=MockLLM(), similarity_top_k=1),
            name="handbook",
            description="Answers questions about the handbook.",
        ),
        guard,
    )
    assert qe_tool.metadata.name == "handbook"
    assert qe_tool.metadata.fn_schema is not None
    answer = await qe_tool.acall(input="When is it open?")
    assert recorder.texts()[0] == 'Tool call: handbook\nArguments: {"input": "When is it open?"}'
    # MockLLM echoes its prompt: both documents' text can be in the answer; the CRIME one is not
    # allowed back into the agent's context.
    if "CRIME" in str(answer.raw_output):
        assert answer.is_error
    retriever_tool = guard_tool(
        RetrieverTool.from_defaults(index.as_retriever(similarity_top_k=2), name="search"), guard
    )
    found = await retriever_tool.acall(input="manual")
    assert found.is_error  # the retrieved CRIME page was withheld
    assert found.exception.decision.hook is Hook.TOOL_RESULT
    assert guard_tool(retriever_tool, make_guard()[0]).tool is retriever_tool.tool
