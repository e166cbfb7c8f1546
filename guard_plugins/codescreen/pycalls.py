"""Checks on one Python call: code execution, shell commands, files, privileges, sockets, env.

`check_call(scan, call)` resolves the callee through the scope (aliases, dynamic lookups) and
applies the check for its family. Strings that reach ``exec``/``eval`` are folded statically and
re-scanned as Python; commands that reach ``os.system``/``subprocess`` are re-scanned as shell
(argv lists are quoted back into one command line). Socket, ``dup2`` and ``pty`` use is recorded
in `SnippetState` for the snippet-level reverse-shell and exfiltration checks.
"""

from __future__ import annotations

import ast
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from guard_plugins.codescreen.findings import Severity
from guard_plugins.codescreen.paths import UNKNOWN as UNKNOWN_TEXT
from guard_plugins.codescreen.pyfiles import check_files, text_of, write_target
from guard_plugins.codescreen.pyvalues import Huge

if TYPE_CHECKING:
    from guard_plugins.codescreen.python import PythonScanner

__all__ = ["MEMORY_LIMIT", "SnippetState", "check_call"]

# `ast` node classes as module constants: compiled by mypyc, each is a C static rather than
# an attribute lookup on the `ast` module at every use.
_Attribute: Final = ast.Attribute
_Call: Final = ast.Call
_List: Final = ast.List
_Name: Final = ast.Name
_Starred: Final = ast.Starred
_Tuple: Final = ast.Tuple

MEMORY_LIMIT: Final = 10**9
_EXEC: Final = frozenset({"exec", "eval", "compile", "execfile"})
_RESOLVERS: Final = frozenset({"__import__", "importlib.import_module", "importlib.__import__",
                               "getattr"})
_DESERIALIZE: Final = frozenset({"pickle.loads", "cPickle.loads", "_pickle.loads", "dill.loads",
                                 "marshal.loads", "yaml.unsafe_load", "jsonpickle.decode",
                                 "cloudpickle.loads", "joblib.load", "pickle.load", "torch.load"})
_CODE_OBJECTS: Final = frozenset({"marshal.loads", "types.CodeType", "types.FunctionType"})
_SHELL_STRING: Final = frozenset({"os.system", "os.popen", "os.popen2", "os.popen3", "os.popen4",
                                  "subprocess.getoutput", "subprocess.getstatusoutput",
                                  "platform.popen", "asyncio.create_subprocess_shell",
                                  "pexpect.run", "pexpect.spawn",
                                  "asyncio.subprocess.create_subprocess_shell", "pexpect.spawnu"})
_SUBPROCESS: Final = frozenset({"subprocess.run", "subprocess.call", "subprocess.check_call",
                                "subprocess.check_output", "subprocess.Popen", "pty.spawn",
                                "asyncio.create_subprocess_exec", "sh.Command",
                                "asyncio.subprocess.create_subprocess_exec"})
_EXEC_ARGV: Final = {"os.execv": 1, "os.execve": 1, "os.execvp": 1, "os.execvpe": 1, "os.spawnv": 2,
                     "os.spawnve": 2, "os.spawnvp": 2, "os.spawnvpe": 2, "os.posix_spawn": 1,
                     "os.posix_spawnp": 1}
_EXEC_VARARGS: Final = {"os.execl": 1, "os.execle": 1, "os.execlp": 1, "os.execlpe": 1,
                        "os.spawnl": 2, "os.spawnle": 2, "os.spawnlp": 2, "os.spawnlpe": 2}
_SETUID: Final = frozenset({"os.setuid", "os.setgid", "os.seteuid", "os.setegid", "os.setreuid",
                            "os.setregid", "os.setresuid", "os.setresgid", "os.setgroups"})
_LIBC: Final = {"ptrace": "PTRACE", "process_vm_writev": "PTRACE", "init_module": "KERNEL",
                "finit_module": "KERNEL", "delete_module": "KERNEL", "mount": "CONTAINER-ESCAPE",
                "umount": "CONTAINER-ESCAPE", "umount2": "CONTAINER-ESCAPE", "unshare": "NAMESPACE",
                "setns": "NAMESPACE", "pivot_root": "NAMESPACE", "chroot": "NAMESPACE",
                "setuid": "SETUID", "setresuid": "SETUID", "setreuid": "SETUID", "setgid": "SETUID",
                "reboot": "HOST-DISRUPT", "capset": "SETUID"}
