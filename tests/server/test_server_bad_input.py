"""Malformed requests get a 4xx with a JSON body naming the problem: never a 5xx, never a stack
trace. Explicit cases first, then generated junk (hypothesis) against every operation listed in
``/openapi.json``. Runs once on SQLite and once on PostgreSQL (which refuses NUL characters in
text, a classic source of 500s).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_kit import (
    PASSWORD,
    Client,
    RunningServer,
    Session,
    assert_api_error,
    assert_oauth_error,
    login,
    make_buddies,
    make_client,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

LIMIT = 64 * 1024


def _segment(text: str) -> str:
    raw = text.encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _jws(payload: str, header: str = '{"alg":"ES256","typ":"JWT"}') -> str:
    return f"{_segment(header)}.{_segment(payload)}.AA"


_DEEP = "[" * 5000 + "]" * 5000
#: JWT-bearer assertions whose payload broke the parser (issue 16, item 9): a lone surrogate
#: as a JSON escape and as raw text, 5,000 nested arrays (RecursionError), NaN/Infinity.
ASSERTIONS = [
    _jws('{"iss":"\\ud800"}'), _jws('{"iss":"' + chr(0xD800) + '"}'), _jws(_DEEP),
    _jws('{"iss":"http://127.0.0.1:1","x":' + _DEEP + "}"), _jws('{"iss":"x"}', header=_DEEP),
    _jws('{"iss":NaN,"exp":Infinity}'), _jws('{"iss":"x","exp":1e400}'),
]


@pytest.fixture(scope="module")
def pair(server: RunningServer, client: Client) -> Iterator[tuple[Session, Session]]:
    with server.client() as http:
        a, b = login(server, http, client), login(server, http, client)
        make_buddies(server.db_url, a.user, b.user)
        yield a, b


def test_body_over_the_limit_is_413(server: RunningServer, http: httpx.Client,
                                    pair: tuple[Session, Session], client: Client) -> None:
    a, b = pair
    big = {"to": b.username, "body": "x" * (LIMIT + 10)}
    resp = http.post("/v1/messages", headers=a.headers(), json=big)
    assert_api_error(resp, 413, "payload_too_large")
    resp = http.post("/oauth/token", auth=client.basic(),
                     data={"grant_type": "password", "username": "a", "password": "x" * LIMIT})
    assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"


def test_streamed_body_over_the_limit_is_413(http: httpx.Client,
                                             pair: tuple[Session, Session],
                                             client: Client) -> None:
    """No Content-Length (chunked): the limit still holds while the body streams in."""
    a, b = pair

    def chunks() -> Iterator[bytes]:
        yield b'{"to": "' + b.username.encode() + b'", "body": "'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}'

    resp = http.post("/v1/messages", headers={**a.headers(), "Content-Type": "application/json"},
                     content=chunks())
    assert_api_error(resp, 413, "payload_too_large")
    resp = http.post("/oauth/token", auth=client.basic(), content=chunks(),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"
    # A small chunked body is fine.
    ok = http.post("/v1/messages", headers={**a.headers(), "Content-Type": "application/json"},
                   content=iter([json.dumps({"to": b.username, "body": "chunked"}).encode()]))
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize("raw", [b"{", b'{"to": "x", "body": }', b"\xff\xfe", b"[1, 2",
                                 b'{"to": "x"} trailing'])
def test_malformed_json_names_the_problem(http: httpx.Client, pair: tuple[Session, Session],
                                          raw: bytes) -> None:
    a, _ = pair
    resp = http.post("/v1/messages", content=raw,
                     headers={**a.headers(), "Content-Type": "application/json"})
    body = assert_api_error(resp, 400, "bad_request")
    assert "json" in body["message"].lower()


def test_wrong_json_types_name_the_field(http: httpx.Client,
                                         pair: tuple[Session, Session]) -> None:
    a, _ = pair
    resp = http.post("/v1/messages", headers=a.headers(), json={"to": 5, "body": ["x"]})
    message = assert_api_error(resp, 400, "bad_request")["message"]
    assert "to" in message and "body" in message
    resp = http.post("/v1/messages", headers=a.headers(), json=[1, 2])
    assert_api_error(resp, 400, "bad_request")
    resp = http.post("/v1/messages", headers={**a.headers(), "Content-Type": "text/plain"},
                     content=b"hello")
    assert_api_error(resp, 400, "bad_request")


def test_unknown_route_and_method(http: httpx.Client) -> None:
    assert_api_error(http.get("/nope"), 404, "not_found")
    assert_api_error(http.get("/v1/nothing/here"), 404, "not_found")
    assert_api_error(http.post("/.well-known/jwks.json"), 405, "method_not_allowed")
    resp = http.get("/oauth/token")
    assert_api_error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["allow"]


def test_nul_characters_are_refused_not_crashing(http: httpx.Client,
                                                 pair: tuple[Session, Session],
                                                 client: Client) -> None:
    a, b = pair
    h = a.headers()
    nul = quote("\x00")
    assert_api_error(http.get(f"/v1/conversations/x{nul}y/messages", headers=h),
                     400, "bad_request")
    assert_api_error(http.post("/v1/contacts", headers=h, json={"username": "a\x00b"}),
                     400, "bad_request")
    assert_api_error(http.post("/v1/messages", headers=h,
                               json={"to": b.username, "body": "nul\x00"}), 400, "bad_request")
    assert_api_error(http.put("/v1/presence", headers=h,
                              json={"state": "online", "status_text": "\x00"}),
                     400, "bad_request")
    assert_api_error(http.get("/v1/contacts", headers=h, params={"cursor": "AA=="}),
                     400, "bad_request")  # decodes to a NUL byte
    assert_api_error(http.post(f"/v1/contacts/{nul}/accept", headers=h),
                     400, "bad_request")
    assert_oauth_error(http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "password", "username": "a\x00", "password": "b"}), 400, "invalid_request")
    assert_oauth_error(http.post("/oauth/token", auth=httpx.BasicAuth("ia\x00x", "s"), data={
        "grant_type": "password", "username": "a", "password": "b"}), 401, "invalid_client")
    # Nothing was broken by the attempts.
    assert http.get("/v1/me", headers=h).status_code == 200


@pytest.mark.parametrize("index", range(len(ASSERTIONS)))
def test_malformed_assertions_are_4xx(server: RunningServer, http: httpx.Client, client: Client,
                                      index: int) -> None:
    """With a confidential client, and with only a public client's id (as reported)."""
    public = make_client(server.db_url, public=True)
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": ASSERTIONS[index]}
    for resp in (http.post("/oauth/token", auth=client.basic(), data=form),
                 http.post("/oauth/token", data={**form, "client_id": public.client_id})):
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"] in ("invalid_grant", "invalid_request")


