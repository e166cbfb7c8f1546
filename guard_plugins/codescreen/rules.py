"""The rule registry: every rule id the screen can report, with its severity, confidence and reason.

Rule ids are ``<LANG>-<NAME>``: ``PY-`` rules come from the Python (ast) scanner, ``SH-`` rules from
the shell scanner, ``SCREEN-`` rules from the screen itself. Most concepts exist in both languages
(``PY-REVSHELL`` / ``SH-REVSHELL``). The defaults here are what a finding carries unless the
scanner lowers its confidence for a specific match (documented in docs/codescreen.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from guard_plugins.codescreen.findings import Confidence, Severity, Threat

__all__ = ["RULES", "Rule", "get_rule", "rule_table"]

_C, _H, _M, _L = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW
_T: Final = Threat


@dataclass(frozen=True)
class Rule:
    """One detection: its id, family, default severity/confidence and the reason findings carry.

    >>> get_rule("SH-REVSHELL").severity.value
    'critical'
    """

    id: str
    threat: Threat
    severity: Severity
    confidence: Confidence
    reason: str
    detects: str

    @property
    def language(self) -> str:
        return {"PY": "python", "SH": "shell"}.get(self.id.split("-", 1)[0], "any")


_SPEC: Final[tuple[tuple[str, str, Threat, Severity, Confidence, str, str], ...]] = (
    # concept, languages, threat, severity, confidence, reason, what it detects
    ("FORKBOMB", "PY SH", _T.RESOURCE_EXHAUSTION, _C, "high",
     "self-replicating process creation (fork bomb)",
     "`:(){ :|:& };:`-style functions, fork() in an unbounded loop"),
    ("UNBOUNDED-SPAWN", "PY SH", _T.RESOURCE_EXHAUSTION, _H, "high",
     "processes or threads started in an unbounded loop",
     "Thread/Process/Popen/background jobs inside `while True` with no exit"),
    ("MEMORY-BOMB", "PY", _T.RESOURCE_EXHAUSTION, _H, "high",
     "allocation of at least 1e9 elements",
     "`' ' * 10**12`, `bytearray(10**11)`, `numpy.zeros` of a huge shape, `list(range(...))`"),
    ("MEMORY-GROWTH", "PY", _T.RESOURCE_EXHAUSTION, _H, "high",
     "container grows in an unbounded loop",
     "append/extend/+= in `while True` with no break (low confidence if the loop blocks)"),
    ("CONTAINER-ESCAPE", "PY SH", _T.SANDBOX_ESCAPE, _C, "high",
     "container escape primitive",
     "docker/containerd socket, nsenter, /proc/1/root, cgroup release_agent, core_pattern, "
     "privileged or host-mounted docker run, mount"),
    ("NAMESPACE", "PY SH", _T.SANDBOX_ESCAPE, _H, "high",
     "namespace or root-directory change",
     "unshare, chroot, pivot_root, setns, capsh"),
    ("KERNEL", "PY SH", _T.SANDBOX_ESCAPE, _C, "high",
     "kernel module or raw kernel interface",
     "insmod/modprobe/rmmod, init_module, /dev/mem, /dev/kmem, /proc/kcore, /proc/sysrq-trigger"),
    ("SYSTEM-TUNABLE", "PY SH", _T.SANDBOX_ESCAPE, _H, "high",
     "write to kernel tunables",
     "writes to /proc/sys and /sys, `sysctl -w`"),
    ("PTRACE", "PY SH", _T.SANDBOX_ESCAPE, _H, "high",
     "attaching to or writing another process",
     "ptrace via ctypes, writes to /proc/<pid>/mem (gdb/strace -p: low confidence)"),
    ("INTROSPECTION", "PY", _T.SANDBOX_ESCAPE, _H, "high",
     "interpreter internals used to reach hidden objects",
     "`().__class__.__bases__[0].__subclasses__()`; __globals__/f_globals/__builtins__ "
     "attribute access (low confidence)"),
    ("SUDO", "SH", _T.PRIVILEGE_ESCALATION, _H, "high",
     "privilege escalation command",
     "sudo, su, doas, pkexec"),
    ("SETUID", "PY SH", _T.PRIVILEGE_ESCALATION, _H, "high",
     "setuid bit or uid change to root",
     "chmod u+s / 4755, setcap, os.setuid(0), os.chmod with the setuid bit"),
    ("SYSTEM-FILE-WRITE", "PY SH", _T.PRIVILEGE_ESCALATION, _C, "high",
     "write to an account or loader file",
     "/etc/passwd, /etc/shadow, /etc/sudoers, /etc/ld.so.preload, /etc/pam.d, system binaries"),
    ("CREDENTIAL-ACCESS", "PY SH", _T.CREDENTIAL_ACCESS, _H, "high",
     "access to stored credentials",
     "/etc/shadow, SSH private keys, ~/.aws/credentials, .kube/config, /proc/*/environ, "
     "service-account tokens, .netrc, .git-credentials"),
    ("CLOUD-METADATA", "PY SH", _T.CREDENTIAL_ACCESS, _H, "high",
     "cloud metadata endpoint",
     "169.254.169.254, metadata.google.internal, fd00:ec2::254, 169.254.170.2, 100.100.100.200"),
    ("ENV-EXFIL", "PY SH", _T.CREDENTIAL_ACCESS, _H, "high",
     "environment dump sent over the network or to a public place",
     "os.environ/env/printenv reaching, or in the same snippet as, a network send"),
    ("REVSHELL", "PY SH", _T.REMOTE_EXECUTION, _C, "high",
     "shell bound to a network connection",
     "/dev/tcp redirects, nc -e, socat exec:, socket + dup2 + shell, pty.spawn over a socket"),
    ("DOWNLOAD-EXEC", "SH", _T.REMOTE_EXECUTION, _C, "high",
     "downloaded content executed",
     "`curl … | sh`, `wget -O- | bash`, `bash <(curl …)`, `sh -c \"$(curl …)\"`"),
    ("REMOTE-EXEC", "PY", _T.REMOTE_EXECUTION, _C, "high",
     "network or input data executed",
     "exec/eval/os.system/pickle.loads of data from urlopen, requests, sockets or input()"),
    ("REMOTE-PACKAGE", "SH", _T.REMOTE_EXECUTION, _M, "low",
     "package installed from an arbitrary URL or index",
     "pip install https://…, --index-url / --extra-index-url"),
    ("DESTRUCTIVE-DELETE", "PY SH", _T.DESTRUCTION, _C, "high",
     "recursive deletion of the root, home or a system directory",
     "rm -rf / ~ /* /etc…, --no-preserve-root, find / -delete, shutil.rmtree('/'), "
     "delete loops over os.walk('/')"),
    ("DISK-WIPE", "PY SH", _T.DESTRUCTION, _C, "high",
     "raw block device overwritten or formatted",
     "mkfs, dd of=/dev/sda, shred /dev/sd*, > /dev/sda, wipefs, open('/dev/sda', 'wb')"),
    ("HOST-DISRUPT", "PY SH", _T.DESTRUCTION, _H, "high",
     "host shutdown or killing every process",
     "shutdown, reboot, halt, poweroff, kill -9 -1, kill 1, os.kill(-1, …)"),
    ("PERSISTENCE", "PY SH", _T.PERSISTENCE, _H, "high",
     "persistence mechanism installed",
     "crontab edits, /etc/cron*, systemd units, systemctl enable, rc.local, init.d, "
     "authorized_keys, profile.d, autostart"),
    ("SHELL-RC", "PY SH", _T.PERSISTENCE, _M, "low",
     "shell start-up file modified",
     "writes to ~/.bashrc, ~/.profile, ~/.zshrc, ~/.bash_profile"),
    ("DISABLE-SECURITY", "PY SH", _T.DEFENSE_EVASION, _H, "high",
     "security control disabled",
     "setenforce 0, ufw disable, iptables -F, stopping auditd/apparmor/firewalld, "
     "ASLR off (randomize_va_space), auditctl -e 0"),
    ("ANTI-FORENSICS", "PY SH", _T.DEFENSE_EVASION, _H, "high",
     "shell history or logs erased",
     "history -c, unset HISTFILE, HISTFILE=/dev/null, deleting ~/.bash_history or /var/log"),
    ("OBFUSCATED-EXEC", "PY SH", _T.OBFUSCATION, _H, "high",
     "decoded or constructed code executed",
     "exec of base64/hex/zlib/rot13/chr-joined data, `echo … | base64 -d | sh`, "
     "marshal/pickle payloads (low confidence when the payload is decoded and scanned clean)"),
    ("OBFUSCATED-NAME", "PY", _T.OBFUSCATION, _H, "high",
     "dangerous name hidden behind string building",
     "getattr(os, 'sys'+'tem'), __import__('o'+'s'), importlib.import_module(chr(…))"),
    ("DYNAMIC-EXEC", "PY SH", _T.OBFUSCATION, _M, "low",
     "code built at run time executed",
     "exec/eval/compile or `eval` of a value the screen cannot resolve"),
    ("UNPARSEABLE", "PY", _T.SCREEN_LIMIT, _L, "low",
     "code does not parse",
     "Python with syntax errors that does not look like shell (recovered lines still scanned)"),
)

_SCREEN: Final[tuple[tuple[str, Threat, Severity, Confidence, str, str], ...]] = (
    ("SCREEN-OVERSIZE", _T.SCREEN_LIMIT, _M, "high",
     "input larger than the screen's limit; only the head was scanned",
     "inputs over 1 MB (scan is bounded; agent code is never this large)"),
    ("SCREEN-ERROR", _T.SCREEN_LIMIT, _M, "high",
     "the screen failed on this input (fails closed)",
     "an internal error while scanning; findings made before it are kept"),
    ("SCREEN-NESTING", _T.OBFUSCATION, _H, "high",
     "code nested deeper than the screen follows",
     "more than 4 levels of exec/bash -c/decoding, or the nested-text budget exhausted"),
)


def _build() -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for concept, langs, threat, severity, confidence, reason, detects in _SPEC:
        for lang in langs.split():
            rule_id = f"{lang}-{concept}"
            rules[rule_id] = Rule(rule_id, threat, severity, confidence, reason, detects)
    for rule_id, threat, severity, confidence, reason, detects in _SCREEN:
        rules[rule_id] = Rule(rule_id, threat, severity, confidence, reason, detects)
    return rules


RULES: Final[Mapping[str, Rule]] = MappingProxyType(_build())


def get_rule(rule_id: str) -> Rule:
    """The registered rule with this id; KeyError names the id when it is not registered."""
    return RULES[rule_id]


def rule_table() -> str:
    """The registry as a Markdown table, one row per concept (docs/codescreen.md embeds it)."""
    rows = ["| rules | threat | severity | confidence | detects |", "|---|---|---|---|---|"]
    seen: dict[str, list[Rule]] = {}
    for rule in RULES.values():
        concept = rule.id.split("-", 1)[1] if not rule.id.startswith("SCREEN-") else rule.id
        seen.setdefault(concept, []).append(rule)
    for rules in seen.values():
        first = rules[0]
        ids = ", ".join(f"`{r.id}`" for r in rules)
        detects = first.detects.replace("|", "\\|")
        rows.append(f"| {ids} | {first.threat.value} | {first.severity.value} | "
                    f"{first.confidence} | {detects} |")
    return "\n".join(rows) + "\n"
