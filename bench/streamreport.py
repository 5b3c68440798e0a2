"""The report of ``bench/compare_streams.py``: the Markdown block and the charts.

Everything here is computed from the results dictionary of one run (also written to
``docs/perf/compare-streams.json``); nothing is typed in by hand.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchkit import Bar, bar_chart, fmt_ms, met
from benchkit import cpu_text as _cpu

TARGET_RATIO = 1.7
TARGET_IDLE_MB = 60.0
TARGET_STREAMS = 10_000
TARGET_KB = 30.0
MB, KB = 1024 * 1024, 1024


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value / MB:,.1f} MB"


def _kb(value: float | None) -> str:
    return "—" if value is None else f"{value / KB:,.1f} KB"


def _ms(value: float | None) -> str:
    return "—" if value is None else fmt_ms(value / 1000)


def _ratio(out: dict[str, Any], path: tuple[str, str]) -> float | None:
    one, two = out.get("w1", {}).get(path[0]), out.get("w2", {}).get(path[0])
    if not one or not two or not one.get(path[1]):
        return None
    return float(two[path[1]]) / float(one[path[1]])


def _limit_note(out: dict[str, Any]) -> str:
    """What limits the 2-process figure: the machine's cores, or the server itself."""
    cpu = out.get("w2", {}).get("messages", {}).get("cpu")
    one = out.get("w1", {}).get("messages", {})
    two = out.get("w2", {}).get("messages", {})
    if not cpu:
        return ""
    cores = out.get("cores", 2)
    total = cpu["server"] + cpu["loadgen"] + cpu["other"]
    eff1, eff2 = one.get("per_server_cpu_s", 0), two.get("per_server_cpu_s", 0)
    parts = [f"with 2 workers the machine was {total / cores:.0%} busy ({total:.2f} of "
             f"{cores} cores: the servers {cpu['server']:.2f}, this load generator "
             f"{cpu['loadgen']:.2f}, PostgreSQL, Redis and the rest {cpu['other']:.2f})"]
    if total >= 0.9 * cores:
        parts.append("so the 2-core machine itself is the limit: a second worker can only take "
                     "CPU from PostgreSQL and the load generator, which share the same cores")
    if eff1 and eff2:
        parts.append(f"each server CPU-second carried {eff1:,.0f} messages with 1 worker and "
                     f"{eff2:,.0f} with 2 ({eff2 / eff1:.2f}x)")
    return "; ".join(parts) + "."


def _fanout_note(out: dict[str, Any]) -> str:
    """What limits fan-out with two processes, from the run's own figures."""
    f = out["w2"]["fanout"]
    cpu, cores = f["cpu"], out.get("cores", 2)
    total = cpu["server"] + cpu["loadgen"] + cpu["other"]
    return (f"bursts are sequential and each waits for its `PUT /v1/presence`, answered after "
            f"a p50 of {_ms(f['ack_p50_ms'])} (the {f['streams']:,} presence events are written "
            f"in one transaction by one worker) while the last stream is reached after "
            f"{_ms(f['last_p50_ms'])}: the second process can only share the sending of "
            f"frames. The machine was {total / cores:.0%} busy ({total:.2f} of {cores} cores).")


