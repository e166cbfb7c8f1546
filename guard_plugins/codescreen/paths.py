"""What a file path or URL means to the screen: shared by the Python and the shell scanners.

`classify_path(path, access)` returns the rule concepts (``"CREDENTIAL-ACCESS"``, …) an access of
that kind to that path triggers; each scanner prefixes its language (``PY-``/``SH-``). Paths may be
partly unknown: scanners put `UNKNOWN` where a value could not be resolved, and only the known
literal parts are matched. Home directories (``~``, ``$HOME``, ``/root``, ``/home/<user>``) are
matched alike.
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Callable
from typing import Final

__all__ = [
    "METADATA_ANCHORS",
    "METADATA_HOSTS",
    "UNKNOWN",
    "Access",
    "classify_path",
    "find_metadata_host",
    "home_relative",
    "is_root_like",
    "normalize",
]

UNKNOWN: Final = "\x00"


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    DELETE_TREE = "delete_tree"


_HOME_VAR: Final = re.compile(r"^(?:\$\{?HOME\}?|\$\{?USERPROFILE\}?|~[A-Za-z0-9_.-]*)(?=/|$)")
_HOME_DIR: Final = re.compile(r"^(?:/root|/home/[^/]+|/Users/[^/]+)(?=/|$)")
_PROC_PID: Final = re.compile(r"^/proc/(?:\d+|self|\x00|\*|thread-self)/(environ|mem)$")

SYSTEM_ROOTS: Final = frozenset(
    {
        "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
        "/opt", "/proc", "/root", "/sbin", "/srv", "/sys", "/usr", "/var", "/usr/bin",
        "/usr/sbin", "/usr/lib", "/usr/lib64", "/usr/local", "/usr/share", "/var/lib",
        "/snap", "/System", "/Library", "/Users", "/Applications",
    }
)

_CREDENTIAL_FILES: Final = (
    "/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers",
    "/etc/security/opasswd", "/etc/master.passwd",
)
_CREDENTIAL_PREFIXES: Final = (
    "/var/run/secrets/", "/run/secrets/", "/etc/ssh/ssh_host_", "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/pki/", "/etc/sudoers.d", "/var/lib/kubelet/pki",
)
_HOME_CREDENTIALS: Final = (
    ".ssh/id_", ".ssh/identity", ".aws/credentials", ".aws/config", ".kube/config",
    ".docker/config.json", ".netrc", ".git-credentials", ".pgpass", ".config/gcloud",
    ".azure/", ".gnupg/", ".password-store", ".vault-token", ".pypirc", ".npmrc",
    ".config/gh/hosts.yml", ".my.cnf", ".mozilla/firefox", ".config/google-chrome",
    ".local/share/keyrings",
)
_ESCAPE_MARKERS: Final = (
    "docker.sock", "containerd.sock", "crio.sock", "podman.sock", "/proc/1/root", "/proc/1/ns/",
    "/proc/1/cwd", "release_agent", "/proc/sys/kernel/core_pattern",
)
_ESCAPE_WRITE_MARKERS: Final = ("notify_on_release",)
_ESCAPE: Final = re.compile("|".join(map(re.escape, _ESCAPE_MARKERS)))
_ESCAPE_WRITE: Final = re.compile("|".join(map(re.escape, _ESCAPE_WRITE_MARKERS)))
_KERNEL_ANY: Final = ("/dev/mem", "/dev/kmem", "/dev/port", "/proc/kcore")
_SECURITY_TUNABLES: Final = (
    "/proc/sys/kernel/randomize_va_space", "/sys/fs/selinux/enforce",
    "/proc/sys/kernel/yama/ptrace_scope", "/proc/sys/kernel/kptr_restrict",
    "/proc/sys/kernel/dmesg_restrict",
)
_BLOCK_DEVICE: Final = re.compile(
    r"^/dev/(?:[shv]d[a-z]|xvd[a-z]|nvme\d|mmcblk\d|disk\d|disk/|dm-\d|mapper/|md\d|rdisk\d)"
)
_SYSTEM_FILES: Final = (
    "/etc/passwd", "/etc/shadow", "/etc/gshadow", "/etc/group", "/etc/sudoers",
    "/etc/ld.so.preload", "/etc/ld.so.conf", "/etc/pam.d", "/etc/security/",
    "/etc/ssh/sshd_config", "/etc/hosts", "/etc/nsswitch.conf",
    "/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/lib/", "/lib64/", "/usr/lib/", "/boot/",
)
_PERSISTENCE: Final = (
    "/etc/cron", "/var/spool/cron", "/etc/anacrontab", "/etc/systemd/", "/lib/systemd/system",
    "/usr/lib/systemd/system", "/etc/init.d/", "/etc/rc.local", "/etc/rc", "/etc/profile",
    "/etc/bash.bashrc", "/etc/zsh/", "/etc/environment", "/etc/update-motd.d", "/etc/inittab",
    "/etc/udev/rules.d", "/etc/xdg/autostart", "/Library/LaunchDaemons", "/Library/LaunchAgents",
    "/etc/ssh/sshrc", "/etc/apt/apt.conf.d",
)
_HOME_PERSISTENCE: Final = (
    ".ssh/authorized_keys", ".ssh/rc", ".config/systemd/user", ".config/autostart",
    "Library/LaunchAgents",
)
_PY_PERSISTENCE: Final = re.compile(r"(?:site|dist)-packages/(?:[^/]*\.pth|sitecustomize\.py)$|"
                                    r"(?:^|/)usercustomize\.py$")
_HOME_RC: Final = (
    ".bashrc", ".bash_profile", ".bash_login", ".profile", ".zshrc", ".zprofile", ".zshenv",
    ".zlogin", ".bash_logout", ".config/fish/config.fish", ".cshrc", ".tcshrc", ".kshrc",
)
_HISTORY: Final = (".bash_history", ".zsh_history", ".python_history", ".sh_history", ".history",
                   ".mysql_history", ".psql_history", ".lesshst", ".viminfo")
_LOGS: Final = ("/var/log", "/var/run/utmp", "/run/utmp", "/var/adm", "/var/audit")

METADATA_HOSTS: Final = (
    r"169\.254\.169\.254|metadata\.google\.internal|fd00:ec2::254|169\.254\.170\.2|"
    r"100\.100\.100\.200|metadata\.azure\.com|2852039166|0xa9fea9fe|0251\.0376\.0251\.0376|"
    r"a9fe:a9fe"
)
_METADATA: Final = re.compile(METADATA_HOSTS, re.IGNORECASE)
# Every host above contains one of these (lowercase; no letter in them has a non-ASCII case
# variant, so the lowered text of any match contains one too): a cheap test before the search.
METADATA_ANCHORS: Final = ("169.254", "metadata.", "fd00:", "100.100.", "2852039166", "a9fe",
                           "0251.")


def normalize(raw: str) -> str:
    """Canonical form: quotes and file:// stripped, home written ``~``, ``//`` and ``..`` folded."""
    path = raw.strip().strip("'\"")
    if path.startswith("file://"):
        path = path[len("file://"):]
    path = _HOME_VAR.sub("~", path, count=1)
    if not path.startswith(("/", "~")):
        return path
    trailing_glob = path.endswith("/*")
    folded = posixpath.normpath(path)
    if folded.startswith("//"):
        folded = "/" + folded.lstrip("/")
    if folded.startswith("~/..") or folded == "~/.":
        folded = "~"
    if trailing_glob and not folded.endswith("*"):
        folded = folded.rstrip("/") + "/*"
    return folded


