"""Opt-in image URL fetching: allowlist, SSRF rules, redirects, size and time caps — against a
real HTTP server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from guard_plugins import ImageError, ImagePart
from guard_plugins.fetch import ImageFetcher, configure_image_fetching
from tests._images import png_bytes

pytest.importorskip("httpx")

PNG = png_bytes(16, 16)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/img.png":
            self._send(200, PNG, "image/png")
        elif self.path == "/big.png":
            self._send(200, b"\x89PNG" + b"0" * 5000, "image/png")
        elif self.path == "/slow.png":
            time.sleep(1.0)
            with contextlib.suppress(BrokenPipeError):  # the client gives up first, as intended
                self._send(200, PNG, "image/png")
        elif self.path.startswith("/redirect"):
            target = self.path.split("to=", 1)[1]
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        else:
            self._send(404, b"nope", "text/plain")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def loopback_fetcher(**kwargs: object) -> ImageFetcher:
    return ImageFetcher(["127.0.0.1"], schemes=("http",), allow_private_addresses=True, **kwargs)  # type: ignore[arg-type]


def test_fetching_is_off_by_default(server: str) -> None:
    configure_image_fetching(None)
    with pytest.raises(ImageError, match="not fetched by default"):
        ImagePart.load(f"{server}/img.png")


def test_enabled_fetcher_loads_images(server: str) -> None:
    configure_image_fetching(loopback_fetcher())
    try:
        part = ImagePart.load(f"{server}/img.png")
    finally:
        configure_image_fetching(None)
    assert (part.width, part.height) == (16, 16)


def test_loopback_is_refused_without_the_test_switch(server: str) -> None:
    fetcher = ImageFetcher(["127.0.0.1", "localhost"], schemes=("http",))
    with pytest.raises(ImageError, match="non-public address"):
        fetcher.fetch(f"{server}/img.png")
    with pytest.raises(ImageError, match="non-public"):
        fetcher.fetch("http://localhost/img.png")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "scheme"),
        ("ftp://127.0.0.1/x.png", "scheme"),
        ("http://evil.example/x.png", "not on the allowlist"),
        ("http://169.254.169.254/latest/meta-data", "not on the allowlist"),
    ],
)
def test_scheme_and_host_rules(url: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        loopback_fetcher().fetch(url)


def test_metadata_address_is_refused_even_when_allowlisted() -> None:
    fetcher = ImageFetcher(["169.254.169.254"], schemes=("http",))
    with pytest.raises(ImageError, match="non-public"):
        fetcher.fetch("http://169.254.169.254/latest/meta-data")


def test_redirects_are_checked_hop_by_hop(server: str) -> None:
    ok = loopback_fetcher().fetch(f"{server}/redirect?to=/img.png")
    assert ok == PNG
    with pytest.raises(ImageError, match="allowlist"):
        loopback_fetcher().fetch(f"{server}/redirect?to=http://10.0.0.1/x.png")
    strict = ImageFetcher(["127.0.0.1", "10.0.0.1"], schemes=("http",))
    with pytest.raises(ImageError, match="non-public"):
        strict.fetch("http://10.0.0.1/x.png")
    with pytest.raises(ImageError, match="redirects"):
        loopback_fetcher(max_redirects=2).fetch(f"{server}/loop")


def test_size_and_time_caps(server: str) -> None:
    with pytest.raises(ImageError, match="limit"):
        loopback_fetcher(max_bytes=1000).fetch(f"{server}/big.png")
    with pytest.raises(ImageError, match="timed out"):
        loopback_fetcher(timeout=0.2).fetch(f"{server}/slow.png")
    with pytest.raises(ImageError, match="HTTP 404"):
        loopback_fetcher().fetch(f"{server}/missing.png")
