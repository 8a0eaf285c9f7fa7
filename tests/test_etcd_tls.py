"""TLS to etcd: a replica over a member that only speaks TLS with client certificates, and clear flag errors."""

from __future__ import annotations

import argparse
import asyncio
import shutil

import pytest

from control_plane.etcd.client import EtcdClient, EtcdUnavailable, TlsFiles
from control_plane.ha.cli import check_args
from control_plane.ha.replica import start_replica
from control_plane.store.etcd import EtcdStore
from devtools.etcd import EtcdCluster, etcd_binary, make_tls
from tests.conftest import require


def _args(**changes) -> argparse.Namespace:
    base = dict(store="etcd://127.0.0.1:2379", etcd_cacert=None, etcd_cert=None, etcd_key=None, lease_ttl=3,
                api_host="127.0.0.1", advertise_api=None)
    base.update(changes)
    return argparse.Namespace(**base)


@pytest.mark.parametrize("changes, flag", [
    ({"store": "etcd:/127.0.0.1:2379"}, "--store"),
    ({"etcd_cert": "c.pem", "etcd_key": "k.pem"}, "--etcd-cacert"),
    ({"lease_ttl": 1}, "--lease-ttl"),
    ({"api_host": "0.0.0.0"}, "--advertise-api"),
])
def test_bad_replica_flags_name_the_flag(changes, flag):
    with pytest.raises(ValueError, match=flag):
        check_args(_args(**changes))


def test_a_client_certificate_needs_its_key(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ValueError, match="--etcd-key"):
        TlsFiles(ca, cert=ca).credentials()
    with pytest.raises(ValueError, match="--etcd-cacert .*cannot read"):
        TlsFiles(tmp_path / "missing.pem").credentials()


async def test_a_replica_leads_over_tls_with_client_certificates(tmp_path):
    require(etcd_binary() is not None, "etcd binary (apt-get install etcd-server; `make test` installs it as root)")
    require(shutil.which("openssl") is not None, "openssl (to make the test certificates)")
    tls = make_tls(tmp_path / "pki")
    with EtcdCluster(1, tls=tls) as etcd:
        # Plain text to a TLS-only member fails, and says so (nothing hangs).
        plain = EtcdClient(etcd.endpoints, timeout_s=1.0)
        with pytest.raises(EtcdUnavailable, match="did not answer"):
            await EtcdStore(plain).list()
        await plain.close()
        replica = await start_replica(store_url=etcd.url, tls=TlsFiles(tls["ca"], tls["client_cert"], tls["client_key"]),
                                      replica_id="tls-1", analyzer="none")
        try:
            for _ in range(200):
                if replica.leadership.is_leader:
                    break
                await asyncio.sleep(0.05)
            assert replica.leadership.is_leader and replica.engine.running
            assert (await replica.leadership.leader())["replica"] == "tls-1"
            cause, info = await replica.readiness()
            assert cause is None and info["role"] == "leader"
        finally:
            await replica.stop()