_SYSCALLS: Final = {101: "PTRACE", 175: "KERNEL", 313: "KERNEL", 165: "CONTAINER-ESCAPE",
                    272: "NAMESPACE", 308: "NAMESPACE", 155: "NAMESPACE", 161: "NAMESPACE",
                    105: "SETUID", 117: "SETUID", 169: "HOST-DISRUPT", 310: "PTRACE"}
_ALLOCATORS: Final = frozenset({"bytearray", "bytes", "os.urandom", "numpy.zeros", "numpy.ones",
                                "numpy.empty", "numpy.full", "numpy.random.rand",
                                "numpy.random.random", "numpy.arange", "mmap.mmap", "list", "tuple",
                                "set", "sorted", "numpy.random.randn", "torch.zeros", "torch.ones",
                                "torch.empty", "torch.randn", "array.array", "numpy.ndarray"})
_NET_PREFIXES: Final = ("requests.", "httpx.", "urllib.request.urlopen", "urllib.request.Request",
                        "urllib3.", "http.client.", "aiohttp.", "smtplib.", "ftplib.", "socket.",
                        "paramiko.", "websocket.", "websockets.", "telnetlib.", "pycurl.",
                        "xmlrpc.client.", "boto3.", "urllib.urlopen", "urllib2.", "dns.resolver.")
_NET_METHODS: Final = frozenset({"send", "sendall", "sendto", "sendmail", "send_message",
                                 "upload_file", "put_object", "storbinary", "urlopen", "sendfile"})
_ENV_PROPAGATORS: Final = frozenset({"dict", "list", "tuple", "sorted", "set", "copy.copy", "len",
                                     "copy.deepcopy", "os.environ.copy", "os.environ.items",
                                     "os.environ.keys", "os.environ.values", "dict.items", "iter",
                                     "enumerate", "zip"})
# Handing the environment to a child process is not a dump (os.execve(path, args, env)).
_CHILD_ENV: Final = ("os.exec", "os.spawn", "os.posix_spawn", "subprocess.",
                     "asyncio.create_subprocess")
_PUBLIC_DIRS: Final = ("/tmp/", "/var/tmp/", "/dev/shm/", "/var/www/", "/srv/", "/usr/share/nginx/")
_SHELL_NAMES: Final = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "csh", "tcsh", "fish"})


@dataclass
class SnippetState:
    """Facts about the whole snippet, combined after the walk."""

    socket_line: int = 0
    dup2_line: int = 0
    pty_line: int = 0
    shell_line: int = 0
    env_used_line: int = 0
    net_line: int = 0
    public_write_line: int = 0
    downloaded: set[str] = field(default_factory=set)
    file_paths: dict[str, str] = field(default_factory=dict)


def check_call(scan: PythonScanner, call: ast.Call) -> None:
    """Apply every check that concerns `call`."""
    scope = scan.scope
    name = (scope.qualname(call.func) or "").removeprefix("builtins.")
    line = call.lineno
    short = name.rsplit(".", 1)[-1]
    if name in _EXEC:
        _check_exec(scan, call, name)
    elif name in _DESERIALIZE and call.args:
        _check_deserialize(scan, call, name)
    elif name in _SHELL_STRING and call.args:
        _run_command(scan, call, call.args[0], name)
    elif name in _SUBPROCESS and call.args:
        _run_command(scan, call, call.args[0], name)
        if name == "pty.spawn":
            scan.state.pty_line = scan.state.pty_line or line
    elif name in _EXEC_ARGV and len(call.args) > _EXEC_ARGV[name]:
        _run_command(scan, call, call.args[_EXEC_ARGV[name]], name)
    elif name in _EXEC_VARARGS and len(call.args) > _EXEC_VARARGS[name]:
        _run_command(scan, call, _List(elts=call.args[_EXEC_VARARGS[name]:]), name)
    elif name.startswith("libc.") and short in _LIBC | {"syscall": ""}:
        _check_libc(scan, call, short)
    elif name in _RESOLVERS:
        scope.qualname(call)  # resolves the module or attribute; reports hidden names
    check_files(scan, call, name)
    _check_process(scan, call, name)
    if name in _ALLOCATORS and call.args:
        _check_allocation(scan, call)
    _check_flows(scan, call, name)