def home_relative(path: str) -> str | None:
    """The part of a normalized path below a home directory, or None if it is not under one."""
    if path == "~" or path.startswith("~/"):
        return path[2:]
    match = _HOME_DIR.match(path)
    if match:
        return path[match.end() + 1:]
    return None


def is_root_like(path: str) -> bool:
    """True for the root, a home directory or a system root, with or without a trailing ``/*``."""
    base = path[:-2] if path.endswith("/*") else path
    if base in ("", "/", "~", "/*") or base in SYSTEM_ROOTS:
        return True
    return bool(_HOME_DIR.fullmatch(base))


def find_metadata_host(text: str) -> str | None:
    """The cloud-metadata host mentioned in `text`, if any."""
    if text.isalpha():  # every host has digits, dots or colons
        return None
    lowered = text.lower()
    if not any(anchor in lowered for anchor in METADATA_ANCHORS):
        return None
    match = _METADATA.search(text)
    return match.group(0) if match else None


def classify_path(raw: str, access: Access) -> list[tuple[str, str]]:
    """Rule concepts triggered by `access` to `raw`, each with the short path it matched."""
    path = normalize(raw)
    if not path:
        return []
    writes = access is not Access.READ
    if path[0] not in "/~":
        return _classify_relative(path, access, writes)
    hits: list[tuple[str, str]] = []
    home = home_relative(path)
    ident = path.replace(UNKNOWN, "*")

    def hit(concept: str) -> None:
        if all(c != concept for c, _ in hits):
            hits.append((concept, ident))

    if (path.startswith(_CREDENTIAL_FILES) and not writes) or path.startswith(_CREDENTIAL_PREFIXES):
        hit("CREDENTIAL-ACCESS")
    if home is not None and home.startswith(_HOME_CREDENTIALS) and not home.endswith(".pub"):
        hit("CREDENTIAL-ACCESS")
    if home == ".ssh" or home == ".aws":
        hit("CREDENTIAL-ACCESS")
    pid_file = _PROC_PID.match(path)
    if pid_file and pid_file.group(1) == "environ":
        hit("CREDENTIAL-ACCESS")
    if pid_file and pid_file.group(1) == "mem" and writes and "/proc/self/" not in path:
        hit("PTRACE")
    if _ESCAPE.search(path) or (writes and _ESCAPE_WRITE.search(path)):
        hit("CONTAINER-ESCAPE")
    if path.startswith(_KERNEL_ANY) or (writes and path.startswith("/proc/sysrq-trigger")):
        hit("KERNEL")
    if find_metadata_host(path):
        hit("CLOUD-METADATA")
    if not writes:
        return hits
    if path.startswith(_SECURITY_TUNABLES):
        hit("DISABLE-SECURITY")
    elif path.startswith(("/proc/sys/", "/sys/")) and not hits:
        hit("SYSTEM-TUNABLE")
    if _BLOCK_DEVICE.match(path):
        hit("DISK-WIPE")
    if access in (Access.DELETE, Access.DELETE_TREE):
        _classify_delete(path, home, access, hit)
        return hits
    if path.startswith(_SYSTEM_FILES):
        hit("SYSTEM-FILE-WRITE")
    if path.startswith(_PERSISTENCE) or _PY_PERSISTENCE.search(path):
        hit("PERSISTENCE")
    if home is not None:
        if home.startswith(_HOME_PERSISTENCE):
            hit("PERSISTENCE")
        elif home in _HOME_RC:
            hit("SHELL-RC")
    if _is_forensic(path, home):
        hit("ANTI-FORENSICS")
    return hits