def targets(out: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Rows of the targets table and statements of the misses."""
    rows, misses = [], []
    limit = _limit_note(out)
    for label, path, unit in (("message throughput", ("messages", "rate"), "messages/s"),
                              ("fan-out", ("fanout", "events_per_s"), "events/s")):
        ratio = _ratio(out, path)
        if ratio is None:
            rows.append(f"| two processes with Redis ≥ {TARGET_RATIO}x one ({label}) | not "
                        "measured | **NOT met** |")
            misses.append(f"two processes vs one ({label}) was not measured: "
                          f"{out['errors'] or 'PostgreSQL missing'}")
            continue
        one, two = out["w1"][path[0]][path[1]], out["w2"][path[0]][path[1]]
        ok = ratio >= TARGET_RATIO
        rows.append(f"| two processes with Redis ≥ {TARGET_RATIO}x one ({label}) | "
                    f"{one:,.0f} → {two:,.0f} {unit}: **{ratio:.2f}x** | {met(ok)} |")
        if not ok:
            misses.append(f"{label}: two processes give {ratio:.2f}x one against ≥ "
                          f"{TARGET_RATIO}x — {(1 - ratio / TARGET_RATIO) * 100:.0f} % short "
                          f"({TARGET_RATIO * one:,.0f} {unit} needed, {two:,.0f} measured)"
                          + (f"; {limit}" if label == "message throughput" and limit else
                             f"; {_fanout_note(out)}"))
    idle = out.get("idle_sqlite", {}).get("rss")
    if idle is not None:
        ok = idle <= TARGET_IDLE_MB * MB
        bare = out.get("yardstick", {}).get("idle_rss")
        rows.append(f"| idle server memory ≤ {TARGET_IDLE_MB:g} MB (one process, SQLite) | "
                    f"**{_mb(idle)}** (bare Starlette: {_mb(bare)}) | {met(ok)} |")
        if not ok:
            misses.append(f"idle memory: {_mb(idle)} against ≤ {TARGET_IDLE_MB:g} MB — "
                          f"{idle / MB - TARGET_IDLE_MB:,.1f} MB "
                          f"({(idle / MB / TARGET_IDLE_MB - 1) * 100:.0f} %) over; a bare "
                          f"Starlette app on the same uvicorn takes {_mb(bare)}, so "
                          f"{_mb(idle - (bare or 0))} are interapp's own imports and state.")
    streams = out.get("streams", {})
    steps = streams.get("steps", [])
    if steps:
        last = steps[-1]
        reached = last["check"]["received"]
        ok = reached >= TARGET_STREAMS
        rows.append(f"| {TARGET_STREAMS:,} concurrent event streams in one process | "
                    f"**{reached:,}** open and reached by one event (asked for "
                    f"{last['target']:,}) | {met(ok)} |")
        if not ok:
            why = streams.get("stopped") or (
                f"this run asked for {last['target']:,} only (--streams)"
                if last["target"] < TARGET_STREAMS else "see the table below")
            misses.append(f"concurrent streams: {reached:,} against {TARGET_STREAMS:,} — "
                          f"{why}.")
        at = next((s for s in steps if s["target"] >= TARGET_STREAMS), last)
        ok = at["per_stream"] <= TARGET_KB * KB
        rows.append(f"| ≤ {TARGET_KB:g} KB per stream at {TARGET_STREAMS:,} | "
                    f"**{_kb(at['per_stream'])}** at {at['open']:,} streams | "
                    f"{met(ok and at['open'] >= TARGET_STREAMS)} |")
        if not ok:
            misses.append(f"memory per stream: {_kb(at['per_stream'])} at {at['open']:,} "
                          f"streams against ≤ {TARGET_KB:g} KB — "
                          f"{at['per_stream'] / KB / TARGET_KB:.1f}x the limit "
                          f"({(at['per_stream'] / KB - TARGET_KB) * at['open'] / 1024:,.0f} MB "
                          "too much at that count).")
    return rows, misses


def _streams_section(out: dict[str, Any]) -> list[str]:
    st = out.get("streams")
    if not st or not st.get("steps"):
        return []
    md = ["### Streams held by one process (SQLite, one worker)", "",
          f"{st['holders']} accounts share the streams; RSS of the server before the first "
          f"stream (after 20 streams were opened and closed to load the code): "
          f"{_mb(st.get('base_rss'))}. Streams are set up once the server's "
          "`interapp_active_streams` gauge counts them all (the client gets the 101 before the "
          "server authenticates and subscribes it; the handshake rate is in brackets). The check "
          "event is one presence change of a buddy of every account; it must reach every open "
          "stream.", "",
          "| Streams open | Set up at (101 → subscribed) | Server RSS | Per stream | "
          "Check event reached | "
          "p50 / last | Server fds | CPU while opening |", "|---|---|---|---|---|---|---|---|"]
    for s in st["steps"]:
        c = s["check"]
        fails = f" ({sum(s['failures'].values())} failed: {s['failures']})" if s["failures"] else ""
        rate = f"{s['open_rate']:,.0f}/s ({s['handshake_rate']:,.0f}/s)"
        if not s.get("subscribed", True):
            rate += ", not all subscribed in time"
        md.append(f"| {s['open']:,}{fails} | {rate} | {_mb(s['rss'])} | "
                  f"**{_kb(s['per_stream'])}** | {c['received']:,} of {c['streams']:,} | "
                  f"{_ms(c['p50_ms'])} / {_ms(c['max_ms'])} | {s['fds']:,} | "
                  f"{_cpu(s['opening_cpu'])} |")
    hold = st.get("hold")
    if hold:
        c = hold["check"]
        md += ["", f"Holding the {c['streams']:,} streams idle for {hold['seconds']:g} s: the "
               f"server used **{hold['cpu']['server']:.2f} cores** (keep-alive pings every 20 s "
               f"and each stream's reconciliation with the event table every 20 s), RSS "
               f"{_mb(hold['rss'])}; afterwards {c['received']:,} of {c['streams']:,} streams "
               f"still received an event (p50 {_ms(c['p50_ms'])}, last {_ms(c['max_ms'])})"
               + (f"; closed: {c['closed']}" if c["closed"] else "") + ". After closing them "
               f"all: RSS {_mb(st.get('rss_after_close'))}."]
    if st.get("stopped"):
        md += ["", f"**The ramp stopped:** {st['stopped']}."]
    d = out.get("deflate")
    if d:
        how = ("the server accepted it for " + f"{d['negotiated']:,}" if d["negotiated"] else
               "the server declined it (`ws_per_message_deflate` off), so these are plain "
               "streams again")
        md += ["", f"Clients offering `permessage-deflate` (as browsers and the `websockets` "
               f"library do), {d['open']:,} streams on a fresh server: {how}; "
               f"**{_kb(d['per_stream'])} per stream**, {d['check']['received']:,} reached by "
               "the check event."]
    return [*md, ""]


def _row(out: dict[str, Any], label: str, fmt: Any, ratio: float | None = None) -> str:
    """A table row with the 1-process and the 2-process figure (``—`` when missing)."""
    cells = []
    for key in ("w1", "w2"):
        try:
            cells.append(str(fmt(out[key])))
        except (KeyError, TypeError, ValueError):
            cells.append("—")
    return f"| {label} | {cells[0]} | {cells[1]} | " + (
        f"**{ratio:.2f}x** |" if ratio is not None else "— |")


def _spread(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,}" for n in counts.values())


def _cluster_section(out: dict[str, Any]) -> list[str]:
    if "w1" not in out and "w2" not in out:
        return []
    fr, mr = _ratio(out, ("fanout", "events_per_s")), _ratio(out, ("messages", "rate"))

    def fan(w: dict[str, Any]) -> dict[str, Any]:
        return w["fanout"]

    def msg(w: dict[str, Any]) -> dict[str, Any]:
        return w["messages"]

    rows = [
        _row(out, "idle RSS, whole process tree", lambda w: _mb(w["idle_rss"])),
        _row(out, "… of which each worker / the supervisor (+ its resource tracker)",
             lambda w: " + ".join(_mb(x) for x in w["idle_rss_workers"]) + (
                 f" / {_mb(w['idle_rss'] - sum(w['idle_rss_workers']))}"
                 if w["idle_rss_supervisor"] else "")),
        _row(out, "fan-out streams per worker", lambda w: _spread(w["fanout_spread"])),
        _row(out, "**fan-out: events delivered/s** (sequential bursts)",
             lambda w: f"{fan(w)['events_per_s']:,.0f}/s", fr),
        _row(out, "delivery latency from the PUT, p50 / p99 / max",
             lambda w: " / ".join(_ms(fan(w)[k]) for k in ("p50_ms", "p99_ms", "max_ms"))),
        _row(out, "PUT /v1/presence answered, p50 of bursts",
             lambda w: _ms(fan(w)["ack_p50_ms"])),
        _row(out, "last stream reached, p50 of bursts", lambda w: _ms(fan(w)["last_p50_ms"])),
        _row(out, "events delivered / expected",
             lambda w: f"{fan(w)['delivered']:,} / {fan(w)['expected']:,}"),
        _row(out, "CPU during the bursts (cores)", lambda w: _cpu(fan(w)["cpu"])),
        _row(out, "message streams / sender connections per worker",
             lambda w: f"{_spread(w['msg_stream_spread'])} / {_spread(w['msg_conn_spread'])}"),
        _row(out, "**POST /v1/messages/s** (closed loop)",
             lambda w: f"{msg(w)['rate']:,.0f}/s", mr),
        _row(out, "delivered on the receivers' streams",
             lambda w: f"{msg(w)['delivered']:,} / {msg(w)['sent']:,}"),
        _row(out, "send → receive p50 / p99",
             lambda w: f"{_ms(msg(w)['e2e_p50_ms'])} / {_ms(msg(w)['e2e_p99_ms'])}"),
        _row(out, "POST answered p50 / p99",
             lambda w: f"{_ms(msg(w)['post_p50_ms'])} / {_ms(msg(w)['post_p99_ms'])}"),
        _row(out, "CPU during the message phase (cores)", lambda w: _cpu(msg(w)["cpu"])),
        _row(out, "messages per server CPU-second",
             lambda w: f"{msg(w)['per_server_cpu_s']:,.0f}"),
    ]
    notes = []
    for key in ("w1", "w2"):
        m = out.get(key, {}).get("messages", {})
        if m.get("lost_by_receiver"):
            notes.append(f"**{m['sent'] - m['delivered']:,} messages never reached their "
                         f"receiver's stream** with {key[1]} process(es) (by receiver: "
                         f"{m['lost_by_receiver']}; streams closed by then: "
                         f"{m.get('closed_streams') or 'none'}).")
    return ["### Fan-out and scale-out (PostgreSQL + Redis)", "",
            "| | 1 process | 2 processes (`--workers 2`) | 2 vs 1 |", "|---|---|---|---|",
            *rows, "", *notes, *([""] if notes else [])]


METHOD = """
- Machine: {machine}.{scaling}
- Yardstick: the bare Starlette JSON endpoint (`bench/bare_server.py`, started like
  `interapp serve`) did **{rate:,.0f} req/s** (16 connections, closed loop; {cpu}); its idle
  RSS is {idle}.
- Load generator: this separate process on uvloop. Event streams are raw `asyncio.Protocol`
  WebSocket clients (handshake, frames, pongs; no task per stream); HTTP is a raw keep-alive
  client (`bench/loadkit.py`). Accounts, buddies and 4-hour access tokens are seeded straight
  into the database. Open-file limit raised to {nofile:,} (inherited by the servers).
- Idle memory: RSS after `/readyz` and a handful of requests (`/healthz`, `/v1/me`,
  `/v1/contacts`, `PUT /v1/presence`, `POST /v1/messages`, `/metrics`), 1 s later. Per-stream
  memory: (RSS with N streams - RSS before) / N, 2 s after the last stream opened.
- Fan-out: the sender's {fanout:,} buddies each hold one stream; {bursts} measured bursts (after
  2 warm-up ones), each a `PUT /v1/presence` sent when the previous burst has reached every
  stream; latency = PUT sent → event read on a stream. Events/s = events delivered ÷ wall time
  of the measured bursts.