def _check_exec(scan: PythonScanner, call: ast.Call, name: str) -> None:
    if not call.args:
        return
    arg, line, scope = call.args[0], call.lineno, scan.scope
    if isinstance(arg, _Name) and scope.aliases.get(arg.id, "").startswith("compile("):
        return
    inner = [scope.qualname(c.func) for c in ast.walk(arg) if isinstance(c, _Call)]
    if any(q in _CODE_OBJECTS for q in inner):
        scan.report("OBFUSCATED-EXEC", line, "serialized code object")
        return
    taint = scope.taint_of(arg)
    if "net" in taint or _reads_downloaded(scan, arg):
        scan.report("REMOTE-EXEC", line, f"{name} of network data")
        return
    value, flags = scope.ev.evaluate(arg)
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if isinstance(text, str):
        if flags & {"decoded", "built"}:
            how = "decoded" if "decoded" in flags else "assembled"
            scan.report("OBFUSCATED-EXEC", line, f"{name} of {how} string", confidence="low",
                        severity=Severity.MEDIUM)
        scan.nested(text, "python", line)
        return
    decoded = any(q and q.endswith(("decode", "decompress", "fromhex", "unhexlify"))
                  for q in inner) or any(isinstance(c, _Attribute) and c.attr == "decode"
                                         for c in ast.walk(arg))
    if decoded:
        scan.report("OBFUSCATED-EXEC", line, f"{name} of decoded data")
    elif "input" in taint:
        scan.report("REMOTE-EXEC", line, f"{name} of user input", confidence="low")
    else:
        partial = scope.partial_text(arg)
        if partial is not None:
            scan.nested(partial.replace(UNKNOWN_TEXT, "_"), "python", line)
        scan.report("DYNAMIC-EXEC", line, name)


def _reads_downloaded(scan: PythonScanner, node: ast.expr) -> bool:
    if not scan.state.downloaded:
        return False
    for sub in ast.walk(node):
        if isinstance(sub, _Call) and sub.args:
            path = text_of(scan, sub.args[0]) or ""
            if path.rsplit("/", 1)[-1] in scan.state.downloaded:
                return True
    return False


def _check_deserialize(scan: PythonScanner, call: ast.Call, name: str) -> None:
    arg = call.args[0]
    if "net" in scan.scope.taint_of(arg):
        scan.report("REMOTE-EXEC", call.lineno, f"{name} of network data")
        return
    value = scan.scope.ev.value(arg)
    if isinstance(value, bytes) and name.endswith("loads"):
        risky = any(marker in value for marker in (b"system", b"posix", b"subprocess", b"eval",
                                                   b"exec", b"builtins", b"nt\n", b"popen"))
        scan.report("OBFUSCATED-EXEC", call.lineno, f"{name} of a constant payload",
                    confidence="high" if risky else "low")


def _argvtext_of(scan: PythonScanner, node: ast.expr) -> str | None:
    """A command as one shell line: strings as they are, argv lists quoted back together."""
    elts: list[ast.expr] | None = None
    if isinstance(node, (_List, _Tuple)):
        elts = list(node.elts)
    else:
        value = scan.scope.ev.value(node)
        if isinstance(value, tuple):
            return " ".join(shlex.quote(str(v)) for v in value)
        return text_of(scan, node)
    words: list[str] = []
    for elt in elts:
        if isinstance(elt, _Starred):
            words.append(UNKNOWN_TEXT)
        elif scan.scope.qualname(elt) == "sys.executable":
            words.append("python3")
        else:
            words.append(text_of(scan, elt) or UNKNOWN_TEXT)
    return " ".join(shlex.quote(w) for w in words)


def _run_command(scan: PythonScanner, call: ast.Call, arg: ast.expr, name: str) -> None:
    line = call.lineno
    taint = scan.scope.taint_of(arg)
    if "net" in taint:
        scan.report("REMOTE-EXEC", line, f"{name} of network data")
    elif "input" in taint:
        scan.report("REMOTE-EXEC", line, f"{name} of user input", confidence="low")
    text = _argvtext_of(scan, arg)
    if text is None:
        return
    first = text.split(" ", 1)[0].strip("'\"").rsplit("/", 1)[-1]
    if first in _SHELL_NAMES:
        scan.state.shell_line = scan.state.shell_line or line
        redirected = [k for k in call.keywords if k.arg in ("stdin", "stdout", "stderr")]
        if any(_mentions_socket(scan, k.value) for k in redirected):
            scan.report("REVSHELL", line, f"{name} with socket streams")
    if any(w and w.rsplit("/", 1)[-1] in scan.state.downloaded for w in text.split()):
        scan.report("REMOTE-EXEC", line, "downloaded file run")
    scan.nested(text, "shell", line)


