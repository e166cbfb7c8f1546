"""Per-program shell checks: one function per program family, looked up in `CHECKS`.

Each check sees an `Invocation` (the unwrapped program, its argument words, its line) and reports
through a `ShellSink`, which prefixes ``SH-`` and classifies paths (see `paths`). Checks that need
to follow data across commands (downloads, environment dumps, interpreters) live in `shell`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from guard_plugins.codescreen.findings import Confidence, Severity
from guard_plugins.codescreen.paths import UNKNOWN, Access, is_root_like, normalize
from guard_plugins.codescreen.shell_lex import Token
from guard_plugins.codescreen.shell_parse import Command

__all__ = ["CHECKS", "SECURITY_SERVICES", "Invocation", "ShellSink", "split_options"]

SECURITY_SERVICES: Final = frozenset(
    {
        "auditd", "apparmor", "firewalld", "ufw", "selinux", "falco", "falco-modern-bpf",
        "osqueryd", "wazuh-agent", "ossec", "ossec-hids", "clamav-daemon", "clamd",
        "falcon-sensor", "crowdstrike", "sysdig", "iptables", "ip6tables", "nftables",
        "fail2ban", "aide", "tripwire", "auditbeat", "filebeat", "rsyslog", "syslog",
        "syslog-ng", "systemd-journald", "elastic-agent", "sentinelone", "cbagentd",
    }
)
_SECURITY_SERVICE_RE: Final = re.compile(
    r"^(?:" + "|".join(re.escape(s) for s in SECURITY_SERVICES) + r")(?:\.service)?$"
)


class ShellSink(Protocol):
    def report(self, concept: str, line: int, detail: str = "", *,
               confidence: Confidence | None = None, severity: Severity | None = None) -> None: ...

    def access(self, path: str, access: Access, line: int) -> None: ...

    def nested(self, text: str, language: str, line: int) -> None: ...


@dataclass
class Invocation:
    name: str
    args: list[Token]
    line: int
    command: Command

    @property
    def argv(self) -> list[str]:
        return [a.text for a in self.args]


def split_options(argv: list[str]) -> tuple[set[str], list[str]]:
    """Short flags (``-rf`` → r, f) and long options (``--force``) apart from positionals."""
    flags: set[str] = set()
    positionals: list[str] = []
    ended = False
    for arg in argv:
        if ended or not arg.startswith("-") or arg == "-":
            positionals.append(arg)
        elif arg == "--":
            ended = True
        elif arg.startswith("--"):
            flags.add(arg.split("=", 1)[0])
        else:
            flags.update(arg[1:])
    return flags, positionals


def _check_rm(sink: ShellSink, inv: Invocation) -> None:
    flags, targets = split_options(inv.argv)
    recursive = bool(flags & {"r", "R", "--recursive"})
    if "--no-preserve-root" in flags:
        sink.report("DESTRUCTIVE-DELETE", inv.line, "--no-preserve-root")
    for target in targets:
        sink.access(target, Access.DELETE_TREE if recursive else Access.DELETE, inv.line)
        path = normalize(target)
        if recursive and path.startswith(("$", UNKNOWN)) and path.rstrip("/*") in _BARE_VARS:
            sink.report("DESTRUCTIVE-DELETE", inv.line, "rm -r of an unset-variable path",
                        confidence="low", severity=Severity.MEDIUM)


_BARE_VARS: Final = {"$" + v for v in ("DIR", "TARGET", "PREFIX", "ROOT", "BASE", "DEST")} | {
    UNKNOWN}


def _check_find(sink: ShellSink, inv: Invocation) -> None:
    argv = inv.argv
    starts: list[str] = []
    for arg in argv:
        if arg.startswith(("-", "(", "!")):
            break
        starts.append(arg)
    joined = " ".join(argv)
    rm_exec = re.search(r"-(?:exec|execdir|ok)\s+(?:\S*/)?(?:rm|shred|unlink)\b", joined)
    deletes = "-delete" in argv or rm_exec is not None
    for start in starts or ["."]:
        if deletes:
            sink.access(start, Access.DELETE_TREE, inv.line)
    if re.search(r"-perm\s+[-/]?(?:[ug]=s|[246]000|-u=s)", joined):
        sink.report("SETUID", inv.line, "find -perm setuid", confidence="low")
    names = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-name", "-iname", "-path")]
    if any(re.search(r"id_(?:rsa|dsa|ecdsa|ed25519)|shadow$|credentials|\.kdbx|\.pem$|\.key$", n)
           for n in names):
        broad = any(is_root_like(normalize(s)) for s in starts)
        sink.report("CREDENTIAL-ACCESS", inv.line, "find for key files",
                    confidence="high" if broad else "low")


def _mode_has_setuid(mode: str) -> bool:
    if re.fullmatch(r"0?[0-7]{4}", mode):
        return mode.lstrip("0").rjust(4, "0")[0] in "246" and len(mode.lstrip("0")) == 4
    return bool(re.search(r"[+=][rwxXt]*s", mode))


def _check_chmod(sink: ShellSink, inv: Invocation) -> None:
    flags, positionals = split_options(inv.argv)
    if not positionals:
        return
    mode, targets = positionals[0], positionals[1:]
    if inv.argv and inv.argv[0].startswith(("-", "+")) and re.fullmatch(r"[-+=][rwxXst]+",
                                                                         inv.argv[0]):
        mode, targets = inv.argv[0], positionals
    if _mode_has_setuid(mode):
        sink.report("SETUID", inv.line, f"chmod {mode}")
    _ownership_targets(sink, inv, flags, targets)


def _ownership_targets(sink: ShellSink, inv: Invocation, flags: set[str],
                       targets: list[str]) -> None:
    recursive = bool(flags & {"R", "--recursive"})
    for target in targets:
        if recursive and is_root_like(normalize(target)):
            sink.report("DESTRUCTIVE-DELETE", inv.line, f"{inv.name} -R {normalize(target)}")
        sink.access(target, Access.WRITE, inv.line)


def _check_chown(sink: ShellSink, inv: Invocation) -> None:
    flags, positionals = split_options(inv.argv)
    _ownership_targets(sink, inv, flags, positionals[1:])


def _check_dd(sink: ShellSink, inv: Invocation) -> None:
    for arg in inv.argv:
        if arg.startswith("of="):
            sink.access(arg[3:], Access.WRITE, inv.line)
        elif arg.startswith("if="):
            sink.access(arg[3:], Access.READ, inv.line)


def _check_disk_tool(sink: ShellSink, inv: Invocation) -> None:
    flags, positionals = split_options(inv.argv)
    if flags & {"l", "--list", "h", "--help", "V", "--version"} or "print" in positionals:
        return
    devices = [p for p in positionals if p.startswith("/dev/")]
    if devices:
        sink.report("DISK-WIPE", inv.line, f"{inv.name} {devices[0]}")
    elif inv.name.startswith(("mkfs", "mke2fs", "wipefs", "blkdiscard")) and positionals:
        sink.report("DISK-WIPE", inv.line, inv.name, confidence="low", severity=Severity.MEDIUM)


def _check_write_targets(sink: ShellSink, inv: Invocation) -> None:
    """shred, truncate, tee, touch: every positional is written."""
    _, positionals = split_options(inv.argv)
    if inv.name == "truncate":
        positionals = [p for p in positionals if not re.fullmatch(r"[-+<>/%]?\d+[KMGT]?", p)]
    for target in positionals:
        sink.access(target, Access.WRITE, inv.line)


def _check_copy(sink: ShellSink, inv: Invocation) -> None:
    """cp, mv, install, ln, rsync, scp: the last positional is written, the rest read."""
    flags, positionals = split_options(inv.argv)
    if flags & {"t", "--target-directory"}:
        return
    if len(positionals) < 2:
        return
    *sources, dest = positionals
    sink.access(dest, Access.WRITE, inv.line)
    for src in sources:
        if inv.name == "mv":
            sink.access(src, Access.DELETE_TREE, inv.line)
        sink.access(src, Access.READ, inv.line)


def _check_sed(sink: ShellSink, inv: Invocation) -> None:
    if any(a == "-i" or a.startswith(("-i", "--in-place")) for a in inv.argv):
        _, positionals = split_options(inv.argv)
        for target in positionals[1:]:
            sink.access(target, Access.WRITE, inv.line)


def _report(concept: str, detail: str = "", confidence: Confidence | None = None
            ) -> Callable[[ShellSink, Invocation], None]:
    def check(sink: ShellSink, inv: Invocation) -> None:
        sink.report(concept, inv.line, detail or inv.name, confidence=confidence)
    return check


def _check_su(sink: ShellSink, inv: Invocation) -> None:
    sink.report("SUDO", inv.line, inv.name)
    argv = inv.argv
    for i, arg in enumerate(argv[:-1]):
        if arg in ("-c", "--command"):
            sink.nested(argv[i + 1], "shell", inv.line)


def _check_mount(sink: ShellSink, inv: Invocation) -> None:
    _, positionals = split_options(inv.argv)
    if positionals:
        sink.report("CONTAINER-ESCAPE", inv.line, "mount")


_DOCKER_RISKY: Final = re.compile(
    r"^--privileged|^--(?:pid|ipc|userns|uts)(?:=|$)host|^--cap-add(?:=|$)(?:ALL|SYS_ADMIN|"
    r"SYS_PTRACE|SYS_MODULE)|(?:apparmor|seccomp)[:=]unconfined|^--device(?:=|$)",
    re.IGNORECASE,
)
_HOST_MOUNT: Final = re.compile(r"^(?:/|/etc|/root|/proc|/sys|/dev|/var/run|/run|/home|/boot)"
                                r"(?::|,|$)|docker\.sock|(?:source|src)=/(?:,|$)")


def _check_container_cli(sink: ShellSink, inv: Invocation) -> None:
    argv = inv.argv
    for i, arg in enumerate(argv):
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if _DOCKER_RISKY.search(arg) or (arg in ("--pid", "--ipc", "--userns") and value == "host"):
            sink.report("CONTAINER-ESCAPE", inv.line, f"{inv.name} {arg.split('=')[0]}")
        elif (arg in ("-v", "--volume", "--mount") and _HOST_MOUNT.search(value)) or (
                arg.startswith(("--volume=", "--mount="))
                and _HOST_MOUNT.search(arg.split("=", 1)[1])):
            sink.report("CONTAINER-ESCAPE", inv.line, f"{inv.name} host mount")


def _check_modprobe(sink: ShellSink, inv: Invocation) -> None:
    flags, positionals = split_options(inv.argv)
    if flags & {"n", "--dry-run", "c", "--showconfig", "--show-depends", "l", "h", "--help"}:
        return
    if positionals or inv.name != "modprobe":
        sink.report("KERNEL", inv.line, inv.name)


_SECURITY_SYSCTLS: Final = ("kernel.randomize_va_space", "kernel.yama.ptrace_scope",
                            "kernel.kptr_restrict", "kernel.dmesg_restrict")


def _check_sysctl(sink: ShellSink, inv: Invocation) -> None:
    for arg in inv.argv:
        key = arg.split("=", 1)[0].replace("/", ".")
        if "=" in arg and key in _SECURITY_SYSCTLS:
            sink.report("DISABLE-SECURITY", inv.line, key)
        elif "=" in arg:
            sink.report("SYSTEM-TUNABLE", inv.line, key)


def _check_debugger(sink: ShellSink, inv: Invocation) -> None:
    if any(a in ("-p", "--pid", "attach") or a.startswith("--pid=") for a in inv.argv):
        sink.report("PTRACE", inv.line, f"{inv.name} -p", confidence="low")


def _check_firewall(sink: ShellSink, inv: Invocation) -> None:
    argv = inv.argv
    joined = " ".join(argv)
    risky = {
        "setenforce": argv[:1] in (["0"], ["Permissive"], ["permissive"]),
        "ufw": bool(argv) and (argv[0] in ("disable", "reset") or joined == "default allow"),
        "nft": "flush ruleset" in joined or joined.startswith("delete table"),
        "auditctl": "-D" in argv or re.search(r"-e\s*0", joined) is not None,
    }.get(inv.name)
    if inv.name.startswith(("iptables", "ip6tables", "ebtables")):
        risky = bool(set(argv) & {"-F", "--flush", "-X", "--delete-chain"}) or re.search(
            r"-P\s+\S+\s+ACCEPT", joined) is not None
    if inv.name in ("aa-teardown", "aa-disable", "aa-complain") or (
            inv.name == "apparmor_parser" and "-R" in argv):
        risky = True
    if risky:
        sink.report("DISABLE-SECURITY", inv.line, f"{inv.name} {' '.join(argv[:2])}")


def _check_service_manager(sink: ShellSink, inv: Invocation) -> None:
    _, positionals = split_options(inv.argv)
    if inv.name == "service" and len(positionals) >= 2:
        positionals = [positionals[1], positionals[0]]
    if not positionals:
        return
    verb, units = positionals[0], positionals[1:]
    if verb in ("enable", "link", "reenable", "preset", "add-wants", "defaults", "on", "load",
                "bootstrap"):
        sink.report("PERSISTENCE", inv.line, f"{inv.name} {verb}")
    elif verb in ("stop", "disable", "mask", "kill", "unload", "bootout", "off") and any(
            _SECURITY_SERVICE_RE.match(u) for u in units):
        sink.report("DISABLE-SECURITY", inv.line, f"{inv.name} {verb} {units[0]}")
    elif verb in ("poweroff", "reboot", "halt", "kexec", "emergency", "rescue"):
        sink.report("HOST-DISRUPT", inv.line, f"{inv.name} {verb}")


def _check_crontab(sink: ShellSink, inv: Invocation) -> None:
    argv = list(inv.argv)
    if "-u" in argv[:-1]:
        del argv[argv.index("-u"):argv.index("-u") + 2]
    flags, positionals = split_options(argv)
    if positionals or not flags or not flags <= {"l", "r"}:
        sink.report("PERSISTENCE", inv.line, "crontab")


def _check_kill(sink: ShellSink, inv: Invocation) -> None:
    rest = inv.argv
    if inv.name == "killall5":
        sink.report("HOST-DISRUPT", inv.line, inv.name)
        return
    if inv.name == "kill":
        if rest[:1] == ["-s"] or rest[:1] == ["-n"]:
            rest = rest[2:]
        elif len(rest) > 1 and rest[0].startswith("-") and rest[0] != "--":
            rest = rest[1:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        if "-1" in rest or "1" in rest:
            sink.report("HOST-DISRUPT", inv.line, f"kill {'-1' if '-1' in rest else '1'}")
        return
    _, positionals = split_options(rest)
    if any(_SECURITY_SERVICE_RE.match(p) for p in positionals):
        sink.report("DISABLE-SECURITY", inv.line, f"{inv.name} {positionals[0]}")


def _check_power(sink: ShellSink, inv: Invocation) -> None:
    if inv.name in ("init", "telinit") and inv.argv[:1] not in (["0"], ["6"]):
        return
    if not any(a in ("--help", "-c") for a in inv.argv):
        sink.report("HOST-DISRUPT", inv.line, inv.name)


def _check_history(sink: ShellSink, inv: Invocation) -> None:
    argv = inv.argv
    history_vars = {"HISTFILE", "HISTSIZE", "HISTFILESIZE", "HISTCONTROL"}
    if (inv.name == "history" and set(argv) & {"-c", "-d", "-w", "-r"}) or (
            inv.name == "unset" and history_vars & set(argv)) or (
            inv.name == "set" and argv[:2] == ["+o", "history"]) or (
            inv.name == "journalctl" and any(a.startswith("--vacuum") for a in argv)):
        sink.report("ANTI-FORENSICS", inv.line, f"{inv.name} {' '.join(argv[:1])}")
    elif inv.name in ("export", "declare", "typeset", "readonly"):
        for arg in argv:
            name, _, value = arg.partition("=")
            if name in history_vars and value in ("", "/dev/null", "0"):
                sink.report("ANTI-FORENSICS", inv.line, name)


def _check_accounts(sink: ShellSink, inv: Invocation) -> None:
    if inv.argv and not set(inv.argv) & {"-h", "--help", "-S", "--status"}:
        sink.report("SYSTEM-FILE-WRITE", inv.line, inv.name)


CHECKS: Final[dict[str, Callable[[ShellSink, Invocation], None]]] = {
    "rm": _check_rm, "find": _check_find, "chmod": _check_chmod, "chown": _check_chown,
    "chgrp": _check_chown, "setcap": _report("SETUID", "setcap"), "dd": _check_dd,
    "mkfs": _check_disk_tool, "mke2fs": _check_disk_tool, "mkswap": _check_disk_tool,
    "wipefs": _check_disk_tool, "blkdiscard": _check_disk_tool, "fdisk": _check_disk_tool,
    "sfdisk": _check_disk_tool, "parted": _check_disk_tool, "sgdisk": _check_disk_tool,
    "gdisk": _check_disk_tool, "shred": _check_write_targets, "truncate": _check_write_targets,
    "tee": _check_write_targets, "touch": _check_write_targets, "cp": _check_copy,
    "mv": _check_copy, "install": _check_copy, "ln": _check_copy, "rsync": _check_copy,
    "scp": _check_copy, "sed": _check_sed, "su": _check_su, "sudo": _report("SUDO"),
    "doas": _report("SUDO"), "pkexec": _report("SUDO"), "mount": _check_mount,
    "nsenter": _report("CONTAINER-ESCAPE"), "unshare": _report("NAMESPACE"),
    "chroot": _report("NAMESPACE"), "pivot_root": _report("NAMESPACE"),
    "capsh": _report("NAMESPACE"), "docker": _check_container_cli,
    "podman": _check_container_cli, "nerdctl": _check_container_cli, "insmod": _check_modprobe,
    "rmmod": _check_modprobe, "modprobe": _check_modprobe, "kexec": _check_modprobe,
    "sysctl": _check_sysctl, "gdb": _check_debugger, "strace": _check_debugger,
    "ltrace": _check_debugger, "setenforce": _check_firewall, "ufw": _check_firewall,
    "nft": _check_firewall, "auditctl": _check_firewall, "iptables": _check_firewall,
    "ip6tables": _check_firewall, "iptables-legacy": _check_firewall,
    "ebtables": _check_firewall, "aa-teardown": _check_firewall, "aa-disable": _check_firewall,
    "aa-complain": _check_firewall, "apparmor_parser": _check_firewall,
    "systemctl": _check_service_manager, "service": _check_service_manager,
    "update-rc.d": _check_service_manager, "chkconfig": _check_service_manager,
    "rc-update": _check_service_manager, "launchctl": _check_service_manager,
    "crontab": _check_crontab, "at": _report("PERSISTENCE", "at", "low"),
    "kill": _check_kill, "pkill": _check_kill, "killall": _check_kill, "killall5": _check_kill,
    "shutdown": _check_power, "reboot": _check_power, "halt": _check_power,
    "poweroff": _check_power, "init": _check_power, "telinit": _check_power,
    "history": _check_history, "unset": _check_history, "set": _check_history,
    "export": _check_history, "declare": _check_history, "typeset": _check_history,
    "journalctl": _check_history, "useradd": _check_accounts, "usermod": _check_accounts,
    "adduser": _check_accounts, "chpasswd": _check_accounts, "passwd": _check_accounts,
    "visudo": _check_accounts, "groupadd": _check_accounts, "gpasswd": _check_accounts,
}
