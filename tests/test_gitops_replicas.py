"""GitOps with several replicas: a replica that does not lead tries the file again, and applies it once it leads."""

from __future__ import annotations

import shutil

from control_plane.gitops import PolicyDirectory
from control_plane.store.protocol import NotLeader


class Engine:
    """Refuses like a follower's store until it `leads`."""

    def __init__(self):
        self.leads = False
        self.applied = []

    async def apply(self, policy):
        if not self.leads:
            raise NotLeader("this replica is not the leader")
        self.applied.append(policy.metadata.name)

        class Plan:
            changes_anything = True
            message = "created"

        class Applied:
            plan = Plan()

        return Applied()


async def test_a_refused_file_is_applied_once_the_replica_leads(tmp_path):
    shutil.copy("policies/examples/minimal.yaml", tmp_path / "echo.yaml")
    engine = Engine()
    gitops = PolicyDirectory(engine, tmp_path)
    await gitops.scan()
    await gitops.scan()
    assert engine.applied == []
    engine.leads = True
    await gitops.scan()
    await gitops.scan()  # unchanged since it was applied: not again
    assert engine.applied == ["echo"]