def _mentions_socket(scan: PythonScanner, node: ast.expr) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, (_Name, _Attribute, _Call)):
            name = scan.scope.qualname(sub) or ""
            if name.startswith("socket.") or name.endswith(".accept()"):
                return True
    return False


def _check_libc(scan: PythonScanner, call: ast.Call, short: str) -> None:
    concept = _LIBC.get(short)
    if short == "syscall" and call.args:
        number = scan.scope.ev.value(call.args[0])
        concept = _SYSCALLS.get(number) if isinstance(number, int) else None
    if concept == "SETUID" and call.args and scan.scope.ev.value(call.args[0]) not in (0, "0"):
        scan.report("SETUID", call.lineno, f"libc.{short}", confidence="low",
                    severity=Severity.MEDIUM)
    elif concept:
        scan.report(concept, call.lineno, f"libc.{short}")


def _check_process(scan: PythonScanner, call: ast.Call, name: str) -> None:
    args, line, ev = call.args, call.lineno, scan.scope.ev
    if name in _SETUID:
        zero = any(ev.value(a) == 0 for a in args)
        scan.report("SETUID", line, name, confidence="high" if zero else "low",
                    severity=Severity.HIGH if zero else Severity.MEDIUM)
    elif name in ("os.chroot", "os.unshare", "os.setns"):
        scan.report("NAMESPACE", line, name)
    elif name in ("os.kill", "os.killpg") and args and ev.value(args[0]) in (-1, 1):
        scan.report("HOST-DISRUPT", line, f"{name}({ev.value(args[0])})")
    elif name == "os.dup2" and len(args) >= 2 and ev.value(args[1]) in (0, 1, 2):
        scan.state.dup2_line = scan.state.dup2_line or line
    elif name in ("socket.create_connection", "socket.create_server") or (
            name.startswith("socket.") and name.rsplit(".", 1)[-1] in ("connect", "connect_ex",
                                                                       "bind")):
        scan.state.socket_line = scan.state.socket_line or line


def _check_allocation(scan: PythonScanner, call: ast.Call) -> None:
    sizes: list[int] = []
    for arg in call.args[:2]:
        value = scan.scope.ev.value(arg)
        if isinstance(value, Huge):
            sizes.append(value.size)
        elif isinstance(value, int) and not isinstance(value, bool):
            sizes.append(value)
        elif isinstance(value, tuple) and value and _shaped(scan, call) and all(
                isinstance(v, int) for v in value):
            total = 1
            for v in value:
                total *= max(v, 0) if isinstance(v, int) else 1
            sizes.append(total)
    if sizes and max(sizes) >= MEMORY_LIMIT:
        scan.report("MEMORY-BOMB", call.lineno, f"~10^{len(str(max(sizes))) - 1} elements")


def _shaped(scan: PythonScanner, call: ast.Call) -> bool:
    """numpy/torch allocators take a shape tuple; list()/set() of a tuple is just its items."""
    name = scan.scope.qualname(call.func) or ""
    return name.startswith(("numpy.", "torch."))


def _check_flows(scan: PythonScanner, call: ast.Call, name: str) -> None:
    """Network sends, env dumps reaching calls, and writes of tainted data."""
    state, line = scan.state, call.lineno
    short = name.rsplit(".", 1)[-1]
    network = name.startswith(_NET_PREFIXES) or (short in _NET_METHODS and "." in name)
    if network:
        state.net_line = state.net_line or line
    if not scan.scope.statement_tainted:
        return
    values = list(call.args) + [k.value for k in call.keywords if k.arg != "env"]
    taints = [scan.scope.taint_of(v) for v in values]
    env = any("env" in t for t in taints)
    net_data = any("net" in t for t in taints)
    if env and network:
        scan.report("ENV-EXFIL", line, f"environment sent by {name}", severity=Severity.CRITICAL)
    elif env and name not in _ENV_PROPAGATORS and not name.startswith(_CHILD_ENV):
        state.env_used_line = state.env_used_line or line
    if short in ("write", "writelines", "write_text", "write_bytes", "dump") and (env or net_data):
        path = write_target(scan, call, short)
        if env and path and path.startswith(_PUBLIC_DIRS):
            scan.report("ENV-EXFIL", line, f"environment written to {path}")
        if net_data and path:
            state.downloaded.add(path.rsplit("/", 1)[-1])