def test_errors_never_leak_a_stack_trace(http: httpx.Client, client: Client) -> None:
    resp = http.post("/oauth/token", auth=client.basic(), content=b"\xff\xfe\x00",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_oauth_error(resp, 400, "invalid_request")
    assert "Traceback" not in resp.text


# --- generated junk against every documented operation ----------------------------------------

GROUPS = {
    "discovery": re.compile(r"^/(\.well-known/|healthz|readyz|metrics)"),
    "token": re.compile(r"^/oauth/token$"),
    "revoke-introspect": re.compile(r"^/oauth/(revoke|introspect)$"),
    "device-userinfo": re.compile(r"^/oauth/(device_authorization|userinfo)$"),
    "pages": re.compile(r"^/(oauth/authorize|device|oauth/pages\.css)$"),  # HTML, redirects
    "v1-read": re.compile(r"^/v1/(me|contacts|contacts/requests|conversations/.*|events|"
                          r"invites)$"),
    "v1-write": re.compile(r"^/v1/(contacts|contacts/.*|presence|messages|events/ticket|"
                           r"invites|invites/.*)$"),
}
GRANTS = ["password", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer",
          "urn:ietf:params:oauth:grant-type:token-exchange", "client_credentials", "",
          "authorization_code", "urn:ietf:params:oauth:grant-type:device_code"]
FIELDS = ["grant_type", "username", "password", "refresh_token", "assertion", "subject_token",
          "subject_token_type", "requested_token_type", "audience", "token", "token_type_hint",
          "client_id", "client_secret", "to", "body", "client_msg_id", "state", "status_text",
          "code", "code_verifier", "redirect_uri", "device_code", "scope", "response_type",
          "code_challenge", "code_challenge_method", "nonce", "prompt", "csrf", "step",
          "request", "user_code", "decision", "activity", "join_url", "message",
          "client_invite_id", "expires_in", "name", "details", "party", "started_at", "join"]
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", None]

NASTY = ["\x00", "a\x00b", "%00", "'; DROP TABLE users; --", "../..", "\u202e",
         "\U0001f600" * 20, "9" * 40, "-1", " ", "null", "x" * 300,
         "²", "1²", "١٢"]  # digits to str.isdigit(), not (all) to int()
# JSON nested deeper than json.loads can recurse (RecursionError), as raw bodies and frames
DEEP = ["[" * 5000 + "]" * 5000, '{"to": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"type": "send", "to": "x", "body": ' + '{"a": ' * 3000 + "1" + "}" * 3001]
text = st.text(max_size=40) | st.sampled_from(NASTY)
# Lone surrogates cannot travel in a URL or a form, only as JSON escapes ("\ud800").
json_text = text | st.sampled_from(["\ud800", "x\udfff"])
header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF,
                                    exclude_characters="\x7f"), min_size=1, max_size=60).map(
    lambda s: s.encode("latin-1"))  # header values travel as bytes
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(FIELDS) | text, inner, max_size=5),
    max_leaves=12)


