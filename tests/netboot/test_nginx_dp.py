"""The DP's nginx server block, served for real in a namespace and asked what a PE (and a cache
between it and the DP) would see: byte ranges, ETag and If-Match, cache headers by path, and no
directory listings."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netboot.conftest import failed
from tests.netboot.pxesite import PXE_IP, PxeSite

pytestmark = pytest.mark.root
BLOB = bytes(range(256)) * 4096  # 1 MiB with a recognisable pattern


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PxeSite]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if shutil.which("nginx") is None:
        pytest.fail("nginx is missing: run scripts/install-deps")
    dp = tmp_path_factory.mktemp("dp")
    (dp / "pe").mkdir()
    (dp / "pe" / "vmlinuz").write_bytes(BLOB)
    (dp / "tasks").mkdir()
    (dp / "tasks" / "default.json").write_text('{"image": {"url": "images/ws.img.zst"}}\n')
    (dp / "images").mkdir()
    (dp / "images" / "ws.img.zst").write_bytes(BLOB)
    (dp / "images" / "ws.manifest.json").write_text("{}\n")
    (dp / "boot.ipxe").write_text("#!ipxe\n")
    with PxeSite(tmp_path_factory.mktemp("site"), dp_root=dp) as pxe_site:
        yield pxe_site


@pytest.fixture
def get(site: PxeSite, request: pytest.FixtureRequest) -> Iterator:
    """get(path, **headers) -> (response, body), asked from a machine on the LAN."""
    with site.client() as ns:
        ns.run(["ip", "addr", "add", "10.77.0.50/24", "dev", "eth0"])

        def get(path: str, **headers: str) -> tuple[http.client.HTTPResponse, bytes]:
            conn = http.client.HTTPConnection(PXE_IP, 80, timeout=10)
            conn.sock = ns.call(socket.create_connection, (PXE_IP, 80), 10)
            with conn.sock:
                conn.request("GET", path, headers={k.replace("_", "-"): v for k, v in headers.items()})
                response = conn.getresponse()
                return response, response.read()

        yield get
    if failed(request):
        print(site.logs())


def test_files_are_served_whole(get) -> None:
    response, body = get("/pe/vmlinuz")
    assert response.status == 200
    assert body == BLOB
    assert response.getheader("Accept-Ranges") == "bytes"


def test_ranges_and_if_match_for_resumed_downloads(get) -> None:
    response, body = get("/images/ws.img.zst", Range="bytes=1000-1999")
    assert response.status == 206
    assert response.getheader("Content-Range") == f"bytes 1000-1999/{len(BLOB)}"
    assert body == BLOB[1000:2000]
    etag = response.getheader("ETag")
    assert etag and not etag.startswith("W/"), "a strong ETag, so If-Match can be used"

    response, body = get("/images/ws.img.zst", Range="bytes=-10", If_Match=etag)
    assert (response.status, body) == (206, BLOB[-10:])
    response, _ = get("/images/ws.img.zst", Range="bytes=0-9", If_Match='"another-version"')
    assert response.status == 412, "a changed file must not be resumed into"


@pytest.mark.parametrize(("path", "cache_control"), [
    ("/boot.ipxe", "no-store"),
    ("/tasks/default.json", "no-store"),
    ("/pe/vmlinuz", "no-cache"),
    ("/images/ws.manifest.json", "no-cache"),
    ("/images/ws.img.zst", "public, max-age=31536000, immutable"),
])
def test_cache_headers_by_path(get, path: str, cache_control: str) -> None:
    response, _ = get(path)
    assert response.status == 200
    assert response.getheader("Cache-Control") == cache_control


@pytest.mark.parametrize("path", ["/", "/tasks/", "/images/"])
def test_no_directory_listings(get, path: str) -> None:
    response, body = get(path)
    assert response.status in (403, 404)
    assert b"default.json" not in body and b"ws.img.zst" not in body


def test_the_server_block_passes_nginx_t(site: PxeSite) -> None:
    conf = site.public / "nginx.conf"
    result = site.pxe_ns.run(["nginx", "-t", "-c", str(conf)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_missing_files_are_404(get) -> None:
    response, _ = get("/pe/nothing-here")
    assert response.status == 404


def test_paths_outside_the_dp_are_refused(get, site: PxeSite) -> None:
    response, body = get("/../nginx.conf")
    assert response.status in (400, 403, 404)
    assert b"worker_processes" not in body
    assert Path(site.public / "nginx.conf").exists()
