"""Helpers of the authorization-server tests: clients with redirect URIs and grants, PKCE, and a
form-filling user agent (httpx + the standard library's HTML parser) that signs in and answers
the consent page exactly as a browser posts those forms. The pages themselves are also driven
in a real Chromium (``test_oauth_pages_browser.py``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from server_kit import PASSWORD, Client, db_run, uname

from interapp.server import accounts

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
CALLBACK = "https://rp.example/callback"


def make_oauth_client(db_url: str, *, public: bool = False,
                      redirect_uris: tuple[str, ...] = (CALLBACK,),
                      grants: tuple[str, ...] | None = None, id_token_alg: str | None = None,
                      name: str | None = None) -> Client:
    """A client with redirect URIs (and, when given, exactly these grants)."""
    client_id, secret = db_run(db_url, lambda c: accounts.create_client(
        c, name or uname("rp"), public=public, redirect_uris=redirect_uris,
        grant_types=grants, id_token_alg=id_token_alg))
    return Client(client_id, secret.reveal() if secret else None)


def pkce() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge) pair."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.decode().rstrip("=")


def auth_params(client: Client, challenge: str, **extra: str) -> dict[str, str]:
    """A well-formed authorization request for ``client`` (override anything with ``extra``)."""
    return {"response_type": "code", "client_id": client.client_id, "redirect_uri": CALLBACK,
            "state": secrets.token_urlsafe(12), "code_challenge": challenge,
            "code_challenge_method": "S256", "scope": "openid profile interapp", **extra}


def query_of(location: str) -> dict[str, str]:
    """The query parameters of a redirect (each must appear once)."""
    parsed = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in parsed.values()), parsed
    return {k: v[0] for k, v in parsed.items()}


@dataclass
class Form:
    """One ``<form>`` of a page: where it posts and the fields a browser would send."""

    id: str
    action: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, str] = field(default_factory=dict)  # id -> "name=value"


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("id", ""), a.get("action", "")))
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1].fields[a["name"]] = a.get("value", "")
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1].buttons[a.get("id", "")] = f"{a['name']}={a.get('value', '')}"


def forms(html: str) -> dict[str, Form]:
    """The forms of a page by id."""
    parser = _Forms()
    parser.feed(html)
    return {f.id: f for f in parser.forms}


class Agent:
    """A user agent with a cookie jar that fills in the server's pages like a browser."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=15, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def submit(self, page: httpx.Response, form_id: str, *, button: str | None = None,
               **values: str) -> httpx.Response:
        """Post form ``form_id`` of ``page`` with ``values`` typed in (and ``button`` pressed)."""
        found = forms(page.text)
        assert form_id in found, f"no form {form_id!r} on the page: {page.text[:400]}"
        form = found[form_id]
        data = {**form.fields, **values}
        if button is not None:
            name, _, value = form.buttons[button].partition("=")
            data[name] = value
        return self.http.post(urljoin(str(page.url), form.action), data=data,
                              headers={"Origin": self.base_url})

    def authorize(self, params: dict[str, Any], username: str | None,
                  password: str = PASSWORD, decision: str = "consent-allow") -> httpx.Response:
        """Open the authorization URL, sign in (unless already), decide; the last answer."""
        page = self.http.get("/oauth/authorize", params=params)
        if page.status_code != 200:
            return page
        if "signin-form" in forms(page.text):
            assert username is not None, "the sign-in page came up"
            page = self.submit(page, "signin-form", username=username, password=password)
            if page.status_code != 200:
                return page
        return self.submit(page, "consent-form", button=decision)


def approve(base_url: str, params: dict[str, Any], username: str,
            decision: str = "consent-allow") -> dict[str, str]:
    """Sign in as ``username`` and decide in a fresh agent; the redirect's query."""
    agent = Agent(base_url)
    try:
        resp = agent.authorize(params, username, decision=decision)
    finally:
        agent.close()
    assert resp.status_code == 303, resp.text
    location = resp.headers["location"]
    assert location.startswith(params.get("redirect_uri", CALLBACK)), location
    return query_of(location)
