"""Measure how many sends per second a fake Meta API absorbs (a capacity check, not a test).

Example (start the fake with its own rate limit off and 200 ms latency)::

    python -m tests.fakes.meta --port 18080 --rate 0 --latency-ms 200 &
    python -m tests.fakes.loadcheck --url http://127.0.0.1:18080 --concurrency 400 --duration 10

``--processes N`` splits the concurrency over N client processes and ``--client raw`` (the default) uses a
minimal keep-alive HTTP/1.1 client on raw asyncio streams, so that the client is not the bottleneck;
``--client httpx`` measures with httpx, as the real sender uses it.
Prints one JSON line: requests, errors, seconds, req/s and latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from typing import Any

import httpx

BODY = {
    "messaging_product": "whatsapp",
    "recipient_type": "individual",
    "to": "+16505551234",
    "type": "text",
    "text": {"preview_url": False, "body": "load"},
}


async def _worker(client: httpx.AsyncClient, url: str, end: float, latencies: list[float], errors: list[int]) -> None:
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            response = await client.post(url, json=BODY)
            if response.status_code != 200:
                errors.append(response.status_code)
        except httpx.HTTPError:
            errors.append(0)
        latencies.append(time.monotonic() - started)


async def _raw_worker(url: str, token: str, end: float, latencies: list[float], errors: list[int]) -> None:
    """One keep-alive connection sending pre-built requests and reading Content-Length framed replies."""
    target = httpx.URL(url)
    body = json.dumps(BODY).encode()
    request = (
        f"POST {target.raw_path.decode()} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        while time.monotonic() < end:
            started = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if status != 200:
                errors.append(status)
            latencies.append(time.monotonic() - started)
    except (OSError, asyncio.IncompleteReadError):
        errors.append(0)
    finally:
        writer.close()


async def _run(url: str, token: str, concurrency: int, duration: float, client: str) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors: list[int] = []
    started = time.monotonic()
    end = started + duration
    if client == "raw":
        await asyncio.gather(*(_raw_worker(url, token, end, latencies, errors) for _ in range(concurrency)))
    else:
        async with httpx.AsyncClient(limits=limits, headers=headers, timeout=30.0) as http:
            await asyncio.gather(*(_worker(http, url, end, latencies, errors) for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {"requests": len(latencies), "errors": len(errors), "seconds": elapsed, "latencies": latencies}


def _process(args: tuple[str, str, int, float, str]) -> dict[str, Any]:
    try:
        import uvloop

        return uvloop.run(_run(*args))
    except ImportError:
        return asyncio.run(_run(*args))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="base URL of the fake Meta API")
    parser.add_argument("--token", default="fake-meta-token")
    parser.add_argument("--phone-number-id", default="106540352242922")
    parser.add_argument("--concurrency", type=int, default=400)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    args = parser.parse_args(argv)
    url = f"{args.url.rstrip('/')}/v21.0/{args.phone_number_id}/messages"
    per_process = max(1, args.concurrency // args.processes)
    jobs = [(url, args.token, per_process, args.duration, args.client)] * args.processes
    if args.processes == 1:
        results = [_process(jobs[0])]
    else:
        with multiprocessing.Pool(args.processes) as pool:
            results = pool.map(_process, jobs)
    latencies = sorted(x for r in results for x in r["latencies"])
    seconds = max(r["seconds"] for r in results)
    requests = sum(r["requests"] for r in results)

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1) if latencies else 0.0

    summary = {
        "concurrency": per_process * args.processes,
        "processes": args.processes,
        "client": args.client,
        "requests": requests,
        "errors": sum(r["errors"] for r in results),
        "seconds": round(seconds, 2),
        "req_per_s": round(requests / seconds, 1),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
