"""The web client's files, served by the gateway in process (no port, a built tree of our own)."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway import static
from gateway.app import create_app
from gateway.health import Readiness


@pytest.fixture
def dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text('<script src="/assets/app-ABC.js"></script>')
    (tmp_path / "assets" / "app-ABC.js").write_text("console.log(1)")
    (tmp_path / "assets" / "styles-DEF.css").write_text("body{}")
    monkeypatch.setattr(static, "DEFAULT_DIST", tmp_path)
    return tmp_path


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Readiness(), "gw-test")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        yield client


async def test_the_page_is_served_at_root_and_at_the_share_link_path(
    dist: Path, http: httpx.AsyncClient
) -> None:
    for path in ("/", "/join?link=abc"):
        resp = await http.get(path)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/html")
        assert "/assets/app-ABC.js" in resp.text
        assert resp.headers["cache-control"] == "no-cache"
        csp = resp.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "http" not in csp, "no other origin may be allowed"
        assert resp.headers["referrer-policy"] == "no-referrer"


async def test_hashed_assets_are_cached_for_good(dist: Path, http: httpx.AsyncClient) -> None:
    js = await http.get("/assets/app-ABC.js")
    assert js.status_code == 200 and js.text == "console.log(1)"
    assert js.headers["content-type"].startswith("text/javascript")
    assert "immutable" in js.headers["cache-control"]
    css = await http.get("/assets/styles-DEF.css")
    assert css.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize(
    "path", ["/assets/nope.js", "/assets/..%2Findex.html", "/assets/.hidden", "/assets/a%00b"]
)
async def test_missing_or_sneaky_asset_names_get_the_typed_404(
    dist: Path, http: httpx.AsyncClient, path: str
) -> None:
    resp = await http.get(path)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"


async def test_the_api_keeps_its_own_404_and_the_page_stays_out_of_openapi(
    dist: Path, http: httpx.AsyncClient
) -> None:
    missing = await http.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert "/" not in paths and "/join" not in paths
    assert "/api/conversations" in paths


async def test_an_unbuilt_client_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: httpx.AsyncClient
) -> None:
    monkeypatch.setattr(static, "DEFAULT_DIST", tmp_path / "absent")
    resp = await http.get("/")
    assert resp.status_code == 503
    assert "make web" in resp.text
