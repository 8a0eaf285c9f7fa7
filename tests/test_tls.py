"""`weir certs`: a development CA and certificates that match what TLS clients verify; options checked early."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from control_plane import cli
from control_plane.tls import CertError, ServerTls, issue_dev_certs, read_pem_files
from xds.bootstrap import render_bootstrap
from xds.tls import ClientTls


def load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_have_the_names_usages_and_modes_asked_for(tmp_path, capsys):
    assert cli.main(["certs", "--dir", str(tmp_path), "--server-name", "localhost", "--server-name", "weir.svc",
                     "--server-ip", "127.0.0.1", "--client", "gw-1"]) == 0
    assert "created CA" in capsys.readouterr().out
    server = load(tmp_path / "server.crt")
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "weir.svc"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    # Client use too: a replica presents it to the leader's xDS port (the access-log relay).
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    client = load(tmp_path / "client-gw-1.crt")
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert client.issuer == load(tmp_path / "ca.crt").subject
    for key in ("ca.key", "server.key", "client-gw-1.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600
    ServerTls(tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.crt").read()

    # The CA is reused for a later client; existing files are not overwritten without --force.
    assert cli.main(["certs", "--dir", str(tmp_path), "--client", "gw-2"]) == 0
    assert "reused CA" in capsys.readouterr().out
    assert load(tmp_path / "client-gw-2.crt").issuer == client.issuer
    assert cli.main(["certs", "--dir", str(tmp_path), "--client", "gw-2"]) == 1
    assert "already exist; pass --force" in capsys.readouterr().err


def test_bad_names_and_mismatched_keys_are_pointed_errors(tmp_path):
    with pytest.raises(CertError, match="--server-ip 'localhost' is not an IP address"):
        issue_dev_certs(tmp_path, server_ips=["localhost"])
    with pytest.raises(CertError, match="client name"):
        issue_dev_certs(tmp_path, clients=["../etc"])
    issue_dev_certs(tmp_path, server_names=["localhost"], clients=["a"])
    with pytest.raises(CertError, match="does not belong to the certificate"):
        read_pem_files(tmp_path / "server.crt", tmp_path / "client-a.key")
    (tmp_path / "junk.crt").write_text("junk")
    with pytest.raises(CertError, match="not a PEM certificate"):
        read_pem_files(tmp_path / "junk.crt", tmp_path / "server.key")


def test_bootstrap_pins_the_server_name_and_sends_the_client_certificate(tmp_path):
    tls = ClientTls(tmp_path / "c.crt", tmp_path / "c.key", tmp_path / "ca.crt")
    by_name = render_bootstrap("gw-1", "gw", "weir.svc", 18000, tls=tls)["static_resources"]["clusters"][0]
    socket = by_name["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    context = socket["typed_config"]
    assert context["sni"] == "weir.svc"
    common = context["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]
    assert common["tls_certificates"][0]["certificate_chain"]["filename"] == str((tmp_path / "c.crt").resolve())
    assert common["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "weir.svc"}}]
    by_ip = render_bootstrap("gw-1", "gw", "127.0.0.1", 18000, tls=tls)["static_resources"]["clusters"][0]
    assert "sni" not in by_ip["transport_socket"]["typed_config"]
    assert by_ip["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"][
        "match_typed_subject_alt_names"] == [{"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}}]
    assert "transport_socket" not in render_bootstrap("gw-1", "gw", "127.0.0.1", 18000)["static_resources"][
        "clusters"][0]


@pytest.mark.parametrize("extra, message", [
    (["--xds-tls-cert", "/nonexistent.crt"], "xDS TLS needs --xds-tls-cert and --xds-tls-key"),
    (["--xds-tls-cert", "/nonexistent.crt", "--xds-tls-key", "/nonexistent.key"], "/nonexistent.crt: cannot read"),
    (["--api-tls-key", "/x.key"], "API TLS needs both"),
    (["--webhook-secret-file", "/nonexistent"], "--webhook-secret-file /nonexistent: cannot read"),
    (["--webhook-allow", "bad host/"], "--webhook-allow"),
])
def test_serve_refuses_bad_security_options_before_starting(tmp_path, extra, message, capsys):
    code = cli.main(["serve", "--db", str(tmp_path / "w.db"), "--api-port", "0", "--xds-port", "0", *extra])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "w.db").exists()  # nothing started
