"""The shell scanner: follows data through pipelines, substitutions and interpreters.

`scan_shell` lexes the script (`shell_lex`), splits it into commands (`shell_parse`) and, per
pipeline, tracks what flows into each command's stdin (a download, literal text, decoded text, an
environment dump). Interpreters that execute their input (``sh``, ``bash -c``, ``python -c``,
``eval``, ``source``, here-documents) are scanned recursively in their own language; per-program
checks come from `shell_commands.CHECKS`; loop and function bodies are tracked for fork bombs.
Variables assigned earlier in the script are substituted (``x=rm; $x -rf /``) and ``cd`` is
followed, so relative paths are judged where they point (``cd / && rm -rf *``).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Final

from guard_plugins.codescreen.context import ScanContext
from guard_plugins.codescreen.findings import Confidence, Severity
from guard_plugins.codescreen.paths import (
    UNKNOWN,
    Access,
    classify_path,
    find_metadata_host,
    normalize,
)
from guard_plugins.codescreen.shell_commands import CHECKS, Invocation, split_options
from guard_plugins.codescreen.shell_flow import Stream, command_output, foreign_inline
from guard_plugins.codescreen.shell_lex import Token, tokenize
from guard_plugins.codescreen.shell_loops import track_structure
from guard_plugins.codescreen.shell_parse import (
    PRIVILEGE_WRAPPERS,
    Command,
    Pipeline,
    split_commands,
    unwrap,
)

__all__ = ["SHELLS", "scan_shell"]

SHELLS: Final = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "mksh", "rbash", "fish",
                           "tcsh", "csh", "busybox"})
_PYTHON: Final = re.compile(r"^(?:python[0-9.]*|pypy[0-9.]*|ipython3?)$")
_FOREIGN: Final = frozenset({"perl", "ruby", "php", "node", "nodejs", "lua", "deno", "bun", "awk",
                             "gawk", "tclsh", "osascript", "pwsh", "powershell"})
_FOREIGN_FLAGS: Final = frozenset({"-e", "-E", "-r", "--eval", "-c", "-Command", "-command"})
_NET_TOOLS: Final = frozenset({"nc", "ncat", "netcat", "socat", "telnet", "openssl", "ssh", "scp",
                               "sftp", "ftp", "tftp", "curl", "wget", "mail", "sendmail", "mutt",
                               "http"})
_PUBLIC_DIRS: Final = ("/tmp/", "/var/tmp/", "/dev/shm/", "/var/www/", "/srv/", "/usr/share/nginx/")
_VARIABLE: Final = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})")
_ENV_DUMPERS: Final = frozenset({"env", "printenv"})
_SAFE_INDEXES: Final = re.compile(r"^https://(?:pypi\.org|files\.pythonhosted\.org|download\.pytorch\."
                                  r"org|pypi\.nvidia\.com|test\.pypi\.org)(?:/|$)")


@dataclass
class _Script:
    env_dump_line: int = 0
    send_line: int = 0


class ShellScanner:
    """One shell scan; implements `shell_commands.ShellSink`."""

    def __init__(self, ctx: ScanContext) -> None:
        self.ctx = ctx
        self.script = _Script()
        self.downloaded: set[str] = set()
        self.variables: dict[str, str] = {}
        self.cwd = ""

    def report(self, concept: str, line: int, detail: str = "", *,
               confidence: Confidence | None = None, severity: Severity | None = None) -> None:
        self.ctx.report(f"SH-{concept}", line, detail, confidence=confidence, severity=severity)

    def access(self, path: str, access: Access, line: int) -> None:
        if self.cwd and path and not path.startswith(("/", "~", "$", UNKNOWN)):
            path = posixpath.join(self.cwd, path)
        for concept, ident in classify_path(path, access):
            self.report(concept, line, ident)
        if path.endswith("/environ"):
            self._env_dump(line)

    def nested(self, text: str, language: str, line: int) -> None:
        self.ctx.scan_nested(text, language, line)

    def run(self, text: str) -> None:
        commands = split_commands(tokenize(text))
        track_structure(commands, self.report)
        seen: set[int] = set()
        for command in commands:
            if id(command.pipeline) not in seen:
                seen.add(id(command.pipeline))
                self._pipeline(command.pipeline)
        if self.script.env_dump_line and self.script.send_line:
            self.report("ENV-EXFIL", self.script.env_dump_line, "env dump and network send")

    def _env_dump(self, line: int) -> None:
        self.script.env_dump_line = self.script.env_dump_line or line

    def _pipeline(self, pipeline: Pipeline) -> None:
        stream: Stream | None = None
        names: list[str] = []
        for command in pipeline.commands:
            inv = self._invocation(command)
            stdin = self._stdin_override(command, inv) or stream
            self._command(command, inv, stdin)
            stream = command_output(inv, stdin, self.downloaded)
            if stream is not None and stream.kind == "env" and inv.name in _ENV_DUMPERS:
                self._env_dump(inv.line)
            names.append(inv.name)
        has_shell = any(n in SHELLS for n in names)
        if has_shell and any(n in ("nc", "ncat", "netcat", "telnet", "socat", "openssl")
                             for n in names) and len(names) > 1:
            self.report("REVSHELL", pipeline.commands[0].line, "shell piped to a socket")

    def _invocation(self, command: Command) -> Invocation:
        words = [self._expand(w) for w in command.words]
        unwrapped = unwrap(words)
        if not unwrapped.name and unwrapped.assignments and not command.pipeline.background:
            for name, value in unwrapped.assignments:
                self.variables[name] = value
        if unwrapped.name == "cd":
            target = normalize(unwrapped.args[0].text if unwrapped.args else "~")
            known = "$" not in target and UNKNOWN not in target and target != "-"
            self.cwd = normalize(posixpath.join(self.cwd, target)) if known else ""
        for name, _options in unwrapped.wrappers:
            if name in PRIVILEGE_WRAPPERS:
                self.report("SUDO", command.line, name)
            elif name == "nsenter":
                self.report("CONTAINER-ESCAPE", command.line, "nsenter")
            elif name in ("chroot", "unshare"):
                self.report("NAMESPACE", command.line, name)
        for name, value in unwrapped.assignments:
            if name in ("HISTFILE", "HISTSIZE", "HISTFILESIZE") and value in ("", "/dev/null",
                                                                             "0"):
                self.report("ANTI-FORENSICS", command.line, name)
        return Invocation(unwrapped.name, unwrapped.args, command.line, command)

    def _expand(self, word: Token) -> Token:
        """Substitute ``$name``/``${name}`` of variables assigned earlier in the script."""
        if "$" not in word.text or not self.variables:
            return word
        def value(match: re.Match[str]) -> str:
            return self.variables.get(match.group(1) or match.group(2), match.group(0))
        text = _VARIABLE.sub(value, word.text)
        if text == word.text:
            return word
        return Token(text, word.line, word.op, word.quoted, word.substs, word.heredoc)

    def _stdin_override(self, command: Command, inv: Invocation) -> Stream | None:
        for op, target in command.redirs:
            if op in ("<<", "<<-") and target.heredoc is not None:
                return Stream("literal", target.heredoc.encode("utf-8", "surrogatepass"))
            if op == "<<<":
                text = target.text.encode("utf-8", "surrogatepass")
                return self._word_stream(target) or Stream("literal", text)
            if op == "<" and target.substs:
                return self._word_stream(target)
            if op == "<" and target.text in self.downloaded:
                return Stream("download")
        return None

    def _word_stream(self, word: Token) -> Stream | None:
        """What a substitution inside `word` produces (a download, decoded text, …)."""
        for subst in word.substs:
            if subst.kind == "arith":
                continue
            out = _last_output(subst.body, self.downloaded)
            if out is not None:
                return out
        return None

    def _command(self, command: Command, inv: Invocation, stdin: Stream | None) -> None:
        for word in command.words + [t for _, t in command.redirs]:
            for subst in word.substs:
                if subst.kind != "arith":
                    self.nested(subst.body, "shell", command.line)
        self._redirects(command, inv, stdin)
        name = inv.name
        if name not in ("echo", "printf", ":", "true"):
            self._arguments(inv)
        if name in ("env", "printenv") or (name in ("set", "export", "declare") and (
                not inv.argv or inv.argv in (["-p"], ["-x"], ["-px"]))):
            self._env_dump(inv.line)
        check = CHECKS.get(name) or (CHECKS["mkfs"] if name.startswith("mkfs.") else None)
        if check is not None:
            check(self, inv)
        if name in SHELLS:
            self._shell(inv, stdin)
        elif _PYTHON.match(name):
            self._python(inv, stdin)
        elif name in _FOREIGN:
            self._foreign(inv, stdin)
        elif name == "eval":
            self._eval(inv)
        elif name in ("source", "."):
            self._source(inv)
        elif name in ("pip", "pip3", "uv", "easy_install", "pipx"):
            self._pip(inv.argv, inv.line)
        elif name in ("nc", "ncat", "netcat"):
            if {"e", "c", "--exec", "--sh-exec", "--lua-exec"} & split_options(inv.argv)[0]:
                self.report("REVSHELL", inv.line, f"{name} -e")
            self.script.send_line = self.script.send_line or inv.line
        elif name == "socat":
            lowered = " ".join(inv.argv).lower()
            if re.search(r"\b(?:exec|system):", lowered) and re.search(
                    r"\b(?:tcp|udp|ssl|openssl|tcp4|tcp6|tcp-listen)[:-]", lowered):
                self.report("REVSHELL", inv.line, "socat exec:")
        elif name in ("curl", "wget", "http", "https", "fetch") and _sends(name, inv.argv):
            self.script.send_line = self.script.send_line or inv.line
        if name in _NET_TOOLS and stdin is not None and stdin.kind == "env":
            self.report("ENV-EXFIL", inv.line, f"env dump piped to {name}")
        if name in _NET_TOOLS and any(self._word_stream(w) == Stream("env") for w in inv.args):
            self.report("ENV-EXFIL", inv.line, f"env dump in {name} arguments")
        if command.words and command.words[0].text.lstrip("./") in self.downloaded and (
                command.words[0].text.startswith(("./", "/"))):
            self.report("DOWNLOAD-EXEC", inv.line, "downloaded file run")

    def _redirects(self, command: Command, inv: Invocation, stdin: Stream | None) -> None:
        for op, target in command.redirs:
            text = target.text
            if op in ("<<", "<<-", "<<<") or not text:
                continue
            if op.endswith(("&", ">&", "<&")) and (text.isdigit() or text == "-"):
                continue
            if "/dev/tcp/" in text or "/dev/udp/" in text:
                if inv.name in SHELLS or inv.name in ("", "exec") or "<" in op or "&" in op:
                    self.report("REVSHELL", command.line, "/dev/tcp redirect")
                else:
                    self.script.send_line = self.script.send_line or command.line
                    if (stdin is not None and stdin.kind == "env") or inv.name in _ENV_DUMPERS:
                        self.report("ENV-EXFIL", command.line, "env dump to /dev/tcp")
                continue
            writes = ">" in op
            self.access(text, Access.WRITE if writes else Access.READ, command.line)
            dumping = inv.name in _ENV_DUMPERS or (stdin is not None and stdin.kind == "env")
            if writes and dumping and text.startswith(_PUBLIC_DIRS):
                self.report("ENV-EXFIL", command.line, f"env dump written to {text}")

    def _arguments(self, inv: Invocation) -> None:
        for arg in inv.argv:
            value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
            host = find_metadata_host(value)
            if host:
                self.report("CLOUD-METADATA", inv.line, host)
            if "/" in value or value.startswith("~"):
                self.access(value, Access.READ, inv.line)

    def _exec_stream(self, language: str, stream: Stream | None, line: int) -> None:
        if stream is None:
            return
        if stream.kind in ("download", "network"):
            self.report("DOWNLOAD-EXEC", line, f"remote content run by {language}")
        elif stream.kind == "decoded-unknown":
            self.report("OBFUSCATED-EXEC", line, f"decoded data run by {language}")
        elif stream.kind in ("literal", "decoded") and stream.text is not None:
            if stream.kind == "decoded":
                self.report("OBFUSCATED-EXEC", line, f"decoded data run by {language}",
                            confidence="low", severity=Severity.MEDIUM)
            if language == "foreign":
                foreign_inline(self, stream.text, line)
            else:
                self.nested(stream.text, language, line)

    def _code_argument(self, word: Token, language: str, line: int) -> None:
        stream = self._word_stream(word)
        if stream is not None:
            self._exec_stream(language, stream, line)
        elif language == "foreign":
            foreign_inline(self, word.text, line)
        else:
            self.nested(word.text, language, line)

    def _shell(self, inv: Invocation, stdin: Stream | None) -> None:
        flags: set[str] = set()
        for word in inv.args:
            text = word.text
            if text.startswith("-") and text != "-" and not word.substs:
                flags.update(text[1:] if not text.startswith("--") else [text])
                continue
            if "c" in flags:
                self._code_argument(word, "shell", inv.line)
            elif word.substs:
                self._exec_stream("shell", self._word_stream(word), inv.line)
            elif text.lstrip("./") in self.downloaded:
                self.report("DOWNLOAD-EXEC", inv.line, "downloaded script run")
            elif text == "-" or "s" in flags:
                self._exec_stream("shell", stdin, inv.line)
            return
        self._exec_stream("shell", stdin, inv.line)

    def _python(self, inv: Invocation, stdin: Stream | None) -> None:
        args = inv.args
        for i, word in enumerate(args):
            text = word.text
            if text == "-c" and i + 1 < len(args):
                self._code_argument(args[i + 1], "python", inv.line)
                return
            if text == "-m" and i + 1 < len(args):
                if args[i + 1].text == "pip":
                    self._pip([a.text for a in args[i + 2:]], inv.line)
                return
            if text.startswith("-") and text != "-":
                continue
            if text == "-":
                break
            if word.substs:
                self._exec_stream("python", self._word_stream(word), inv.line)
            elif text.lstrip("./") in self.downloaded:
                self.report("DOWNLOAD-EXEC", inv.line, "downloaded script run")
            return
        self._exec_stream("python", stdin, inv.line)

    def _foreign(self, inv: Invocation, stdin: Stream | None) -> None:
        args = inv.args
        for i, word in enumerate(args[:-1]):
            if word.text in _FOREIGN_FLAGS or (word.text.startswith("-e") and inv.name == "perl"):
                self._code_argument(args[i + 1], "foreign", inv.line)
                return
        if inv.name in ("awk", "gawk") and args:
            self._code_argument(args[0], "foreign", inv.line)
            return
        if not [a for a in args if not a.text.startswith("-")]:
            self._exec_stream("foreign", stdin, inv.line)

    def _eval(self, inv: Invocation) -> None:
        streams = [s for s in (self._word_stream(w) for w in inv.args) if s is not None]
        if streams:
            self._exec_stream("shell", streams[0], inv.line)
            return
        text = " ".join(inv.argv)
        if re.fullmatch(r"[\s\"']*\$\{?[A-Za-z_@*][A-Za-z0-9_]*\}?[\s\"']*", text):
            self.report("DYNAMIC-EXEC", inv.line, "eval of a variable")
        else:
            self.nested(text, "shell", inv.line)

    def _source(self, inv: Invocation) -> None:
        for word in inv.args[:1]:
            if word.substs:
                self._exec_stream("shell", self._word_stream(word), inv.line)
            elif word.text.lstrip("./") in self.downloaded:
                self.report("DOWNLOAD-EXEC", inv.line, "downloaded script sourced")

    def _pip(self, argv: list[str], line: int) -> None:
        if "install" not in argv:
            return
        for i, arg in enumerate(argv):
            url = ""
            if arg in ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-r",
                       "--requirement") and i + 1 < len(argv):
                url = argv[i + 1]
            elif arg.startswith(("--index-url=", "--extra-index-url=", "--find-links=")):
                url = arg.split("=", 1)[1]
            elif re.match(r"^(?:git\+|hg\+|svn\+|bzr\+)?(?:https?|ftp)://", arg):
                url = arg
            if re.match(r"^(?:\w+\+)?(?:https?|ftp)://", url) and not _SAFE_INDEXES.match(url):
                host = re.sub(r"^(?:\w+\+)?\w+://([^/]*).*$", r"\1", url)
                self.report("REMOTE-PACKAGE", line, host)


def _sends(name: str, argv: list[str]) -> bool:
    """True when a curl/wget invocation uploads data (not a plain download)."""
    for i, arg in enumerate(argv):
        if arg.startswith(("--data", "--form", "--upload-file", "--json", "--post-data",
                           "--post-file", "--body-data", "--body-file", "--method=POST")):
            return True
        if name == "curl" and re.fullmatch(r"-[a-zA-Z]*[dFT]", arg):
            return True
        if arg == "-X" and i + 1 < len(argv) and argv[i + 1].upper() in ("POST", "PUT", "PATCH"):
            return True
    return False


def _last_output(body: str, downloaded: set[str]) -> Stream | None:
    """What the last pipeline of a substitution body writes to stdout."""
    commands = split_commands(tokenize(body))
    if not commands:
        return None
    pipeline = commands[-1].pipeline
    stream: Stream | None = None
    for command in pipeline.commands:
        unwrapped = unwrap(command.words)
        inv = Invocation(unwrapped.name, unwrapped.args, command.line, command)
        stream = command_output(inv, stream, downloaded)
    return stream


def scan_shell(text: str, ctx: ScanContext) -> None:
    """Scan a shell script; findings go to `ctx`."""
    ShellScanner(ctx).run(text)
