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


async def test_the_face_decides_which_ways_it_can_do() -> None:
    from interapp.host import LinkWay, Messages, NoInput, Scripted, Terminal, has_display
    from interapp.host.prompts import face_ways

    assert face_ways(NoInput()) == (LinkWay.PASSWORD,)
    assert face_ways(Scripted({"password": "x"})) == (LinkWay.PASSWORD,)
    assert face_ways(Terminal()) == (LinkWay.BROWSER, LinkWay.DEVICE, LinkWay.PASSWORD)
    assert face_ways(Messages()) == (LinkWay.BROWSER, LinkWay.DEVICE, LinkWay.PASSWORD)
    assert has_display({"DISPLAY": ":0"}) and has_display({"WAYLAND_DISPLAY": "w"})
    import sys

    assert has_display({}) is (sys.platform in ("darwin", "win32"))
    assert Terminal(headless=True).headless and not Terminal(headless=False).headless


async def test_a_completion_is_delivered_once_and_tells_the_face_the_end() -> None:
    from interapp.host import LinkCompletion

    c = LinkCompletion()
    c.deliver("http://127.0.0.1:1/callback?code=a&state=b")
    c.deliver("http://127.0.0.1:1/callback?code=evil")  # the first answer stands
    assert await c.answer() == {"code": "a", "state": "b"}
    c.finish(True)
    c.finish(False)
    assert await c.wait() is True
    cancelled = LinkCompletion()
    cancelled.cancel()
    assert await cancelled.answer() is None
