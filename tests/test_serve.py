"""`weir serve` pieces: the GitOps policy directory and the safety checks on binding."""

from __future__ import annotations

import argparse
import copy
import logging

import pytest
import yaml

from analysis.analyzer import ScriptedAnalyzer
from control_plane.rollouts.engine import Engine
from control_plane.rollouts.model import Phase
from control_plane.assembly import build_analyzer
from control_plane.cli.serve import PolicyDirectory, is_loopback, serve
from control_plane.store import SQLiteStore
from xds.cache import SnapshotCache
from xds.status import StatusRegistry

BASE = yaml.safe_load(open("policies/examples/minimal.yaml"))


@pytest.fixture
async def engine(tmp_path):
    store = SQLiteStore(tmp_path / "weir.db")
    eng = Engine(store, SnapshotCache(), StatusRegistry(), ScriptedAnalyzer(("inconclusive",)), listen_address="127.0.0.1")
    await eng.start()
    await eng.stop()
    yield eng
    await store.close()


async def test_policy_directory_applies_valid_files_once_and_reports_bad_ones(engine, tmp_path, caplog):
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "echo.yaml").write_text(yaml.safe_dump(BASE))
    bad = copy.deepcopy(BASE)
    bad["metadata"]["name"] = "broken"
    bad["spec"]["service"]["name"] = "broken"
    bad["spec"]["strategy"]["canary"]["steps"][0]["weight"] = 120
    (folder / "broken.yaml").write_text(yaml.safe_dump(bad))
    (folder / "notes.txt").write_text("not a policy")
    watcher = PolicyDirectory(engine, folder)
    with caplog.at_level(logging.ERROR, logger="weir.serve"):
        await watcher.scan()
    assert [r.name for r in await engine.list()] == ["echo"]
    assert "spec.strategy.canary.steps[0].weight" in caplog.text and "broken.yaml" in caplog.text
    # Unchanged files are not applied again.
    await watcher.scan()
    assert (await engine.get("echo")).revision == 1
    # A changed file for an active rollout is refused (abort first), and said so.
    changed = copy.deepcopy(BASE)
    changed["spec"]["strategy"]["canary"]["steps"] = [{"weight": 20}, {"weight": 100}]
    (folder / "echo.yaml").write_text(yaml.safe_dump(changed))
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="weir.serve"):
        await watcher.scan()
    assert "abort it first" in caplog.text
    # Once the old rollout ended, the changed file becomes a new revision.
    await engine.act("echo", "abort")
    for _ in range(3):
        await engine.tick()
    assert (await engine.get("echo")).phase is Phase.ROLLED_BACK
    (folder / "echo.yaml").write_text(yaml.safe_dump(changed) + "\n# touched\n")
    await watcher.scan()
    rollout = await engine.get("echo")
    assert rollout.revision == 2 and rollout.phase is Phase.PENDING


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


async def test_remote_binding_needs_explicit_flag_and_tokens(capsys, tmp_path):
    args = argparse.Namespace(api_host="0.0.0.0", api_port=0, xds_host="127.0.0.1", xds_port=0, db=str(tmp_path / "w.db"),
                              tokens=None, policies=None, listen_address="127.0.0.1", allow_remote=False, tick=1.0,
                              analyzer=None)
    assert await serve(args) == 2
    assert "--allow-remote" in capsys.readouterr().err
    args.allow_remote = True
    assert await serve(args) == 2
    assert "--tokens" in capsys.readouterr().err


def test_analyzer_flag():
    assert build_analyzer("scripted:pass,fail").script == ["pass", "fail"]
    with pytest.raises(ValueError, match="pass, fail or inconclusive"):
        build_analyzer("scripted:maybe")
    with pytest.raises(ValueError, match="unknown analyzer"):
        build_analyzer("magic")
    assert type(build_analyzer("sources")).__name__ == "SourceAnalyzer"
    assert type(build_analyzer("none")).__name__ == "NoEvidenceAnalyzer"
