"""GitOps never stalls the event loop: big files are parsed in a thread, huge ones refused unread (issue 13).

The finding: a 10 MB policy file pushed /healthz to 19.9 s, and xDS with it.
The loop's responsiveness is measured, not the machine's speed: a ticker task
records its largest scheduling delay while a real parse runs, and that delay
must be a small part of the parse (a parse on the loop would be all of it).
"""

from __future__ import annotations

import asyncio
import logging
import time

import yaml

from control_plane import gitops
from control_plane.gitops import PolicyDirectory
from tests.test_api import make_api  # noqa: F401 (fixture)

MINIMAL = open("policies/examples/minimal.yaml").read()
MAX_POLICY_BYTES = 1_048_576  # control_plane.gitops.MAX_POLICY_BYTES


def policy(name: str, padding: int = 0) -> str:
    data = yaml.safe_load(MINIMAL)
    data["metadata"]["name"] = data["spec"]["service"]["name"] = name
    data["spec"]["service"]["domains"] = [f"{name}.example"]
    return yaml.safe_dump(data) + ("# " + "x" * 98 + "\n") * (padding // 100)


async def test_a_large_policy_is_parsed_off_the_loop_and_a_10mb_one_is_refused_unread(make_api, tmp_path,
                                                                                      monkeypatch, caplog):
    client, engine, _, _ = await make_api()  # /healthz is open with tokens too
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "a-large.yaml").write_text(policy("large", padding=200_000))  # under the limit: parsed
    (folder / "b-huge.yaml").write_text(policy("huge", padding=10 * 1_048_576))  # 10 MB
    assert (folder / "b-huge.yaml").stat().st_size > 10 * MAX_POLICY_BYTES

    parses: list[tuple[str, float, float]] = []
    real_parse = gitops.parse_policy

    def timed_parse(text, *, source=None):
        start = time.monotonic()
        try:
            return real_parse(text, source=source)
        finally:
            parses.append((source, start, time.monotonic()))

    monkeypatch.setattr(gitops, "parse_policy", timed_parse)
    ticks: list[float] = []
    health: list[float] = []

    async def ticker(done: asyncio.Event):
        while not done.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.001)

    async def prober(done: asyncio.Event):
        while not done.is_set():
            assert (await client.get("/healthz")).status_code == 200
            health.append(time.monotonic())
            await asyncio.sleep(0.005)

    done = asyncio.Event()
    caplog.set_level(logging.INFO, logger="weir.gitops")
    background = [asyncio.create_task(ticker(done)), asyncio.create_task(prober(done))]
    await asyncio.sleep(0.05)
    await PolicyDirectory(engine, folder).scan()
    done.set()
    await asyncio.gather(*background)

    assert [r.name for r in await engine.list()] == ["large"]
    assert [source.rsplit("/", 1)[-1] for source, _, _ in parses] == ["a-large.yaml"]  # the huge one never parsed
    refusal = [r.getMessage() for r in caplog.records if "b-huge.yaml" in r.getMessage()]
    assert refusal and "not applied: the file is 10.1 MiB; a policy file is at most 1048576 bytes" in refusal[0]

    _, start, end = parses[0]
    during = [t for t in ticks if start <= t <= end]
    gaps = [b - a for a, b in zip([start, *during], [*during, end])]
    assert len(during) > 10, "the loop ran while the policy was parsed"
    assert max(gaps) < (end - start) / 3, (max(gaps), end - start)
    assert [t for t in health if start <= t <= end], "/healthz answered during the parse"
