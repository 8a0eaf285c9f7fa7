"""`weir serve` pieces: the GitOps policy directory and the safety checks on binding."""

from __future__ import annotations

import argparse
import copy
import logging

import pytest
import yaml

from analysis.analyzer import ScriptedAnalyzer
from control_plane.assembly import build_analyzer
from control_plane.cli.serve import is_loopback, serve
from control_plane.gitops import PolicyDirectory
from control_plane.rollouts.model import Phase
from control_plane.store import SQLiteStore
from tests.proxy_double import engine_with_proxies

BASE = yaml.safe_load(open("policies/examples/minimal.yaml"))


@pytest.fixture
async def engine(tmp_path):
    store = SQLiteStore(tmp_path / "weir.db")
    eng, _, _, _ = engine_with_proxies(store, ScriptedAnalyzer(("inconclusive",)))
    await eng.start(run=False)
    yield eng
    await store.close()


async def test_policy_directory_follows_the_apply_rules(engine, tmp_path, caplog):
    """GitOps applies files with the API's rules: unchanged files change nothing, edits update in place."""
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
    with caplog.at_level(logging.ERROR, logger="weir.gitops"):
        await watcher.scan()
    assert [r.name for r in await engine.list()] == ["echo"]
    assert "spec.strategy.canary.steps[0].weight" in caplog.text and "broken.yaml" in caplog.text
    # Unchanged files are not applied again; a touched file with the same policy changes nothing either.
    await watcher.scan()
    (folder / "echo.yaml").write_text(yaml.safe_dump(BASE) + "\n# touched\n")
    await watcher.scan()
    assert (await engine.get("echo")).revision == 1
    for _ in range(3):
        await engine.tick()
    # A changed file updates the active rollout in place, as its next revision.
    changed = copy.deepcopy(BASE)
    changed["spec"]["strategy"]["canary"]["steps"] = [{"weight": 20}, {"weight": 100}]
    (folder / "echo.yaml").write_text(yaml.safe_dump(changed))
    with caplog.at_level(logging.INFO, logger="weir.gitops"):
        await watcher.scan()
    rollout = await engine.get("echo")
    assert rollout.revision == 2 and rollout.phase is Phase.PROGRESSING and rollout.weight == 20
    assert "updated in place (steps and strategy changed)" in caplog.text
    # A file whose stable is not what is live is refused with the live version named.
    stale = copy.deepcopy(changed)
    stale["spec"]["stable"]["version"] = "v0"
    (folder / "echo.yaml").write_text(yaml.safe_dump(stale))
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="weir.gitops"):
        await watcher.scan()
    assert "serves 'v1'" in caplog.text and (await engine.get("echo")).revision == 2


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


async def test_a_taken_xds_port_is_refused_at_once():
    """Defect: gRPC's SO_REUSEPORT let a second server bind a running one's port and start cleanly."""
    from xds.server import PortInUse, XdsServer

    first = XdsServer()
    port = await first.start("127.0.0.1", 0)
    try:
        with pytest.raises(PortInUse, match="is another `weir serve` running"):
            await XdsServer().start("127.0.0.1", port)
    finally:
        await first.stop()


def _serve_args(tmp_path, **overrides):
    args = dict(api_host="127.0.0.1", api_port=0, xds_host="127.0.0.1", xds_port=0, db=str(tmp_path / "w.db"),
                tokens=None, policies=None, listen_address="127.0.0.1", allow_remote=False, tick=1.0, analyzer="none")
    args.update(overrides)
    return argparse.Namespace(**args)


@pytest.mark.parametrize("which", ["api_port", "xds_port"])
def test_serve_fails_on_a_taken_port_before_saying_it_runs(tmp_path, capsys, which):
    import socket

    from control_plane.cli.serve import main

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        assert main(_serve_args(tmp_path, **{which: taken.getsockname()[1]})) == 1
    finally:
        taken.close()
    captured = capsys.readouterr()
    assert "weir: xDS on" not in captured.out  # no success line
    assert "is another `weir serve` running?" in captured.err
