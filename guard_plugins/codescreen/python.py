"""The Python scanner: parses with `ast`, walks statements in source order, checks every call.

Statements are visited iteratively (no recursion on deep trees); each statement's own
expressions are searched for calls (`pycalls`), huge allocations and interpreter introspection,
then its bindings are recorded (`pyscope`). Loops are checked after their body has been seen
(`pyloops`). Notebook lines (``!cmd``, ``%%bash``) are scanned as shell. Code that does not parse
is repaired line by line (up to a limit) so the rest is still scanned; text that looks like shell
is handed to the shell scanner instead.
"""

from __future__ import annotations

import ast
import re
import threading
import warnings
from typing import Final

from guard_plugins.codescreen import pycalls, pyconst, pydecode, pyfiles, pyloops, pyscope
from guard_plugins.codescreen.context import ScanContext
from guard_plugins.codescreen.findings import Confidence, Severity
from guard_plugins.codescreen.paths import UNKNOWN as UNKNOWN_TEXT
from guard_plugins.codescreen.paths import Access, classify_path, find_metadata_host
from guard_plugins.codescreen.pycalls import MEMORY_LIMIT, SnippetState, check_call
from guard_plugins.codescreen.pygate import INLINE_WORDS, Gate, trigger_words
from guard_plugins.codescreen.pyloops import check_loop, check_self_replication
from guard_plugins.codescreen.pyscope import Scope
from guard_plugins.codescreen.pyvalues import UNKNOWN as UNKNOWN_VALUE
from guard_plugins.codescreen.pyvalues import Huge, PathValue, walk

__all__ = ["PythonScanner", "looks_like_shell", "scan_python"]

# `ast` node classes as module constants: compiled by mypyc, each is a C static rather than
# an attribute lookup on the `ast` module at every use.
_AnnAssign: Final = ast.AnnAssign
_Assign: Final = ast.Assign
_AsyncFor: Final = ast.AsyncFor
_AsyncFunctionDef: Final = ast.AsyncFunctionDef
_AsyncWith: Final = ast.AsyncWith
_Attribute: Final = ast.Attribute
_AugAssign: Final = ast.AugAssign
_BinOp: Final = ast.BinOp
_Call: Final = ast.Call
_Constant: Final = ast.Constant
_ExceptHandler: Final = ast.ExceptHandler
_Expr: Final = ast.Expr
_For: Final = ast.For
_FunctionDef: Final = ast.FunctionDef
_Import: Final = ast.Import
_ImportFrom: Final = ast.ImportFrom
_JoinedStr: Final = ast.JoinedStr
_List: Final = ast.List
_ListComp: Final = ast.ListComp
_Load: Final = ast.Load
_Mult: Final = ast.Mult
_Name: Final = ast.Name
_NamedExpr: Final = ast.NamedExpr
_Store: Final = ast.Store
_Subscript: Final = ast.Subscript
_Try: Final = ast.Try
_Tuple: Final = ast.Tuple
_While: Final = ast.While
_With: Final = ast.With
_arguments: Final = ast.arguments
_expr: Final = ast.expr
_keyword: Final = ast.keyword
_match_case: Final = ast.match_case
_stmt: Final = ast.stmt
_withitem: Final = ast.withitem

_PARSE_LOCK: Final = threading.Lock()
_REPAIR_ATTEMPTS: Final = 12
_REPAIR_MAX_CHARS: Final = 200_000
_SHELL_LINE: Final = re.compile(
    r"^\s*(?:sudo\s+|\$\s+)?(?:ls|cd|rm|cp|mv|cat|echo|curl|wget|apt(?:-get)?|yum|apk|pip3?|npm|"
    r"git|chmod|chown|mkdir|export|bash|sh|nc|ncat|socat|docker|kubectl|systemctl|service|"
    r"crontab|find|grep|sed|awk|tar|unzip|make|dd|mkfs\S*|mount|history|kill|pkill|nohup|"
    r"source|env|printenv|iptables|ufw|setenforce|insmod|modprobe|nsenter|chroot|shred|touch|"
    r"for\s+\w+\s+in|while\s+(?:true|:)|if\s+\[|set\s+[-+]|:\s*\(\)|#!/)(?:\s|$|;|\|)",
)
_MAGIC: Final = re.compile(r"^(\s*)(?:(\w+\s*=\s*)?!(.*)|%(?:system|sx)\s(.*)|%.*)$")
_CELL_SHELL: Final = re.compile(r"^\s*%%(?:bash|sh|script\s+(?:ba)?sh|system)\b[^\n]*\n?")
_BODY_FIELDS: Final = ("body", "handlers", "orelse", "finalbody", "cases")
_STRING_BUILDERS: Final = (ast.JoinedStr, ast.BinOp, ast.Tuple, ast.List, ast.Subscript)
_PATH_BUILDERS: Final = frozenset({"os.path.join", "os.path.expanduser", "pathlib.Path", "str",
                                   "os.path.abspath", "os.path.realpath", "pathlib.Path.home",
                                   "os.path.normpath", "pathlib.PurePath", "os.fspath"})