def json_properties(doc: dict[str, Any], op: dict[str, Any]) -> list[str]:
    """The property names of an operation's JSON request body, from its schema."""
    schema = (op.get("requestBody", {}).get("content", {}).get("application/json", {})
              .get("schema", {}))
    ref = schema.get("$ref", "")
    if ref:
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return sorted(schema.get("properties", {}))


def operations(doc: dict[str, Any], method_path: re.Pattern[str],
               writes: bool | None) -> list[tuple[str, str, dict[str, Any]]]:
    ops = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if not method_path.match(path):
                continue
            if writes is not None and (method != "get") != writes:
                continue
            ops.append((method.upper(), path, op))
    return ops


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_generated_junk_never_5xx(server: RunningServer, http: httpx.Client, client: Client,
                                  pair: tuple[Session, Session], group: str) -> None:
    doc = http.get("/openapi.json").json()
    writes = {"v1-read": False, "v1-write": True}.get(group)
    ops = operations(doc, GROUPS[group], writes)
    assert ops, f"no operation in group {group}"
    a, b = pair
    basic = "Basic " + base64.b64encode(f"{client.client_id}:{client.secret}".encode()).decode()
    auths: list[str | bytes | None] = [None, f"Bearer {a.access}", "Bearer ia_at_junk",
                                       "Basic Zm9vOmJhcg==", basic, "Bearer", b"Basic \xe9t\xe9"]
    values = ["\x00", "busy", *GRANTS, a.username, b.username, b.user.id, PASSWORD,
              client.client_id, "ia_rt_junk", "urn:ietf:params:oauth:token-type:access_token",
              server.url, "online", "0", "-1", "99999999999999999999", *ASSERTIONS]
    seen: list[int] = []

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        method, path, op = data.draw(st.sampled_from(ops))
        url = path
        for name in re.findall(r"{(\w+)}", path):
            value = data.draw(st.sampled_from([b.username, b.user.id]) | text, label=name)
            url = url.replace("{" + name + "}", quote(value, safe="") or "x")
        declared = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
        params = data.draw(st.dictionaries(st.sampled_from([*declared, "x", "limit"]) | text,
                                           text | st.integers().map(str), max_size=4),
                           label="query")
        headers: dict[str, Any] = {}
        # Most examples are "almost right" (a valid credential for the endpoint and a content
        # type matching the body) so that the junk reaches past the first checks.
        coherent = data.draw(st.sampled_from([True, True, False]), label="coherent")
        if coherent:
            auth: str | bytes | None = basic if path.startswith("/oauth") else f"Bearer {a.access}"
        else:
            auth = data.draw(st.sampled_from(auths) | header_text.map(lambda s: b"Bearer " + s),
                             label="authorization")
        if auth is not None:
            headers["Authorization"] = auth
        for name in data.draw(st.lists(st.sampled_from(
                ["Accept", "Origin", "Cookie", "X-Forwarded-For", "Accept-Language"]),
                max_size=2, unique=True), label="extra headers"):
            headers[name] = data.draw(header_text, label=name)
        # Hypothesis favours the first choices: lead with the body each endpoint expects.
        kinds = (["form", "form", "json", "bytes", "none", "deep"] if path.startswith("/oauth")
                 else ["json", "json", "form", "bytes", "none", "deep"])
        kind = data.draw(st.sampled_from(kinds), label="body")
        content: bytes | None = None
        if kind == "bytes":
            content = data.draw(st.binary(max_size=300))
        elif kind == "deep":
            content = data.draw(st.sampled_from(DEEP)).encode()
        elif kind == "json":
            props = json_properties(doc, op)
            if coherent and props:  # the documented fields, with nasty values
                body = {name: data.draw(st.sampled_from(values) | json_text | json_values,
                                        label=name)
                        for name in props
                        if data.draw(st.sampled_from([True, True, True, False]), label=name)}
            else:
                body = data.draw(json_values)
            content = json.dumps(body).encode()
        elif kind == "form":
            fields = data.draw(st.dictionaries(st.sampled_from(FIELDS) | text,
                                               st.sampled_from(values) | text, max_size=6))
            if coherent:  # the parameter each OAuth endpoint dispatches on
                key = "grant_type" if path == "/oauth/token" else "token"
                fields[key] = data.draw(st.sampled_from(GRANTS if key == "grant_type"
                                                        else values), label=key)
            content = str(httpx.QueryParams(fields)).encode()
        if coherent and kind in ("json", "form", "deep"):
            ctype: str | None = {"json": "application/json", "deep": "application/json",
                                 "form": "application/x-www-form-urlencoded"}[kind]
        else:
            ctype = data.draw(st.sampled_from(CONTENT_TYPES), label="content-type")
        if ctype:
            headers["Content-Type"] = ctype
        resp = http.request(method, url, params=params, headers=headers, content=content)
        seen.append(resp.status_code)
        assert resp.status_code < 500, (method, url, resp.status_code, resp.text)
        if resp.status_code == 204:
            assert resp.content == b""
            return
        if url.startswith("/metrics") and resp.status_code == 200:  # Prometheus text format
            assert resp.headers["content-type"].startswith("text/plain")
            return
        json_answer = resp.headers.get("content-type", "").startswith("application/json")
        if GROUPS["pages"].match(path) and not json_answer:  # pages answer HTML (middleware
            # refusals before the page — a NUL in the URL, a body over the limit — are JSON)
            assert "Traceback" not in resp.text
            if resp.status_code in (302, 303):  # only ever to a registered redirect URI
                assert resp.headers["location"]
            else:
                assert resp.headers["content-type"].startswith(("text/html", "text/css"))
            return
        assert resp.headers.get("content-type", "").startswith("application/json"), resp.text
        body = resp.json()
        if resp.status_code >= 400:
            assert isinstance(body, dict) and isinstance(body.get("error"), str), body
            assert "Traceback" not in resp.text

    probe()
    assert len(seen) >= 30  # the run really sent requests
    # The junk did not damage the server for everyone else.
    assert http.get("/v1/me", headers=a.headers()).status_code in (200, 401)
    assert http.get("/healthz").json() == {"status": "ok"}