def _classify_relative(path: str, access: Access, writes: bool) -> list[tuple[str, str]]:
    """`classify_path` for a path not under ``/`` or ``~`` (a relative path, a URL).

    Every other rule matches a prefix starting with ``/`` or a home directory, so only the
    markers found anywhere in a path, metadata hosts and Python start-up files can apply.
    """
    concepts: list[str] = []
    if _ESCAPE.search(path) or (writes and _ESCAPE_WRITE.search(path)):
        concepts.append("CONTAINER-ESCAPE")
    if find_metadata_host(path):
        concepts.append("CLOUD-METADATA")
    if writes and access is Access.WRITE and _PY_PERSISTENCE.search(path):
        concepts.append("PERSISTENCE")
    if not concepts:
        return []
    ident = path.replace(UNKNOWN, "*")
    return [(concept, ident) for concept in concepts]


def _classify_delete(path: str, home: str | None, access: Access,
                     hit: Callable[[str], None]) -> None:
    tree = access is Access.DELETE_TREE and is_root_like(path)
    if tree or (path.startswith(_SYSTEM_FILES) and not path.startswith("/usr/lib/python")):
        hit("DESTRUCTIVE-DELETE")
    if _is_forensic(path, home):
        hit("ANTI-FORENSICS")


def _is_forensic(path: str, home: str | None) -> bool:
    if path.startswith(_LOGS):
        return True
    return home is not None and home in _HISTORY
