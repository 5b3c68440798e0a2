"""The agent's event log: increasing seq across restarts, de-duplication, the bounded window."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

from interapp.agent.eventlog import EventLog


def test_seq_grows_across_reopen_and_duplicates_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "agent-events.db"

    async def go() -> None:
        log = await EventLog(path).open()
        assert (log.last_seq, log.oldest_seq) == (0, 1)
        first = await log.append({"type": "message", "target": "chatter"}, "chatter\x001\x00m")
        again = await log.append({"type": "message", "target": "chatter"}, "chatter\x001\x00m")
        other = await log.append({"type": "target_degraded", "target": "chatter"})
        assert (first, again, other) == (1, None, 2)
        await log.close()
        log = await EventLog(path).open()  # as after a restart (or kill -9)
        assert log.last_seq == 2
        assert await log.append({"type": "x"}, "chatter\x001\x00m") is None  # still known
        assert await log.append({"type": "x"}) == 3
        got = [json.loads(item.text) for item in await log.after(1)]
        assert [(e["seq"], e["type"]) for e in got] == [(2, "target_degraded"), (3, "x")]
        await log.close()

    asyncio.run(go())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_window_is_bounded_and_seq_never_goes_back(tmp_path: Path) -> None:
    async def go() -> None:
        log = await EventLog(tmp_path / "log.db", keep=50).open()
        for i in range(300):
            await log.append({"type": "n", "i": i})
        assert log.last_seq == 300
        assert 250 - 50 <= log.oldest_seq <= 251
        kept = await log.after(0, limit=1000)
        assert kept[0].seq == log.oldest_seq and kept[-1].seq == 300
        assert [k.seq for k in kept] == list(range(log.oldest_seq, 301))
        await log.close()
        log = await EventLog(tmp_path / "log.db", keep=50).open()
        await log.append({"type": "n"})  # AUTOINCREMENT: never a seq handed out before
        assert log.last_seq == 301
        await log.close()

    asyncio.run(go())


def test_a_waiter_is_woken_by_the_next_append(tmp_path: Path) -> None:
    async def go() -> None:
        log = await EventLog(None).open()
        signal = log.changed
        waiting = asyncio.create_task(signal.wait())
        await asyncio.sleep(0)
        assert not waiting.done()
        await log.append({"type": "x"})
        await asyncio.wait_for(waiting, 2)
        assert not log.changed.is_set()  # a new round for the next waiters
        await log.set_meta("presence", '{"state": "away"}')
        assert await log.get_meta("presence") == '{"state": "away"}'
        assert await log.get_meta("nothing") is None
        await log.close()

    asyncio.run(go())