def test_groups_cover_every_documented_operation(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    covered = {(m, p) for g, rx in GROUPS.items()
               for m, p, _ in operations(doc, rx, {"v1-read": False, "v1-write": True}.get(g))}
    listed = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert listed == covered


# --- generated junk on the event stream ----------------------------------------------------

# The closes the server itself starts: 4400 bad request, 4401 unauthorized. A crash shows as
# 1006 (no close frame) or 1000 (the handler's clean-up closing behind an exception).
CLEAN_CLOSES = {4400, 4401}
send_frames = st.fixed_dictionaries({"type": st.just("send")}, optional={
    "to": json_values, "body": json_values, "client_msg_id": json_values}).map(json.dumps)
frames = st.sampled_from(DEEP) | text | json_values.map(json.dumps) | send_frames


def test_generated_junk_on_the_event_stream_is_answered_cleanly(
        server: RunningServer, pair: tuple[Session, Session]) -> None:
    """Junk queries (``since=²``…), credentials and frames (5,000 nested arrays…): the stream
    answers with JSON frames and either stays open or closes with one of its own codes."""
    a, _ = pair
    closes: list[int] = []

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        query = data.draw(st.dictionaries(
            st.sampled_from(["since", "since", "ticket", "access_token"]) | text,
            st.sampled_from(["²", "1²", "١٢", "0", "1"]) | text | st.integers().map(str),
            max_size=3), label="query")
        token = data.draw(st.sampled_from([a.access, a.access, None, "ia_at_junk"]),
                          label="token")
        sent = data.draw(st.lists(frames, max_size=3), label="frames")
        url = f"{server.ws_url}/v1/events?{urlencode(query)}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with connect(url, additional_headers=headers, open_timeout=10, close_timeout=5,
                     max_size=2**20) as ws:
            try:
                for frame in sent:
                    ws.send(frame)
                while True:
                    answer = json.loads(ws.recv(timeout=0.15))
                    assert isinstance(answer, dict) and isinstance(answer.get("type"), str)
            except TimeoutError:
                return  # still open: nothing it was sent needed more than an answer
            except ConnectionClosed:
                pass
        assert ws.close_code in CLEAN_CLOSES, (query, sent, ws.close_code, ws.close_reason)
        closes.append(ws.close_code)

    probe()
    assert closes  # some junk really was refused
    with connect(f"{server.ws_url}/v1/events?since=0",  # and the stream still works
                 additional_headers={"Authorization": f"Bearer {a.access}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "contact_added"
