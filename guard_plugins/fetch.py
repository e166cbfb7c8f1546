"""Opt-in fetching of image URLs, safe against server-side request forgery.

Fetching is off by default: `load_image("https://...")` raises `ImageError`. Enable it with an
`ImageFetcher` whose rules are strict:

- only ``https`` (and ``http`` if listed) URLs whose host is on the allowlist (exact names or
  ``*.example.com`` suffixes); never ``file:``, ``data:`` or other schemes;
- the host is resolved once and *every* resolved address must be public: loopback, private,
  link-local (cloud metadata ``169.254.169.254``), multicast, reserved and unspecified addresses
  are refused; the connection then goes to the checked address (no second DNS lookup, so DNS
  rebinding cannot swap it);
- redirects are followed by hand (at most `max_redirects`), each hop checked by the same rules;
- the body is streamed with a size cap and the whole fetch has a time cap.

>>> fetcher = ImageFetcher(allowed_hosts=["images.example.com"])    # doctest: +SKIP
>>> configure_image_fetching(fetcher)                                # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
import time
from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit

from guard_plugins.errors import ImageError, MissingDependencyError

__all__ = ["ImageFetcher", "configure_image_fetching", "current_image_fetcher"]

_fetcher: ImageFetcher | None = None


def configure_image_fetching(fetcher: ImageFetcher | None) -> None:
    """Set (or with None, clear) the process-wide fetcher `load_image` uses for URLs."""
    global _fetcher
    _fetcher = fetcher


def current_image_fetcher() -> ImageFetcher | None:
    return _fetcher


class ImageFetcher:
    """Fetches image URLs under an allowlist with SSRF protections (see module docstring)."""

    def __init__(
        self,
        allowed_hosts: Iterable[str],
        *,
        schemes: Iterable[str] = ("https",),
        max_bytes: int = 10 * 1024 * 1024,
        timeout: float = 10.0,
        max_redirects: int = 3,
        allow_private_addresses: bool = False,
    ) -> None:
        self.allowed_hosts = tuple(h.lower().strip() for h in allowed_hosts)
        if not self.allowed_hosts:
            raise ValueError("ImageFetcher needs at least one allowed host")
        self.schemes = tuple(s.lower() for s in schemes)
        bad = [s for s in self.schemes if s not in ("http", "https")]
        if bad:
            raise ValueError(f"unsupported schemes {bad}: only http and https can be fetched")
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_redirects = max_redirects
        # Only for tests against a loopback server; never enable in production.
        self.allow_private_addresses = allow_private_addresses

    def __repr__(self) -> str:
        return f"ImageFetcher(allowed_hosts={list(self.allowed_hosts)!r})"

    def fetch(self, url: str) -> bytes:
        """Download `url` under the rules; raises `ImageError` for anything refused."""
        try:
            import httpx
        except ImportError as exc:
            raise MissingDependencyError("httpx", "http") from exc
        deadline = time.monotonic() + self.timeout
        current = url
        with httpx.Client(follow_redirects=False, trust_env=False) as client:
            for _ in range(self.max_redirects + 1):
                scheme, host, port, address = self._check(current)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ImageError(f"image fetch timed out after {self.timeout}s")
                parts = urlsplit(current)
                target = parts._replace(netloc=_netloc(address, port)).geturl()
                extensions = {"sni_hostname": host} if scheme == "https" else {}
                try:
                    with client.stream(
                        "GET",
                        target,
                        headers={"Host": parts.netloc.rsplit("@", 1)[-1]},
                        timeout=left,
                        extensions=extensions,
                    ) as response:
                        if response.is_redirect:
                            location = response.headers.get("location", "")
                            current = urljoin(current, location)
                            continue
                        if response.status_code != 200:
                            raise ImageError(f"image fetch got HTTP {response.status_code}")
                        return self._read(response, deadline)
                except httpx.TimeoutException as exc:
                    raise ImageError(f"image fetch timed out after {self.timeout}s") from exc
                except httpx.HTTPError as exc:
                    raise ImageError(f"image fetch failed: {type(exc).__name__}") from exc
        raise ImageError(f"image fetch exceeded {self.max_redirects} redirects")

    def _read(self, response: object, deadline: float) -> bytes:
        declared = getattr(response, "headers", {}).get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise ImageError(f"image is {declared} bytes; the fetch limit is {self.max_bytes}")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():  # type: ignore[attr-defined]
            size += len(chunk)
            if size > self.max_bytes:
                raise ImageError(f"image exceeds the fetch limit of {self.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise ImageError(f"image fetch timed out after {self.timeout}s")
            chunks.append(chunk)
        return b"".join(chunks)

    def _check(self, url: str) -> tuple[str, str, int, str]:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise ImageError(
                f"image URL scheme {scheme or '(none)'!r} is not allowed; allowed: {self.schemes}"
            )
        host = (parts.hostname or "").lower()
        allowed = any(fnmatch.fnmatchcase(host, pattern) for pattern in self.allowed_hosts)
        if not host or not allowed:
            raise ImageError(f"image host {host or '(none)'!r} is not on the allowlist")
        port = parts.port or (443 if scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ImageError(f"cannot resolve image host {host!r}") from exc
        addresses = sorted({str(info[4][0]) for info in infos})
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if not self.allow_private_addresses and not ip.is_global:
                raise ImageError(
                    f"image host {host!r} resolves to a non-public address ({ip}); refused"
                )
        if not addresses:
            raise ImageError(f"image host {host!r} has no addresses")
        return scheme, host, port, addresses[0]


def _netloc(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