- Scale-out: `POST /v1/messages` closed loop, one keep-alive connection per pair of {pairs}
  buddy pairs, {warmup:g} s warm-up + {duration:g} s; every message must arrive on the
  receiver's stream. In the 2-process runs streams and connections are spread evenly over the
  workers (checked through `/proc`).
- PostgreSQL: a fresh database on 127.0.0.1:5432; Redis: {redis}.
"""


def render_block(out: dict[str, Any]) -> str:
    """The Markdown block of ``docs/performance.md`` for one run."""
    plan, y, scaling = out["plan"], out.get("yardstick", {}), out.get("cpu_scaling")
    kind = "quick run (`--quick`: small sizes, noisy)" if plan["quick"] else "full run"
    rows, misses = targets(out)
    method = METHOD.format(
        **plan, machine=out["machine"], nofile=out["nofile"], redis=out["redis"],
        rate=y.get("rate", math.nan), cpu=_cpu(y.get("cpu")), idle=_mb(y.get("idle_rss")),
        scaling=f" Two CPU-bound processes together ran at {scaling:.2f}x one alone (2.00 = "
                "two free cores)." if scaling else "")
    md = ["## Event streams: fan-out, scale-out and memory (issue 6)", "",
          f"Generated by `bench/compare_streams.py` — {kind}, {out['seconds']:.0f} s. Re-run "
          "with:", "", "```sh", f".venv/bin/python {out['command']}".strip(), "```", "",
          method.strip(), "", "### Targets", "", "| Target | Measured | Status |", "|---|---|---|",
          *rows, "", *_streams_section(out), *_cluster_section(out)]
    if misses:
        md += ["### Targets not met", "", *(f"- {m}" for m in misses), ""]
    if out["errors"]:
        md += ["### Phases that failed", "", *(f"- {k}: {v}" for k, v in out["errors"].items()),
               ""]
    md += ["![idle memory](perf/idle-memory.png)", "![memory per stream](perf/streams-memory.png)",
           "![fan-out](perf/fanout.png)", "![fan-out latency](perf/fanout-latency.png)",
           "![scale-out](perf/scale-out.png)", "",
           "Raw figures: [perf/compare-streams.json](perf/compare-streams.json)."]
    return "\n".join(md)


def draw_charts(out: dict[str, Any]) -> list[Path]:
    """The PNG charts of one run, in ``docs/perf/``."""
    charts = []
    y, idle = out.get("yardstick", {}), []
    if "idle_rss" in y:
        idle.append(Bar("bare Starlette (yardstick)", y["idle_rss"] / MB))
    if "idle_sqlite" in out:
        idle.append(Bar("interapp, 1 process, SQLite", out["idle_sqlite"]["rss"] / MB))
    for key, label in (("w1", "interapp, 1 process, PG+Redis"),
                       ("w2", "interapp, 2 workers, PG+Redis (tree)")):
        if "idle_rss" in out.get(key, {}):
            idle.append(Bar(label, out[key]["idle_rss"] / MB))
    if idle:
        charts.append(bar_chart("idle-memory.png", "Idle server memory (RSS)", "MB", idle,
                                target=TARGET_IDLE_MB, target_label="target ≤ 60 MB"))
    per = [Bar(f"interapp, {s['open']:,} streams", s["per_stream"] / KB)
           for s in out.get("streams", {}).get("steps", [])]
    if "deflate" in out:
        d = out["deflate"]
        per.append(Bar(f"interapp, {d['open']:,} streams, deflate offered"
                       + ("" if d["negotiated"] else " (declined)"), d["per_stream"] / KB))
    if per:
        charts.append(bar_chart("streams-memory.png", "Server memory per idle event stream "
                                "(one process)", "KB per stream", per, target=TARGET_KB,
                                target_label="target ≤ 30 KB"))
    for name, title, unit, path in (
            ("fanout.png", "Fan-out: one sender's presence to every buddy's stream",
             "events delivered/s", ("fanout", "events_per_s")),
            ("scale-out.png", "Scale-out: POST /v1/messages, each received on a stream",
             "requests/s", ("messages", "rate"))):
        bars = [Bar(f"interapp, {k[1]} process(es)", out[k][path[0]][path[1]])
                for k in ("w1", "w2") if path[0] in out.get(k, {})]
        if not bars:
            continue
        if name == "scale-out.png" and "rate" in y:
            bars.append(Bar("bare Starlette GET /json (yardstick)", y["rate"]))
        target = (TARGET_RATIO * out["w1"][path[0]][path[1]]
                  if path[0] in out.get("w1", {}) else None)
        charts.append(bar_chart(name, title, unit, bars, target=target,
                                target_label=f"target: {TARGET_RATIO}x one process",
                                log_scale=name == "scale-out.png"))
    lat = []
    for key in ("w1", "w2"):
        f = out.get(key, {}).get("fanout")
        if f:
            for q in ("p50", "p99"):
                lat.append(Bar(f"interapp, {key[1]} process(es), {q}", f[f"{q}_ms"]))
    if lat:
        charts.append(bar_chart("fanout-latency.png", "Fan-out delivery latency (PUT sent → "
                                "event read on a stream)", "ms", lat))
    return charts
