"""A small concurrent HTTP client for integration tests that need every response body (hey and wrk only count)."""

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer at all (connection refused or reset, timeout)
    body: dict | None
    headers: dict

    @property
    def error(self) -> str | None:
        return (self.body or {}).get("error")


async def _post_all(
    url: str,
    bodies: Sequence[dict],
    *,
    concurrency: int,
    headers: dict | None,
    on_progress: Callable[[int], None] | None,
    timeout_s: float,
) -> list[Answer]:
    answers: list[Answer | None] = [None] * len(bodies)
    next_index = 0
    done = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:

        async def worker() -> None:
            nonlocal next_index, done
            while next_index < len(bodies):
                index, next_index = next_index, next_index + 1
                try:
                    response = await client.post(url, json=bodies[index], headers=headers)
                    try:
                        body = response.json()
                    except json.JSONDecodeError:
                        body = {"raw": response.text[:200]}
                    answers[index] = Answer(response.status_code, body, dict(response.headers))
                except httpx.HTTPError as exc:
                    answers[index] = Answer(0, {"raw": repr(exc)}, {})
                done += 1
                if on_progress:
                    on_progress(done)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers  # type: ignore[return-value]


def post_all(
    url: str,
    bodies: Sequence[dict],
    *,
    concurrency: int = 50,
    headers: dict | None = None,
    on_progress: Callable[[int], None] | None = None,
    timeout_s: float = 30.0,
) -> list[Answer]:
    """POST every body (JSON) with `concurrency` requests in flight; the answers in the order of `bodies`."""
    return asyncio.run(
        _post_all(url, bodies, concurrency=concurrency, headers=headers, on_progress=on_progress, timeout_s=timeout_s)
    )
