"""The baseline of bench/drain.py: the plain outbox drain script of targets.md.

SQLite read with an id cursor -> paho-mqtt QoS 1, N events per message (100 by
default), at most `window` messages unacknowledged, the delivery cursor
written (synchronous=FULL) as PUBACKs arrive in order. No asyncio, no
framework: what a careful afternoon script does. It imports nothing from the
gateway, so its memory and start-up are those of sqlite3 + paho alone.

    .venv/bin/python bench/plain_drain.py --db DATA/rentgate.db --port 1883 \
        --topic rentgate/v1/GW-PLAIN/events

Prints one JSON line with what it did when the outbox is drained.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
import time
from collections import deque

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def envelope(gateway_id: str, rows: list[tuple[int, str]]) -> bytes:
    """The wire contract's batch envelope, spliced from stored JSON like the gateway does."""
    parts = [f'{{"seq":{seq},{payload[1:]}' for seq, payload in rows]
    return (f'{{"v":1,"gw":"{gateway_id}","events":[' + ",".join(parts) + "]}").encode()


def vm_hwm_kb() -> int:
    """This process's peak resident set (ru_maxrss would include the parent's, from fork)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--gateway-id", default="GW-PLAIN")
    parser.add_argument("--batch", type=int, default=100, help="events per message")
    parser.add_argument("--window", type=int, default=20, help="messages in flight")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")
    args = parser.parse_args()

    started = time.perf_counter()
    conn = sqlite3.connect(args.db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    delivered = conn.execute("SELECT value FROM meta WHERE key = 'delivered_seq'").fetchone()[0]

    acked: set[int] = set()
    cond = threading.Condition()
    connected = threading.Event()

    def on_publish(_c: object, _u: object, mid: int, _code: object, _p: object) -> None:
        with cond:
            acked.add(mid)
            cond.notify()

    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"plain-drain-{args.gateway_id}",
        protocol=paho.MQTTv5,
    )
    client.max_inflight_messages_set(args.window)
    client.on_publish = on_publish
    client.on_connect = lambda *_a: connected.set()
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    if not connected.wait(10):
        raise SystemExit("plain drain: no CONNACK")

    sent = delivered
    inflight: deque[tuple[int, int]] = deque()
    messages = cursor_writes = 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        while len(inflight) < args.window:
            rows = conn.execute(
                "SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (sent, args.batch),
            ).fetchall()
            if not rows:
                break
            info = client.publish(args.topic, envelope(args.gateway_id, rows), qos=1)
            inflight.append((info.mid, rows[-1][0]))
            sent = rows[-1][0]
            messages += 1
        if not inflight:
            break
        with cond:
            cond.wait_for(lambda: inflight[0][0] in acked, timeout=30)
            while inflight and inflight[0][0] in acked:
                mid, last = inflight.popleft()
                acked.discard(mid)
                delivered = last
        conn.execute("UPDATE meta SET value = ? WHERE key = 'delivered_seq'", (delivered,))
        cursor_writes += 1
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    conn.close()
    print(
        json.dumps(
            {
                "delivered_seq": delivered,
                "messages": messages,
                "cursor_writes": cursor_writes,
                "seconds": round(elapsed, 3),
                "vm_hwm_kb": vm_hwm_kb(),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
