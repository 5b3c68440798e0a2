"""The agent's OpenAPI document is what it serves, and bad input anywhere is a 4xx JSON error.

A real agent (its own process, Unix socket) on a configured, signed-in data folder with
chatter linked. Every operation of ``/agent/v1/openapi.json`` is called with input made by
Hypothesis from the document itself — the documented field names with values of any JSON
type, random JSON bodies, non-JSON bodies, random path segments and query values — and each
answer must be: below 500; for an error, ``{"error": …, "message": …}``; a status the document
lists for that operation; and for a success, valid against the documented schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from agent_kit import AgentProcess, World, make_world
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

pytestmark = pytest.mark.slow

#: What the issue names (a contract), plus what was added (local, session, links, audit).
EXPECTED = {
    ("get", "/agent/v1/state"), ("get", "/agent/v1/targets"), ("post", "/agent/v1/targets"),
    ("delete", "/agent/v1/targets/{name}"), ("post", "/agent/v1/targets/{name}/connect"),
    ("post", "/agent/v1/prompts/{prompt_id}"), ("delete", "/agent/v1/targets/{name}/link"),
    ("get", "/agent/v1/buddies"), ("post", "/agent/v1/buddies"),
    ("post", "/agent/v1/buddies/accept"), ("delete", "/agent/v1/buddies/{target}/{user}"),
    ("post", "/agent/v1/messages"), ("get", "/agent/v1/history/{target}/{user}"),
    ("put", "/agent/v1/presence"), ("get", "/agent/v1/events"), ("put", "/agent/v1/local"),
    ("post", "/agent/v1/session"), ("delete", "/agent/v1/session"), ("get", "/agent/v1/links"),
    ("get", "/agent/v1/audit"),
    # rich presence and invites (issue 15)
    ("put", "/agent/v1/activity"), ("get", "/agent/v1/invites"), ("post", "/agent/v1/invites"),
    ("post", "/agent/v1/invites/{target}/{invite_id}/accept"),
    ("post", "/agent/v1/invites/{target}/{invite_id}/decline"),
}
#: Not fuzzed: they would send the local app's metadata request, or a sign-in, to whatever
#: server a generated string names (these tests talk to 127.0.0.1 only), or sign alice out.
NOT_FUZZED = {("put", "/agent/v1/local"), ("post", "/agent/v1/session"),
              ("delete", "/agent/v1/session")}
ALWAYS = {"400", "401", "403", "404", "405", "413"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, AgentProcess,
                                                                       dict[str, Any]]]:
    w = make_world(tmp_path_factory.mktemp("api"))
    agent = AgentProcess(w)
    with agent.http() as api:
        doc = api.get("/agent/v1/openapi.json").json()
    yield w, agent, doc
    agent.terminate()
    w.stop()


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in doc["paths"].items()
            for method, op in ops.items()]


def test_the_document_lists_every_route_and_only_those(served: Any) -> None:
    _, agent, doc = served
    assert doc["openapi"].startswith("3.")
    assert {(m, p) for m, p, _ in operations(doc)} == EXPECTED
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for method, path, op in operations(doc):
        codes = set(op["responses"])
        assert "422" not in codes, (method, path)  # bad input is 400, as served
        assert {"400", "401"} <= codes, (method, path)
        assert op.get("summary") and op.get("description"), (method, path)
    with agent.http() as api:  # a route that is not in the document does not exist
        missing = api.get("/agent/v1/nothing")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        wrong = api.patch("/agent/v1/state")
        assert wrong.status_code == 405 and set(wrong.json()) == {"error", "message"}
        plain = api.get("/agent/v1/events")
        assert plain.status_code == 426 and plain.json()["error"] == "upgrade_required"


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) |
                    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _body(doc: dict[str, Any], op: dict[str, Any]) -> st.SearchStrategy[Any]:
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return st.none()
    schema = _resolve(doc, content["schema"])
    for option in schema.get("anyOf", []):  # an optional body
        if "$ref" in option:
            schema = _resolve(doc, option)
    names = sorted(schema.get("properties", {}))
    shaped = st.fixed_dictionaries({}, optional={n: JSON for n in names}) if names else JSON
    return st.one_of(shaped, JSON, st.binary(max_size=40).map(lambda b: ("raw", b)))


def _no_urls(value: Any) -> bool:
    return "://" not in json.dumps(value, default=repr)


def _check(doc: dict[str, Any], method: str, path: str, op: dict[str, Any],
           resp: httpx.Response) -> None:
    where = f"{method.upper()} {resp.request.url.raw_path!r} → {resp.status_code}: {resp.text}"
    assert resp.status_code < 500, where
    assert str(resp.status_code) in set(op["responses"]) | ALWAYS, where
    data = resp.json()
    if resp.status_code >= 400:
        assert isinstance(data.get("error"), str) and isinstance(data.get("message"), str), where
        return
    schema = op["responses"][str(resp.status_code)]["content"]["application/json"]["schema"]
    errors = list(Draft202012Validator({**schema, "components": doc["components"]})
                  .iter_errors(data))
    assert not errors, f"{where}\n{errors[0].message}"


def _fuzzer(api: httpx.Client, doc: dict[str, Any], method: str, path: str,
            op: dict[str, Any]) -> Any:
    params = [p for p in op.get("parameters", []) if p["in"] in ("path", "query")]

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.fixed_dictionaries({p["name"]: st.text(max_size=80) for p in params}),
           _body(doc, op))
    def one(values: dict[str, str], body: Any) -> None:
        if not _no_urls(values) or not _no_urls(body):
            return
        url, query = path, {}
        for p in params:
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", quote(values[p["name"]], safe="")
                                  or "x")
            else:
                query[p["name"]] = values[p["name"]]
        kwargs: dict[str, Any] = {"params": query}
        if isinstance(body, tuple):
            kwargs["content"] = body[1]
            kwargs["headers"] = {"Content-Type": "application/json"}
        elif body is not None:
            kwargs["json"] = body
        _check(doc, method, path, op, api.request(method.upper(), url, **kwargs))

    return one


def test_every_operation_answers_bad_input_with_4xx_json(served: Any) -> None:
    _, agent, doc = served
    with agent.http() as api:
        for method, path, op in operations(doc):
            if (method, path) not in NOT_FUZZED:
                _fuzzer(api, doc, method, path, op)()


def test_good_input_answers_match_the_document(served: Any) -> None:
    _, agent, doc = served
    ops = {(m, p): op for m, p, op in operations(doc)}
    with agent.http() as api:
        calls = [("get", "/agent/v1/state", "/agent/v1/state", None),
                 ("get", "/agent/v1/targets", "/agent/v1/targets", None),
                 ("get", "/agent/v1/links", "/agent/v1/links", None),
                 ("get", "/agent/v1/audit", "/agent/v1/audit", None),
                 ("get", "/agent/v1/buddies", "/agent/v1/buddies?target=chatter", None),
                 ("post", "/agent/v1/messages", "/agent/v1/messages",
                  {"target": "chatter", "to": "bob", "body": "schema check"}),
                 ("get", "/agent/v1/history/{target}/{user}", "/agent/v1/history/chatter/bob",
                  None),
                 ("put", "/agent/v1/presence", "/agent/v1/presence",
                  {"state": "away", "status_text": "checking"}),
                 ("post", "/agent/v1/targets/{name}/connect",
                  "/agent/v1/targets/chatter/connect", {}),
                 ("put", "/agent/v1/activity", "/agent/v1/activity",
                  {"activity": {"name": "Arena", "party": {"size": 2, "max": 4},
                                "join": {"url": "arena://join/1"}}}),
                 ("get", "/agent/v1/buddies", "/agent/v1/buddies?target=chatter", None),
                 ("get", "/agent/v1/state", "/agent/v1/state", None),
                 ("post", "/agent/v1/invites", "/agent/v1/invites",
                  {"target": "chatter", "to": "bob", "message": "schema check"}),
                 ("get", "/agent/v1/invites", "/agent/v1/invites?target=chatter", None),
                 ("put", "/agent/v1/activity", "/agent/v1/activity", {"activity": None})]
        for method, path, url, body in calls:
            resp = api.request(method.upper(), url, json=body)
            assert resp.status_code < 300, (url, resp.text)
            _check(doc, method, path, ops[(method, path)], resp)


def test_the_fast_path_answers_exactly_as_fastapi(served: Any) -> None:
    """``state`` and ``messages`` are answered in front of FastAPI (agent/fastpath.py); a query
    string sends the same request through FastAPI, and the two answers must be the same."""
    _, agent, _ = served
    with agent.http() as api:
        sent = {"target": "chatter", "to": "bob", "body": "fast ünïcode ✓",
                "client_msg_id": "fast-path-1"}
        fast = api.post("/agent/v1/messages", json=sent)
        slow = api.post("/agent/v1/messages?through=fastapi", json=sent)  # idempotent: same one
        assert (fast.status_code, slow.status_code) == (201, 201)
        assert fast.content == slow.content
        assert fast.headers["content-type"] == slow.headers["content-type"]
        for bad in ({**sent, "target": "nowhere", "client_msg_id": "fast-path-2"},
                    {**sent, "body": ""}, {"target": "chatter"}):
            fast = api.post("/agent/v1/messages", json=bad)
            slow = api.post("/agent/v1/messages?through=fastapi", json=bad)
            assert fast.status_code == slow.status_code and 400 <= fast.status_code < 500, bad
            assert fast.json() == slow.json(), bad
        not_json = api.post("/agent/v1/messages", content=b"{", headers={
            "content-type": "application/json"})
        assert not_json.status_code == 400 and not_json.json()["error"] == "bad_request"
        fast, slow = api.get("/agent/v1/state"), api.get("/agent/v1/state?through=fastapi")
        assert fast.status_code == slow.status_code == 200
        assert fast.json() == slow.json()