_SEQUENCE_NODES: Final = (ast.List, ast.Tuple, ast.ListComp)
# Statement modes: analyse every check / record bindings only / nothing to do.
_FULL: Final = 0
_BIND: Final = 1
_SKIP: Final = 2
_BINDERS: Final = (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.With, ast.AsyncWith)
_LOOPS: Final = frozenset({ast.While, ast.For, ast.AsyncFor})
_FUNCTIONS: Final = frozenset({ast.FunctionDef, ast.AsyncFunctionDef})
_COMPOUND: Final = frozenset({ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith,
                              ast.Try, ast.TryStar, ast.FunctionDef, ast.AsyncFunctionDef,
                              ast.ClassDef, ast.Match})
_CLIMB_ATTRS: Final = frozenset({"__base__", "__bases__", "__mro__", "__class__"})
_INTROSPECTION_HIGH: Final = frozenset({"__subclasses__"})
_INTROSPECTION_LOW: Final = frozenset({"__globals__", "f_globals", "f_builtins", "__builtins__",
                                       "gi_frame", "tb_frame", "f_back"})


class PythonScanner:
    """One Python scan over a parsed module; findings go to the shared `ScanContext`."""

    def __init__(self, ctx: ScanContext, text: str = "") -> None:
        self.ctx = ctx
        self.scope = Scope(lambda rule, line, detail: ctx.report(rule, line, detail))
        self.state = SnippetState()
        # Identifiers are NFKC-normalised by the parser: non-ASCII text may hide a name.
        gated = not ctx.exhaustive and text.isascii()
        self.gate = Gate(text, _STATEMENT_TRIGGERS) if gated else None

    def report(self, concept: str, line: int, detail: str = "", *,
               confidence: Confidence | None = None, severity: Severity | None = None) -> None:
        self.ctx.report(f"PY-{concept}", line, detail, confidence=confidence, severity=severity)

    def access(self, path: str, access: Access, line: int) -> None:
        for concept, ident in classify_path(path, access):
            self.report(concept, line, ident)

    def nested(self, text: str, language: str, line: int) -> None:
        self.ctx.scan_nested(text, language, line)

    def run(self, tree: ast.Module) -> None:
        # (statement, visit its loop check now, inside a try body with handlers)
        stack: list[tuple[ast.stmt, bool, bool]] = [(s, False, False) for s in reversed(tree.body)]
        gate = self.gate
        while stack:
            node, after_body, guarded = stack.pop()
            if after_body:
                assert isinstance(node, (_While, _For, _AsyncFor))
                self.scope.new_statement()
                check_loop(self, node, guarded)
                continue
            cls = type(node)
            if cls is _Import or cls is _ImportFrom:
                assert isinstance(node, (_Import, _ImportFrom))
                self.scope.bind_import(node)
                continue
            if cls is _Expr and type(getattr(node, "value", None)) is _Constant:
                continue  # a docstring
            if gate is None:
                self._statement(node, _FULL, None)
                mode = _FULL
            else:
                words, hot = gate.header(node)
                mode = _FULL if hot else self._mode(node, words, hot)
                if mode != _SKIP or cls in _FUNCTIONS:
                    self._statement(node, mode, words)
            if cls not in _COMPOUND:
                continue
            if mode == _FULL and cls in _LOOPS:
                stack.append((node, True, guarded))
            inner = guarded or (cls is _Try and bool(getattr(node, "handlers", None)))
            children = _child_statements(node)
            children.reverse()
            stack.extend([(child, False, inner) for child in children])
        self._finish()

    def _mode(self, node: ast.stmt, words: list[str], hot: bool) -> int:
        if hot or self._mentions_live(words):
            return _FULL
        if isinstance(node, _BINDERS):
            return _FULL if self._may_taint(words) else _BIND
        return _SKIP

    def _mentions_live(self, words: list[str]) -> bool:
        """Does one of `words` hold something a check may use (constant, taint, file, alias)?"""
        # Plain loops: compiled, `in` on a dict is a direct C call, `keys().isdisjoint` is not.
        consts, taints, files = self.scope.consts, self.scope.taints, self.state.file_paths
        for word in words:
            if word in consts or word in taints or word in files:
                return True
        return self._aliases_in(words, _TRIGGERS)

    def _aliases_in(self, words: list[str], vocabulary: frozenset[str]) -> bool:
        """Is one of `words` an alias a rule can see through? (`vocabulary`: what it must name)

        For the rule vocabulary that is its module (``requests.get()``: any ``requests.`` call
        counts) or, unless it is a call's result, its last part (``f = os.system``); a call's
        result only matters through its module (``numpy.zeros()`` is not ``numpy.zeros``).
        """
        aliases = self.scope.aliases
        if not aliases:
            return False
        if vocabulary is _TRIGGERS:
            hits = _RULE_ALIAS_HITS
        elif vocabulary is _TAINT_WORDS:
            hits = _TAINT_ALIAS_HITS
        else:
            hits = _REPLICATION_ALIAS_HITS
        for word in words:
            alias = aliases.get(word)
            if alias is None:
                continue
            hit = hits.get(alias)
            if hit is None:
                parts = _WORD.findall(alias)
                if vocabulary is not _TRIGGERS:
                    hit = not vocabulary.isdisjoint(parts)
                else:
                    hit = bool(parts) and (parts[0] in vocabulary or (
                        parts[-1] in vocabulary and not alias.endswith(")")))
                if len(hits) >= _ALIAS_HITS_LIMIT:
                    hits.clear()
                hits[alias] = hit
            if hit:
                return True
        return False

    def _may_taint(self, words: list[str]) -> bool:
        """Could the statement with these words carry taint?"""
        taints = self.scope.taints
        for word in words:
            if word in _TAINT_WORDS or word in taints:
                return True
        return self._aliases_in(words, _TAINT_WORDS)

    def _statement(self, node: ast.stmt, mode: int, words: list[str] | None) -> None:
        """Analyse one statement (`words`: those of its header, None when not gated)."""
        if mode == _SKIP:
            if isinstance(node, (_FunctionDef, _AsyncFunctionDef)) and (
                    self._may_replicate(node)):
                self.scope.new_statement()
                check_self_replication(self, node)
            return
        if isinstance(node, _Expr) and isinstance(node.value, _Constant):
            return
        if mode == _BIND:
            self.scope.new_statement([])
            self._bindings(node)
            return
        nodes: list[ast.AST] = []
        for expr in _own_expressions(node):
            nodes.extend(walk(expr))
        self.scope.new_statement(nodes, words is None or self._may_taint(words))
        self._expression(nodes)
        self._bindings(node)

    def _expression(self, nodes: list[ast.AST]) -> None:
        gated = self.gate is not None
        for sub in nodes:
            cls = type(sub)  # parsed nodes are never subclassed: dispatch on the exact type
            if cls is _Name or cls is _Constant:
                continue
            if cls is _Call:
                assert isinstance(sub, _Call)
                if not gated or self._callee_matters(sub.func):
                    check_call(self, sub)
                if sub.args or sub.keywords:
                    self._argument_paths(sub)
            elif cls is _Attribute:
                assert isinstance(sub, _Attribute)
                attr = sub.attr
                if attr in _INTROSPECTION_HIGH and _climbs_to_object(sub.value):
                    self.report("INTROSPECTION", sub.lineno, attr)
                elif attr in _INTROSPECTION_HIGH or attr in _INTROSPECTION_LOW:
                    self.report("INTROSPECTION", sub.lineno, attr, confidence="low",
                                severity=Severity.MEDIUM)
            elif cls is _BinOp:
                assert isinstance(sub, _BinOp)
                if isinstance(sub.op, _Mult) and (
                        self._sequence_like(sub.left) or self._sequence_like(sub.right)):
                    self._huge(sub, sub.left, sub.right)
            elif cls is _ListComp:
                assert isinstance(sub, _ListComp)
                if self._may_be_huge(sub):
                    self._huge(sub)
            elif cls is _NamedExpr:
                assert isinstance(sub, _NamedExpr)
                self.scope.bind(sub.target, sub.value, self.scope.taint_of(sub.value))

    def _may_replicate(self, node: ast.stmt) -> bool:
        """Could `node` (a function) fork or spawn? Else `check_self_replication` has no work."""
        words = None if self.gate is None else self.gate.whole(node)
        return words is None or not _REPLICATION_WORDS.isdisjoint(words) or self._aliases_in(
            words, _REPLICATION_WORDS)

    def _callee_matters(self, func: ast.expr) -> bool:
        """Could a call of `func` meet a rule? No when its names are neither in the rule tables
        nor bound to anything, and nothing in the statement carries taint (cheap, syntactic)."""
        node = func
        while True:
            cls = type(node)
            if cls is _Attribute:
                assert isinstance(node, _Attribute)
                if node.attr in _TRIGGERS:
                    return True
                node = node.value
            elif cls is _Call:
                assert isinstance(node, _Call)
                node = node.func
            elif cls is _Subscript:
                assert isinstance(node, _Subscript)
                node = node.value
            elif cls is _Name:
                assert isinstance(node, _Name)
                name = node.id
                if name in _TRIGGERS or self._mentions_live([name]):
                    return True
                break
            else:
                return True
        return self.scope.statement_tainted

    def _stringish(self, node: ast.expr) -> bool:
        """Could `node` be a path or URL worth classifying? (cheap, syntactic)"""
        cls = type(node)
        if cls is _Constant:
            return isinstance(getattr(node, "value", None), str)
        if cls is _Name:
            return getattr(node, "id", "") in self.scope.consts
        if cls is _Call:
            return (self.scope.qualname(getattr(node, "func", node)) or "") in _PATH_BUILDERS
        return cls in _STRING_BUILDERS

    def _sequence_like(self, node: ast.expr) -> bool:
        if isinstance(node, _Constant):
            return isinstance(node.value, (str, bytes))
        if isinstance(node, _Name):
            return isinstance(self.scope.consts.get(node.id), (str, bytes, tuple))
        return isinstance(node, (*_SEQUENCE_NODES, _BinOp, _JoinedStr))

    def _may_be_huge(self, node: ast.ListComp) -> bool:
        """Only a comprehension over a huge value or a range can fold to `Huge` (`pyconst`)."""
        if len(node.generators) != 1:
            return False
        iterable = node.generators[0].iter
        value = self.scope.ev.value(iterable)
        return isinstance(value, Huge) or (isinstance(iterable, _Call) and isinstance(
            value, tuple))

    def _huge(self, node: ast.expr, *operands: ast.expr) -> None:
        value = self.scope.ev.value(node)
        if not isinstance(value, Huge) or value.size < MEMORY_LIMIT:
            return
        if operands and not any(isinstance(op, (_List, _Tuple, _ListComp)) or isinstance(
                self.scope.ev.value(op), (str, bytes, tuple, Huge)) for op in operands):
            return
        self.report("MEMORY-BOMB", node.lineno, f"~10^{len(str(value.size)) - 1} elements")

    def _argument_paths(self, call: ast.Call) -> None:
        """Any path or URL a call receives is checked for secrets, sockets and metadata hosts."""
        args = call.args
        if call.keywords:
            args = args + [k.value for k in call.keywords]
        for arg in args:
            if type(arg) is _Constant:
                value = getattr(arg, "value", None)
                if not isinstance(value, str) or ("/" not in value and "~" not in value and (
                        not find_metadata_host(value))):
                    continue
            elif not self._stringish(arg):
                continue
            else:
                value = self.scope.ev.value(arg)
            texts = [v for v in (value if isinstance(value, tuple) else (value,))
                     if isinstance(v, (str, PathValue))]
            if not texts:
                partial = self.scope.partial_text(arg)
                texts = [partial] if partial else []
            for text in texts:
                path = text.path if isinstance(text, PathValue) else text
                if len(path) < 4096 and ("/" in path or "~" in path or find_metadata_host(path)):
                    self.access(path, Access.READ, call.lineno)

    def _bindings(self, node: ast.stmt) -> None:
        scope = self.scope
        cls = type(node)
        if cls is _Assign:
            assert isinstance(node, _Assign)
            taint = scope.taint_of(node.value)
            for target in node.targets:
                self._environment_write(target, node.value, node.lineno)
                scope.bind(target, node.value, taint)
                self._remember_file(target, node.value)
        elif cls is _Expr:
            assert isinstance(node, _Expr)
            if type(node.value) is _Call:
                self._mutation(node.value)
        elif isinstance(node, _AnnAssign) and node.value is not None:
            scope.bind(node.target, node.value, scope.taint_of(node.value))
        elif isinstance(node, _AugAssign) and isinstance(node.target, _Name):
            combined = _BinOp(left=_Name(id=node.target.id, ctx=_Load()), op=node.op,
                                 right=node.value)
            ast.copy_location(combined, node)
            taint = scope.taint_of(node.value) | scope.taints.get(node.target.id, frozenset())
            scope.bind(node.target, combined, taint)
        elif isinstance(node, (_For, _AsyncFor)):
            scope.bind(node.target, None, scope.taint_of(node.iter))
            self._bind_listing(node.target, node.iter)
        elif isinstance(node, (_With, _AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    scope.bind(item.optional_vars, item.context_expr,
                               scope.taint_of(item.context_expr))
                    self._remember_file(item.optional_vars, item.context_expr)
        elif isinstance(node, (_FunctionDef, _AsyncFunctionDef)):
            if self._may_replicate(node):
                check_self_replication(self, node)
            arguments = node.args
            for arg in arguments.posonlyargs + arguments.args + arguments.kwonlyargs:
                scope.bind(_Name(id=arg.arg, ctx=_Store()), None, frozenset())

    def _mutation(self, call: ast.Call) -> None:
        """``cmd.append("/")`` on a constant list keeps the constant up to date."""
        func = call.func
        if not isinstance(func, _Attribute) or not isinstance(func.value, _Name):
            return
        current = self.scope.consts.get(func.value.id)
        if not isinstance(current, tuple) or func.attr not in ("append", "extend") or (
                len(call.args) != 1):
            return
        item = self.scope.ev.value(call.args[0])
        if item is UNKNOWN_VALUE:
            self.scope.consts.pop(func.value.id, None)
        elif func.attr == "append":
            self.scope.consts[func.value.id] = (*current, item)
        elif isinstance(item, tuple):
            self.scope.consts[func.value.id] = current + item

    def _environment_write(self, target: ast.expr, value: ast.expr, line: int) -> None:
        """``os.environ["HISTFILE"] = "/dev/null"`` switches shell history off."""
        if not isinstance(target, _Subscript) or self.scope.qualname(target.value) != (
                "os.environ"):
            return
        key = self.scope.ev.value(target.slice)
        if key in ("HISTFILE", "HISTSIZE", "HISTFILESIZE") and self.scope.ev.value(value) in (
                "", "/dev/null", "0"):
            self.report("ANTI-FORENSICS", line, str(key))

    def _bind_listing(self, target: ast.expr, listing: ast.expr) -> None:
        """``for p in glob.glob("/var/log/*")``: `p` is a path under that directory."""
        if not isinstance(target, _Name) or not isinstance(listing, _Call):
            return
        func = listing.func
        name = self.scope.qualname(func) or ""
        if name in ("glob.glob", "glob.iglob") and listing.args:
            pattern = self.scope.partial_text(listing.args[0])
            if pattern:
                self.scope.consts[target.id] = pattern.replace("*", UNKNOWN_TEXT)
        elif isinstance(func, _Attribute) and func.attr in ("glob", "rglob", "iterdir"):
            base = self.scope.ev.value(func.value)
            if isinstance(base, PathValue):
                self.scope.consts[target.id] = PathValue(f"{base.path}/{UNKNOWN_TEXT}")

    def _remember_file(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, _Name) and isinstance(value, _Call) and value.args and (
                self.scope.qualname(value.func) in ("open", "builtins.open", "io.open")):
            path = self.scope.partial_text(value.args[0])
            if path:
                self.state.file_paths[target.id] = path

    def _finish(self) -> None:
        state = self.state
        if state.socket_line and (state.dup2_line or state.pty_line or state.shell_line):
            parts = [x for x in (state.dup2_line, state.pty_line, state.shell_line) if x]
            self.report("REVSHELL", min(parts), "socket wired to a shell")
        if state.env_used_line and state.net_line:
            self.report("ENV-EXFIL", state.env_used_line, "environment dump and network send")


def _climbs_to_object(node: ast.expr) -> bool:
    """``().__class__.__base__`` / ``object`` / ``x.__mro__[-1]``: the escape gadget's path."""
    for sub in walk(node):
        if isinstance(sub, _Attribute) and sub.attr in _CLIMB_ATTRS:
            return True
        if isinstance(sub, _Name) and sub.id == "object":
            return True
    return False


def _child_statements(node: ast.stmt) -> list[ast.stmt]:
    """The statements directly inside `node` (handler and case bodies included), in order."""
    cls = type(node)
    fields = _BODY_FIELDS_OF.get(cls)
    if fields is None:  # only the fields the class has: a missing one costs an exception
        fields = _BODY_FIELDS_OF[cls] = tuple(
            f for f in _BODY_FIELDS if f in getattr(cls, "_fields", ()))
    out: list[ast.stmt] = []
    for field in fields:
        value = getattr(node, field, None)
        if not value:
            continue
        for item in value:
            if isinstance(item, _stmt):
                out.append(item)
            elif isinstance(item, (_ExceptHandler, _match_case)):
                out.extend(item.body)
    return out


_BODY_FIELDS_OF: Final[dict[type, tuple[str, ...]]] = {}


def _own_fields(cls: type) -> tuple[str, ...]:
    fields = tuple(f for f in getattr(cls, "_fields", ()) if f not in _BODY_FIELDS)
    _OWN_FIELDS[cls] = fields
    return fields


_OWN_FIELDS: Final[dict[type, tuple[str, ...]]] = {}


def _own_expressions(node: ast.stmt) -> list[ast.expr]:
    fields = _OWN_FIELDS.get(type(node)) or _own_fields(type(node))
    out: list[ast.expr] = []  # a list, not a generator: cheaper compiled
    for field in fields:
        value = getattr(node, field, None)
        items = value if type(value) is list else [value]
        for item in items:
            if isinstance(item, _expr):
                out.append(item)
            elif isinstance(item, _withitem):
                out.append(item.context_expr)
            elif isinstance(item, _keyword):
                out.append(item.value)
            elif isinstance(item, _ExceptHandler) and item.type is not None:
                out.append(item.type)
            elif isinstance(item, _arguments):
                out.extend(d for d in item.defaults + item.kw_defaults if d is not None)
    return out


_WORD: Final = re.compile(r"[A-Za-z_]\w*")
# A call needs checking only if its callee mentions one of these (or a bound name); a statement
# needs analysing if it mentions one of these or a name the constant folder knows.
_TRIGGERS: Final = INLINE_WORDS | trigger_words((pycalls, pyfiles, pyloops, pyscope, {
    "_PATH_BUILDERS": _PATH_BUILDERS, "_CLIMB_ATTRS": _CLIMB_ATTRS,
    "_INTROSPECTION_HIGH": _INTROSPECTION_HIGH, "_INTROSPECTION_LOW": _INTROSPECTION_LOW}))
_REPLICATION_WORDS: Final = trigger_words(({"_FORKS": pyloops.FORKS,
                                            "_SPAWN_PREFIXES": pyloops.SPAWN_PREFIXES,
                                            "_SPAWN_CONSTRUCTORS": pyloops.SPAWN_CONSTRUCTORS},))
# Folding that cannot make a path, URL or size out of names alone (numbers, case, lengths).
_NON_PRODUCERS: Final = frozenset({"get", "int", "len", "ord", "range", "reversed", "str"})
_STATEMENT_TRIGGERS: Final = _TRIGGERS | (trigger_words((pyconst, pydecode)) - _NON_PRODUCERS)
# Words without which no expression of a statement can carry taint (`Scope.taint_of`): the
# sources, and the dynamic lookups that may compute a source's name.
_TAINT_WORDS: Final = frozenset(_WORD.findall(" ".join((
    *pyscope.NET_SOURCES, *pyscope.NET_METHODS, *pyscope.INPUT_SOURCES, *pyscope.IMPORTERS,
    "environ argv getattr globals locals vars __dict__ modules builtins __builtins__"))))
# Per vocabulary: does an alias (the dotted name it stands for) name something in it? Only the
# alias text decides, so the answers are shared by all scans (`_aliases_in`), within a bound.
_RULE_ALIAS_HITS: Final[dict[str, bool]] = {}
_TAINT_ALIAS_HITS: Final[dict[str, bool]] = {}
_REPLICATION_ALIAS_HITS: Final[dict[str, bool]] = {}
_ALIAS_HITS_LIMIT: Final = 4096


def looks_like_shell(text: str) -> bool:
    """True when the first meaningful line, or a third of the lines, read as shell commands."""
    lines = [line for line in text.splitlines() if line.strip()][:200]
    if not lines:
        return False
    first = next((line for line in lines if not line.lstrip().startswith("#")), lines[0])
    if _SHELL_LINE.match(first) or (lines[0].startswith("#!") and "sh" in lines[0]):
        return True
    return sum(1 for line in lines if _SHELL_LINE.match(line)) * 3 >= len(lines)


def _notebook(text: str, ctx: ScanContext) -> str:
    """Shell lines of notebooks (``!cmd``, ``%system``) are scanned as shell, then blanked."""
    if "!" not in text and "%" not in text:
        return text
    out: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        match = _MAGIC.match(line)
        if match is None:
            out.append(line)
            continue
        command = match.group(3) if match.group(3) is not None else match.group(4)
        if command:
            ctx.scan_nested(command, "shell", number)
        out.append(f"{match.group(1)}{match.group(2) or ''}None" if match.group(2)
                   else f"{match.group(1)}pass")
    return "\n".join(out)


def _quiet_parse(text: str) -> ast.Module:
    """`ast.parse` without leaking SyntaxWarnings (``"\\d"``) into the host's warning filters.

    Under ``-W error`` such a warning would otherwise turn valid code into a SyntaxError.
    """
    with _PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(text)


def _parse(text: str) -> tuple[ast.Module | None, list[tuple[int, str]]]:
    """The module and the lines blanked to make it parse (module None: gave up)."""
    try:
        return _quiet_parse(text), []
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        if len(text) > _REPAIR_MAX_CHARS:
            return None, []
    lines = text.split("\n")
    blanked: list[tuple[int, str]] = []
    for _attempt in range(_REPAIR_ATTEMPTS):
        try:
            return _quiet_parse("\n".join(lines)), blanked
        except SyntaxError as error:
            number = error.lineno or 0
            if not 0 < number <= len(lines) or lines[number - 1].strip() == "pass":
                return None, blanked
            original = lines[number - 1]
            blanked.append((number, original))
            lines[number - 1] = original[: len(original) - len(original.lstrip())] + "pass"
        except (ValueError, RecursionError, MemoryError, OverflowError):
            return None, blanked
    return None, blanked


def scan_python(text: str, ctx: ScanContext) -> None:
    """Scan Python source; findings go to `ctx`. Never raises on bad input."""
    text = text.replace("\x00", " ")
    cell = _CELL_SHELL.match(text)
    if cell:
        ctx.scanners["shell"](text[cell.end():], ctx)
        return
    tree, blanked = _parse(text)
    if tree is None or blanked:
        # Notebook lines (`!pip install x`) only where the text is not valid Python as it is:
        # `!=` continuation lines and `%` lines inside strings must not be rewritten.
        notebook = _notebook(text, ctx)
        if notebook != text:
            text = notebook
            tree, blanked = _parse(text)
    if (tree is None or blanked) and looks_like_shell(text):
        ctx.scanners["shell"](text, ctx)
        return
    if tree is None:
        ctx.report("PY-UNPARSEABLE", 1)
        return
    if blanked:
        ctx.report("PY-UNPARSEABLE", blanked[0][0], f"{len(blanked)} line(s) skipped")
        for number, line in blanked:
            if _SHELL_LINE.match(line):
                ctx.scan_nested(line, "shell", number)
    try:
        PythonScanner(ctx, text).run(tree)
    except RecursionError:
        ctx.report("SCREEN-NESTING", 1, "expression too deeply nested")
