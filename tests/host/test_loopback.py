"""The one-shot loopback listener of the browser link way (RFC 8252 §7.3), on real sockets."""

from __future__ import annotations

import httpx
import pytest

from interapp.host._loopback import Loopback

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_it_takes_one_answer_on_its_path_and_then_stops_listening() -> None:
    got: list[str] = []
    async with Loopback(got.append) as listener:
        assert listener.redirect_uri == f"http://127.0.0.1:{listener.port}/callback"
        async with httpx.AsyncClient(timeout=5) as http:
            other = await http.get(f"http://127.0.0.1:{listener.port}/favicon.ico")
            assert other.status_code == 404 and got == []
            ok = await http.get(f"{listener.redirect_uri}?code=c1&state=s1")
            assert ok.status_code == 200 and "Signed in" in ok.text
            assert ok.headers["cache-control"] == "no-store"
            assert got == [f"{listener.redirect_uri}?code=c1&state=s1"]
            with pytest.raises(httpx.HTTPError):  # one-shot: nobody listens any more
                await http.get(f"{listener.redirect_uri}?code=c2&state=s2")
    assert len(got) == 1


async def test_an_error_answer_says_not_signed_in() -> None:
    got: list[str] = []
    async with Loopback(got.append) as listener, httpx.AsyncClient(timeout=5) as http:
        page = await http.get(f"{listener.redirect_uri}?error=access_denied&state=s")
        assert "Not signed in" in page.text and got
