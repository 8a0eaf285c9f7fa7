"""Faults injected under the real SQLite file: Weir notices, refuses writes with 503 and the cause, loses nothing.

Every fault is real: the file is deleted, replaced, garbled or truncated on
disk. A full disk is made with SQLite's own ``PRAGMA max_page_count`` (the
database then fails a write exactly as on a full disk, SQLITE_FULL); this
machine has no tiny filesystem to fill.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from control_plane.store import SQLiteStore
from control_plane.store.faults import StoreUnavailable
from tests.test_api import OP, VIEW, assert_problem, make_api, policy_yaml, submit  # noqa: F401 (fixture)


def service(name: str) -> dict:
    return {"name": name, "service": name, "domains": (f"{name}.example",)}


def on_store_thread(store: SQLiteStore, fn):
    return store._executor.submit(fn).result()


async def names_and_events(store: SQLiteStore) -> tuple[list[str], int]:
    rollouts = await store.list()
    events = 0
    for r in rollouts:
        events += len(await store.events(r.name))
    return [r.name for r in rollouts], events


async def test_a_deleted_database_is_noticed_and_its_data_saved(make_api):
    """Defect: with the file deleted, /readyz said 200 and writes were accepted; a restart had no rollouts."""
    client, engine, _, _ = await make_api()
    await submit(client)
    await submit(client, **service("other"))
    before = await names_and_events(engine.store)
    path = engine.store.path
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)

    ready = assert_problem(await client.get("/readyz"), 503, "not-ready")
    assert f"the database file {path} was deleted while Weir was running" in ready["detail"]
    body = assert_problem(await client.post("/v1/rollouts", content=policy_yaml(**service("third")),
                                            headers=OP), 503, "store-unavailable")
    assert "was deleted" in body["detail"] and "writes are refused" in body["detail"]
    assert_problem(await client.post("/v1/rollouts/echo/pause", headers=OP), 503, "store-unavailable")
    assert (await client.get("/v1/rollouts", headers=VIEW)).status_code == 200  # reads still answer

    rescued = engine.store.rescued
    assert rescued is not None and f"Weir saved all it had to {rescued}" in body["detail"]
    copy = SQLiteStore(rescued)
    try:
        assert await names_and_events(copy) == before  # data lost: none
    finally:
        await copy.close()


async def test_a_replaced_database_is_noticed(make_api, tmp_path):
    client, engine, _, _ = await make_api()
    await submit(client)
    other = SQLiteStore(tmp_path / "someone-else.db")
    await other.close()
    os.replace(tmp_path / "someone-else.db", engine.store.path)
    ready = assert_problem(await client.get("/readyz"), 503)
    assert "was replaced by another file" in ready["detail"]
    assert_problem(await client.post("/v1/rollouts/echo/pause", headers=OP), 503, "store-unavailable")
    assert engine.store.rescued is not None


async def test_a_database_garbled_while_running_is_noticed(make_api):
    client, engine, _, _ = await make_api()
    for i in range(20):
        await submit(client, **service(f"r{i}"))
    store = engine.store
    on_store_thread(store, lambda: store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
    assert os.path.getsize(store.path) > 3 * 4096
    with open(store.path, "r+b") as f:  # pages 3 and 4, the header intact
        f.seek(2 * 4096)
        f.write(b"\xa5" * 8192)
    ready = assert_problem(await client.get("/readyz"), 503)
    assert f"the database file {store.path} is corrupt" in ready["detail"] and "restore it from a backup" in ready["detail"]
    assert "\n" not in ready["detail"]
    assert_problem(await client.post("/v1/rollouts/r1/pause", headers=OP), 503, "store-unavailable")


async def test_a_garbled_header_refuses_the_next_write(make_api):
    client, engine, _, _ = await make_api()
    await submit(client)
    with open(engine.store.path, "r+b") as f:
        f.write(b"not a database!!")
    body = assert_problem(await client.post("/v1/rollouts/echo/pause", headers=OP), 503, "store-unavailable")
    assert "no longer starts with the SQLite header" in body["detail"]


async def test_a_full_disk_is_a_503_with_the_real_cause_and_loses_nothing(make_api):
    """Defect: a full disk gave 500 "cannot rollback - no transaction is active", hiding SQLITE_FULL."""
    client, engine, _, _ = await make_api()
    await submit(client)
    store = engine.store
    before = await names_and_events(store)
    pages = on_store_thread(store, lambda: store._conn.execute("PRAGMA page_count").fetchone()[0])
    on_store_thread(store, lambda: store._conn.execute(f"PRAGMA max_page_count = {pages}"))  # the disk is full

    refused = 0
    for i in range(5):  # policies large enough to need new pages
        response = await client.post("/v1/rollouts", content=policy_yaml(**service(f"big{i}"))
                                     + f"# {'x' * 60_000}\n", headers=OP)
        if response.status_code == 201:
            continue
        body = assert_problem(response, 503, "store-unavailable")
        assert f"the disk holding {store.path} is full" in body["detail"] and "rollback" not in body["detail"]
        refused += 1
    assert refused
    ready = assert_problem(await client.get("/readyz"), 503)
    assert "is full" in ready["detail"]
    names, _ = await names_and_events(store)
    assert set(before[0]) <= set(names)  # nothing earlier was lost, nothing half-written

    on_store_thread(store, lambda: store._conn.execute("PRAGMA max_page_count = 1000000"))  # space freed
    assert (await client.post("/v1/rollouts", content=policy_yaml(**service("later")),
                              headers=OP)).status_code == 201
    assert (await client.get("/readyz")).status_code == 200
    after = await names_and_events(store)
    assert set(before[0]) | {"later"} <= set(after[0]) and after[1] > before[1]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_starting_on_a_corrupt_file_is_a_pointed_error(tmp_path, damage):
    """Defect: a corrupt database was found only at restart, with a traceback."""
    import asyncio

    path = tmp_path / "weir.db"
    if damage == "garbage":
        path.write_bytes(b"\x00garbage" * 4096)
    else:
        async def fill():
            from control_plane.rollouts.model import Rollout

            store = SQLiteStore(path)

            for i in range(40):
                await store.create(Rollout(name=f"r{i}", service=f"s{i}", group="*", policy={"pad": "x" * 3000},
                                           policy_hash="h", stable_version="v1", canary_version="v2"), [])
            await store.close()
        asyncio.run(fill())
        os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(StoreUnavailable) as info:
        SQLiteStore(path)
    assert str(info.value).startswith(f"the database file {path} is corrupt")
    assert f"mv {path} {path}.corrupt" in str(info.value)

    run = subprocess.run([sys.executable, "-m", "control_plane.cli", "serve", "--db", str(path), "--api-port", "0",
                          "--xds-port", "0"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.startswith(f"error: the database file {path} is corrupt"), run.stderr
    assert "Traceback" not in run.stderr
