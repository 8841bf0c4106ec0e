"""An open-loop load generator: POST `?wait=true` turns at a fixed rate, whatever the answers do.

wrk keeps a fixed number of requests in flight (closed loop); this sends request i at
t0 + i/rate on raw keep-alive HTTP/1.1 connections and times each turn from that scheduled
instant, so a platform falling behind shows as latency (no coordinated omission). Raw
sockets keep the client cheap (its CPU is reported beside the numbers).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class OpenLoopResult:
    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[int | str] = field(default_factory=Counter)
    late_sends: int = 0
    wall_s: float = 0.0
    client_cpu_s: float = 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status


async def run_open_loop(
    base_url: str,
    key: str,
    sessions: list[str],
    rate: float,
    duration_s: float,
    connections: int,
    body: bytes = b'{"content":"hi"}',
) -> OpenLoopResult:
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [
        (
            f"POST /v1/sessions/{session}/messages?wait=true HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for session in sessions
    ]
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(_Connection(*await asyncio.open_connection(host, port)))
    result = OpenLoopResult()
    total = int(rate * duration_s)
    cpu0, start = time.process_time(), time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()

    async def one(index: int, scheduled: float) -> None:
        connection = await idle.get()
        try:
            status: int | str = await connection.request(requests[index % len(requests)])
        except (OSError, asyncio.IncompleteReadError) as exc:
            status = type(exc).__name__
            connection = _Connection(*await asyncio.open_connection(host, port))
        idle.put_nowait(connection)
        result.outcomes[status] += 1
        if status == 200:
            result.latencies.append(time.perf_counter() - scheduled)

    for index in range(total):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.01:
            result.late_sends += 1
        task = asyncio.create_task(one(index, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    result.wall_s = time.perf_counter() - start
    result.client_cpu_s = time.process_time() - cpu0
    while not idle.empty():
        idle.get_nowait().writer.close()
    return result
