"""Webhooks are signed, confined and quiet: no secret and no receiver body reaches a message, event or log line.

Real HTTP against a local receiver; destinations outside loopback are never
contacted (a fake resolver stands in for DNS, and refused addresses are
refused before any connection).
"""

from __future__ import annotations

import json
import logging
import os
import re

import pytest

from control_plane.rollouts.webhooks import (
    SIGNATURE_HEADER,
    Destinations,
    WebhookClient,
    load_webhook_secret,
    redact_url,
    sign_body,
    verify_signature,
)
from tests.test_webhook_redaction import receiver  # noqa: F401 (fixture)

SECRET = b"0123456789abcdef-test-secret"


# --------------------------------------------------------------------------- signing


async def test_hooks_are_signed_over_the_timestamp_and_the_body(receiver):
    """Defect: webhooks were unsigned; a receiver could not tell Weir from anyone else."""
    hook = receiver()
    client = WebhookClient(secret=SECRET, clock=lambda: 1_700_000_000)
    result = await client.call(f"http://127.0.0.1:{hook.port}/hook", {"event": "pre-rollout", "rollout": "echo"}, 2)
    await client.close()
    assert result.ok
    headers, body = hook.requests[0]
    signature = headers[SIGNATURE_HEADER.lower()]
    assert re.fullmatch(r"t=1700000000,v1=[0-9a-f]{64}", signature)
    assert json.loads(body) == {"event": "pre-rollout", "rollout": "echo"}
    assert verify_signature(SECRET, body, signature, now=1_700_000_000 + 299)
    assert not verify_signature(SECRET, body, signature, now=1_700_000_000 + 301)  # replayed too late
    assert not verify_signature(SECRET, body + b" ", signature, now=1_700_000_000)  # body changed
    assert not verify_signature(b"another secret of 16+ bytes", body, signature, now=1_700_000_000)
    assert not verify_signature(SECRET, body, "v1=" + signature.rpartition("v1=")[2], now=1_700_000_000)
    assert sign_body(SECRET, body, 1_700_000_000) == signature


async def test_without_a_secret_hooks_go_unsigned_and_weir_says_so(receiver, caplog):
    hook = receiver()
    client = WebhookClient()
    caplog.set_level(logging.WARNING, logger="weir.webhooks")
    assert (await client.call(f"http://127.0.0.1:{hook.port}/", {}, 2)).ok
    await client.close()
    assert SIGNATURE_HEADER.lower() not in hook.requests[0][0]
    assert any("--webhook-secret-file" in r.getMessage() for r in caplog.records)


def test_the_secret_file_is_checked(tmp_path):
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load_webhook_secret(short)
    good = tmp_path / "secret"
    good.write_text(SECRET.decode() + "\n")
    os.chmod(good, 0o600)
    assert load_webhook_secret(good) == SECRET
    with pytest.raises(ValueError, match="cannot read"):
        load_webhook_secret(tmp_path / "missing")


# --------------------------------------------------------------------------- redaction, no bodies


@pytest.mark.parametrize("url, shown", [
    ("http://user:pass@hooks.example/hook?token=abc&x=1", "http://***@hooks.example/hook?token=***&x=***"),
    ("https://hooks.example:8443/a/b", "https://hooks.example:8443/a/b"),
    ("https://hooks.example/?sig", "https://hooks.example/?sig=***"),
    ("http://h/#frag", "http://h/#***"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


# --------------------------------------------------------------------------- destinations


def resolver(table):
    async def resolve(host, port):
        return table[host]
    return resolve


@pytest.mark.parametrize("url, fragment", [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local or cloud-metadata address"),
    ("http://[fe80::1]/hook", "fe80::1 is a link-local"),
    ("http://[::ffff:169.254.169.254]/hook", "169.254.169.254 is a link-local"),
    ("http://[fd00:ec2::254]/hook", "is a link-local or cloud-metadata address"),
    ("http://0.0.0.0:9/hook", "the unspecified address"),
    ("http://metadata.internal/computeMetadata/v1/", "169.254.169.254 is a link-local"),
])
async def test_metadata_and_link_local_destinations_are_refused(url, fragment):
    """Defect: hooks could target any address, including link-local metadata services."""
    client = WebhookClient(destinations=Destinations(resolve=resolver({"metadata.internal": ["169.254.169.254"]})))
    result = await client.call(url, {}, 2)
    await client.close()
    assert not result.ok and result.attempts == 1
    assert result.detail.startswith("destination refused: ") and fragment in result.detail
    assert "--webhook-allow" in result.detail


async def test_an_allow_list_confines_hooks_and_a_name_is_pinned_to_the_checked_address(receiver):
    hook = receiver()
    table = {"hooks.example": ["127.0.0.1"], "evil.example": ["127.0.0.1"]}
    client = WebhookClient(destinations=Destinations(["hooks.example"], resolve=resolver(table)))
    ok = await client.call(f"http://hooks.example:{hook.port}/hook", {"a": 1}, 2)
    assert ok.ok
    assert hook.requests[0][0]["host"] == f"hooks.example:{hook.port}"  # sent to the checked IP, Host kept
    refused = await client.call(f"http://evil.example:{hook.port}/hook", {}, 2)
    assert not refused.ok and "not in the webhook allow-list" in refused.detail
    direct = await client.call(f"http://127.0.0.1:{hook.port}/hook", {}, 2)
    assert not direct.ok and "not in the webhook allow-list" in direct.detail
    await client.close()
    assert len(hook.requests) == 1


async def test_a_cidr_allows_what_it_covers(receiver):
    hook = receiver()
    client = WebhookClient(destinations=Destinations(["127.0.0.0/8"]))
    assert (await client.call(f"http://127.0.0.1:{hook.port}/", {}, 2)).ok
    await client.close()
    with pytest.raises(ValueError, match="--webhook-allow"):
        Destinations(["not a host/"])


async def test_redirects_are_not_followed(receiver):
    hook = receiver(status=302)
    client = WebhookClient()
    result = await client.call(f"http://127.0.0.1:{hook.port}/", {}, 2)
    await client.close()
    assert not result.ok and result.detail.startswith("HTTP 302") and len(hook.requests) == 1
