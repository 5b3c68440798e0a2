"""The report of ``bench/compare_messages.py``: Markdown block, charts and JSON (issue 6).

:func:`publish` takes the results of one run and writes the ``compare-messages`` block of
``docs/performance.md`` (through :func:`benchkit.write_block`), four charts into ``docs/perf/``
(through :func:`benchkit.bar_chart`) and ``docs/perf/compare-messages.json``; with
``write=False`` it only prints the Markdown. Every figure comes from the run passed in; targets
are checked against the Prosody figures *of the same run*, and the issue's nominal figures are
shown beside them for reference.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import benchkit
from benchkit import Bar, fmt_ms, fmt_rate, met, percentile, table
from compare_peers import LABELS, OTHER, SELF

MAX_RSS_RATIO = 1.3  # interapp serve's RSS at the end ÷ after the set-up (issue 12)
TARGET_RATIO = 2.5  # interapp ÷ Prosody messages/s at saturation (issue 12; 1.5 in issue 6)
NOMINAL = {"prosody_rate": 1000.0, "prosody_p50": 0.0022, "prosody_p99": 0.0046,
           "synapse_rate": 12.0}  # the figures for the peers (reference only)
NETS = tuple(LABELS.items())
PROCS = ("interapp serve", "Prosody", "Synapse", "local app (idle)", SELF, OTHER)
NOISY = 0.3  # cores used by foreign processes above which a phase is flagged
BUSY = 0.85  # cores above which a process counts as saturated


METHOD = """
- Machine: {machine}.
- Versions: {versions}.
- Servers, all on 127.0.0.1 at once: one `interapp serve` process (SQLite, one worker); Prosody
  (internal_hashed storage, no TLS on loopback); Synapse on SQLite (generous `rc_*` rate limits,
  `bcrypt_rounds: 4`, no federation); and an idle second `interapp serve` as the host's local
  application (it only mints the same-account assertions).
- {pairs} pairs of buddies per network (interapp: seeded in the database; Prosody: the xmpp
  plug-in's subscription handshake; Synapse: a direct room made through the host). Every account
  is **linked through the host SDK**: one `interapp.host.Host` per network (temporary data folder
  and vault), one target per account, `Host.connect` with the account's answers (prompt branch).
  Setup took {setup_seconds} s.
- Sends go through `Host.send(target, to, body)`; receipts are read from the network's host's
  `Host.events()` (the merged, resumable event stream of every target, open on both sides of
  every pair, so the interapp plug-in sends on that stream and the xmpp plug-in on its XML
  stream; the host saves each target's cursor in its vault in the background, the same on every
  network). This process is both the host and the load generator (standard asyncio loop).
- **Saturation**: all {pairs} senders at once, each with at most {window} messages sent but not
  yet received (a closed loop on delivery: every network gets the same offered load whatever its
  `send` waits for). {messages:,} messages for interapp and Prosody; Synapse bounded to
  {synapse_seconds:g} s or {synapse_messages:,} messages. Throughput = messages received ÷ (last
  receipt - first send); latency = receipt - start of the send call.
- **Paced**: {rate:g} messages/s for {paced_seconds:g} s, round-robin over the pairs, open loop;
  latency from the *intended* send time (no coordinated omission).
- Each message body is unique and is checked to arrive exactly once; missing, duplicated and
  unexpected messages are shown in the table.
- **Logins/s**: {login_concurrency} workers, closed loop, {login_seconds:g} s each, through the
  plug-ins (in a 60 s timeout, as the host bounds its calls), without the host's vault writes.
  interapp password = `login()` (`POST /oauth/token` + `GET /v1/me`); refresh =
  `prepare_refresh()` + `refresh()` (one rotating chain per worker); same-account =
  `login_with_assertion()` (JWT-bearer grant + `GET /v1/me`) with a fresh assertion each time
  (a `jti` is never re-used), minted by the local application (RFC 8693 token exchange, as the
  host's session does) into a pool before the timed loop, inline when the pool runs dry;
  Synapse = the matrix plug-in's `login()` (`POST /login`, whoami, display name, presence);
  Prosody = the xmpp plug-in's `login()`, a whole session start (TCP, SASL SCRAM-SHA-1, bind,
  roster, archive position, vCard, presence), its `close()` in the background, untimed.
"""


def _ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "—"
    r = a / b
    return f"{r:.2f}x" if r < 10 else f"{r:,.0f}x"


def _status(measured: float, target: float, higher_is_better: bool) -> str:
    """The status cell, and how far a figure misses its target."""
    if measured >= target if higher_is_better else measured <= target:
        return met(True)
    if higher_is_better:
        return met(False) + (f" — {target / measured:.2f}x too slow "
                             f"({(1 - measured / target) * 100:.0f} % short, "
                             f"{target - measured:,.0f}/s missing)" if measured > 0 else "")
    return met(False) + (f" — {measured / target:.2f}x too slow "
                         f"(+{(measured - target) * 1000:.1f} ms)")


def _delivery(r: Any) -> str:
    text = f"{r.received:,}/{r.sent:,}"
    extra = []
    if r.missing:
        extra.append(f"**{r.missing} missing**")
    if r.duplicates:
        extra.append(f"**{r.duplicates} duplicated**")
    if getattr(r, "unexpected", 0):
        extra.append(f"**{r.unexpected} unexpected**")
    if r.errors:
        extra.append(f"**{sum(r.errors.values())} send errors**")
    if r.stalls:
        extra.append(f"**{r.stalls} senders stalled**")
    return text + (" (" + ", ".join(extra) + ")" if extra else " exactly once")


def _limits(r: Any) -> str:
    """Which process was the bottleneck of a phase, from its CPU figures."""
    cpu = {k: v for k, v in r.cpu.items() if k != OTHER}
    other = r.cpu.get(OTHER, 0.0)
    busy = [f"{k} {v:.2f}" for k, v in cpu.items() if v >= BUSY]
    used = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v >= 0.05)
    noise = (f" Other work on the machine used {other:.2f} cores meanwhile: the figure is "
             "noisy." if other >= NOISY else "")
    if busy:
        return (f"CPU-bound: {' and '.join(busy)} cores (one Python or Lua process tops out "
                f"at 1.00; the machine has 2 cores for everything). All CPU: {used}.{noise}")
    total, ncpu = sum(r.cpu.values()), os.cpu_count() or 1
    if total >= 0.9 * ncpu:
        return (f"the machine's {ncpu} cores were full ({total:.2f} cores in all: {used}, "
                f"other work {other:.2f}), so the processes of the benchmark got only part of "
                "a core each — limited by the shared CPUs; re-measure on a quiet machine.")
    return (f"no process of the benchmark saturated a core ({used}): waits inside the "
            "request path (locks, timers, round trips) limit it more than CPU does; more "
            f"undelivered messages per sender (`--window`) would queue deeper.{noise}")


def render(results: dict[str, Any], charts: list[str]) -> str:
    """The Markdown block."""
    meta, msgs, logins = results["meta"], results["messages"], results["logins"]
    s = meta["sizes"]
    sat = {n: msgs[n]["saturation"] for n, _ in NETS}
    paced = {n: msgs[n]["paced"] for n, _ in NETS}
    md = ["## Messages and logins side by side: interapp vs Prosody vs Synapse (issue 6)", "",
          "Generated by `bench/compare_messages.py` in one run on one machine (re-run with "
          "`.venv/bin/python bench/compare_messages.py`; `--quick` for a 2-minute check). "
          "Raw figures: [`perf/compare-messages.json`](perf/compare-messages.json).", ""]
    if meta["quick"]:
        md += ["> **`--quick` run** — small sizes; a smoke test, not the figures of record.", ""]
    md += ["### Method", "", METHOD.format(**meta, **s).strip(), ""]
    def row(name: str, values: dict[str, float], fmt: Any, note: str = "") -> list[str]:
        i, p, m = values["interapp"], values["xmpp"], values["matrix"]
        return [name, f"**{fmt(i)}**", fmt(p), fmt(m), f"{_ratio(i, p)}{note}",
                f"{_ratio(i, m)}{note}"]

    lower = " (lower=better)"
    md += ["### Results", "", *table(
        ["Metric", *LABELS.values(), "interapp ÷ Prosody", "interapp ÷ Synapse"],
        [row("messages/s at saturation", {n: r.throughput for n, r in sat.items()}, fmt_rate),
         row("saturation latency p50", {n: r.p(50) for n, r in sat.items()}, fmt_ms, lower),
         row("saturation latency p99", {n: r.p(99) for n, r in sat.items()}, fmt_ms, lower),
         row(f"paced {s['rate']:g}/s latency p50", {n: r.p(50) for n, r in paced.items()},
             fmt_ms, lower),
         row(f"paced {s['rate']:g}/s latency p99", {n: r.p(99) for n, r in paced.items()},
             fmt_ms, lower),
         ["saturation: received/sent", *(_delivery(sat[n]) for n in LABELS), "", ""],
         ["paced: received/sent", *(_delivery(paced[n]) for n in LABELS), "", ""],
         ["saturation: send call p50 (plug-in's `send` returns)",
          *(fmt_ms(percentile(sat[n].acks, 50)) for n in LABELS), "", ""]])]
    bounds = [f"{label}: {sat[n].bound}" for n, label in NETS if sat[n].bound]
    if bounds:
        md += ["", "Saturation stopped early — " + "; ".join(bounds) + "."]
    syn = logins["synapse-password"].rate
    md += ["", *table(
        ["Logins (through the plug-in)", "logins/s", "p50", "p99", "errors",
         "÷ Synapse password"],
        [[f"{r.label} ({r.note})" if r.note else r.label, f"**{fmt_rate(r.rate)}**",
          fmt_ms(percentile(r.latencies, 50)), fmt_ms(percentile(r.latencies, 99)),
          sum(r.errors.values()), _ratio(r.rate, syn)] for r in logins.values()])]
    errors = [(r.label, e, c) for r in [*sat.values(), *paced.values(), *logins.values()]
              for e, c in r.errors.items()]
    if errors:
        md += ["", "Errors: " + "; ".join(f"{lbl}: {c}x `{e}`" for lbl, e, c in errors[:8])]

    ia, pr = sat["interapp"].throughput, sat["xmpp"].throughput
    need = TARGET_RATIO * pr
    targets = [[f"interapp messages/s ≥ {TARGET_RATIO:g}x Prosody's (same run: "
                f"{TARGET_RATIO:g} x {fmt_rate(pr)} = {fmt_rate(need)})",
                f"{fmt_rate(ia)} ({_ratio(ia, pr)} Prosody)", _status(ia, need, True)]]
    for q in (50, 99):
        mine, theirs = paced["interapp"].p(q), paced["xmpp"].p(q)
        targets.append([f"interapp paced p{q} ≤ Prosody's ({fmt_ms(theirs)})", fmt_ms(mine),
                        _status(mine, theirs, False)])
    warm, soak, end = (meta[k]["interapp serve"]
                       for k in ("rss_setup_mb", "rss_messages_mb", "rss_mb"))
    targets += [
        [f"interapp serve RSS after the message phases ({s['messages']:,} messages at "
         f"saturation and the paced ones) ≤ {MAX_RSS_RATIO:g}x its RSS after the set-up "
         f"({warm:,.1f} MB)", f"{soak:,.1f} MB ({soak / warm:.2f}x)",
         met(soak <= MAX_RSS_RATIO * warm)],
        ["(information) the same at the end, after the login phases (argon2id password "
         "grants)", f"{end:,.1f} MB ({end / warm:.2f}x)", "—"],
        [f"(reference) Prosody at saturation, issue says ≈ {NOMINAL['prosody_rate']:,.0f}/s",
         fmt_rate(pr), "—"],
        [f"(reference) Prosody paced p50/p99, issue says {fmt_ms(NOMINAL['prosody_p50'])} / "
         f"{fmt_ms(NOMINAL['prosody_p99'])}",
         f"{fmt_ms(paced['xmpp'].p(50))} / {fmt_ms(paced['xmpp'].p(99))}", "—"],
        [f"(reference) Synapse on SQLite, issue says ≈ {NOMINAL['synapse_rate']:g}/s",
         fmt_rate(sat["matrix"].throughput), "—"]]
    missed = [t[0].split(" (")[0] for t in targets if "NOT met" in t[2]]
    md += ["", "### Targets", "", *table(["Target (issues 6 and 12)", "Measured", "Status"],
                                         targets), ""]
    if missed:
        md += ["**Not met:** " + "; ".join(missed) + ".", ""]
    md += ["**What limits each network at saturation** (CPU cores during the phase):", "",
           *(f"- {label}: {_limits(sat[n])}" for n, label in NETS), "",
           "<details><summary>CPU during each phase (cores; 1.00 = one CPU busy) and "
           "memory</summary>", ""]
    phases = [(f"{label}: saturation", sat[n]) for n, label in NETS]
    phases += [(f"{label}: paced", paced[n]) for n, label in NETS]
    phases += [(r.label, r) for r in logins.values()]
    md += [*table(["Phase", *PROCS], [[name, *(f"{r.cpu.get(p, math.nan):.2f}" for p in PROCS)]
                                      for name, r in phases]), "",
           "Memory (RSS) after the set-up / after the message phases / at the end: "
           + ", ".join(f"{k} {meta['rss_setup_mb'].get(k, 0):,.0f} / "
                       f"{meta['rss_messages_mb'].get(k, 0):,.0f} / {v:,.0f} MB"
                       for k, v in meta["rss_mb"].items()) + ".",
           "", "</details>", "", "### Charts", "", *(f"![{c}](perf/{c})" for c in charts)]
    return "\n".join(md) + "\n"


def draw(results: dict[str, Any]) -> list[str]:
    """The four charts; returns their file names."""
    msgs, logins = results["messages"], results["logins"]
    sat = {n: msgs[n]["saturation"] for n, _ in NETS}
    paced = {n: msgs[n]["paced"] for n, _ in NETS}
    rate = results["meta"]["sizes"]["rate"]
    benchkit.bar_chart(
        "messages-throughput.png", "Messages/s at saturation (plug-in to plug-in)",
        "messages/s (higher is better)",
        [Bar(label, sat[n].throughput, fmt_rate(sat[n].throughput)) for n, label in NETS],
        target=TARGET_RATIO * sat["xmpp"].throughput,
        target_label=f"target {TARGET_RATIO:g}x Prosody")

    def lat(results_: dict[str, Any], name: str, title: str, target: float | None) -> None:
        bars = [Bar(f"{label} p{q}", results_[n].p(q) * 1000, fmt_ms(results_[n].p(q)))
                for n, label in NETS for q in (50, 99)]
        benchkit.bar_chart(name, title, "ms, log scale (lower is better)", bars,
                           target=target, target_label="Prosody p99", log_scale=True)

    lat(paced, "messages-latency-paced.png",
        f"End-to-end latency paced at {rate:g} msg/s (from the intended send time)",
        paced["xmpp"].p(99) * 1000)
    lat(sat, "messages-latency-saturation.png", "End-to-end latency at saturation", None)
    benchkit.bar_chart(
        "logins.png", "Logins/s through the plug-ins", "logins/s, log scale (higher is better)",
        [Bar(r.label, r.rate, fmt_rate(r.rate)) for r in logins.values()], log_scale=True)
    return ["messages-throughput.png", "messages-latency-paced.png",
            "messages-latency-saturation.png", "logins.png"]


def publish(results: dict[str, Any], *, write: bool) -> str:
    """Write (or only print) the report of one run; returns the Markdown."""
    names = ["messages-throughput.png", "messages-latency-paced.png",
             "messages-latency-saturation.png", "logins.png"]
    if write:
        names = draw(results)
    md = render(results, names)
    if write:
        benchkit.write_block("compare-messages", md)
        benchkit.CHARTS.mkdir(parents=True, exist_ok=True)
        raw = {"meta": results["meta"],
               "messages": {n: {p: r.summary() for p, r in d.items()}
                            for n, d in results["messages"].items()},
               "logins": {k: r.summary() for k, r in results["logins"].items()}}
        (benchkit.CHARTS / "compare-messages.json").write_text(json.dumps(raw, indent=1) + "\n")
        benchkit.say(f"wrote {benchkit.REPORT} (block compare-messages), "
                     f"{', '.join(names)} and compare-messages.json in {benchkit.CHARTS}")
    print(md)
    return md
