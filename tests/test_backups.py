"""The backup check against moto's S3, with objects laid out as K3s and CloudNativePG write them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
import pytest
from moto import mock_aws

from sophia_infra.tools import backups
from tests.conftest import parse_with

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def _ts(hours_ago: float) -> int:
    return int((NOW - timedelta(hours=hours_ago)).timestamp())


def _backup_info(status: str, hours_ago: float) -> bytes:
    end = NOW - timedelta(hours=hours_ago)
    return (f"backup_id={end:%Y%m%dT%H%M%S}\nstatus={status}\nbegin_time={end - timedelta(minutes=9)}\n"
            f"end_time={end.isoformat(sep=' ')}\nserver_name=sophia-postgres\n").encode()


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="sophia-ai-backups")
        yield client


def _put(s3, key: str, body: bytes = b"x"):
    s3.put_object(Bucket="sophia-ai-backups", Key=key, Body=body)


def _cfg(postgres=True, **backup):
    def change(r):
        if postgres:
            r["platform"] = {"postgres": {"backup": {"enabled": True, "bucket": "sophia-ai-backups",
                                                     "endpoint": "https://s3.us-east-1.amazonaws.com", "path": "postgres",
                                                     **backup}}}
        else:  # production backs PostgreSQL up unless it says why not
            r["platform"] = {"postgres": {"backup": {"optOut": "a test of the etcd check alone"}}}
    return parse_with("production", change)


def _layout(s3, etcd_hours: float, pg_hours: float):
    for h in (etcd_hours + 6, etcd_hours):
        _put(s3, f"etcd/etcd-snapshot-sophia-control-{_ts(h)}.zip")
        _put(s3, f"etcd/.metadata/etcd-snapshot-sophia-control-{_ts(h)}", b"{}")
    _put(s3, f"etcd/on-demand-sophia-control-{_ts(etcd_hours + 30)}.zip")
    for h, status in ((pg_hours + 24, "DONE"), (pg_hours, "DONE"), (0.2, "STARTED")):
        backup_id = f"{NOW - timedelta(hours=h):%Y%m%dT%H%M%S}"
        _put(s3, f"postgres/sophia-postgres/base/{backup_id}/backup.info", _backup_info(status, h))
        _put(s3, f"postgres/sophia-postgres/base/{backup_id}/data.tar")
    _put(s3, "postgres/sophia-postgres/wals/0000000100000000/000000010000000000000001.gz")


def test_fresh_backups_pass(s3):
    _layout(s3, etcd_hours=2, pg_hours=5)
    targets = backups.targets_for(_cfg(), client_for=lambda *_: s3)
    lines, ok = backups.report(targets, NOW)
    assert ok, lines
    assert lines[0].startswith("ok   etcd snapshot: s3://sophia-ai-backups/etcd/etcd-snapshot-sophia-control-")
    assert "2.0 h ago (limit 12 h)" in lines[0]
    assert "5.0 h ago (limit 26 h)" in lines[1]  # the running backup (0.2 h) does not count


def test_stale_etcd_snapshot_fails(s3):
    _layout(s3, etcd_hours=13, pg_hours=5)
    lines, ok = backups.report(backups.targets_for(_cfg(), client_for=lambda *_: s3), NOW)
    assert not ok and lines[0].startswith("FAIL etcd snapshot") and lines[1].startswith("ok")


def test_stale_base_backup_fails(s3):
    _layout(s3, etcd_hours=1, pg_hours=30)
    lines, ok = backups.report(backups.targets_for(_cfg(), client_for=lambda *_: s3), NOW)
    assert not ok and lines[1].startswith("FAIL PostgreSQL base backup")


def test_missing_backups_fail(s3):
    lines, ok = backups.report(backups.targets_for(_cfg(), client_for=lambda *_: s3), NOW)
    assert not ok and lines == ["FAIL etcd snapshot: none found in s3://sophia-ai-backups",
                                "FAIL PostgreSQL base backup: none found in s3://sophia-ai-backups"]


def test_the_limit_follows_the_schedule(s3):
    # A weekly base backup five days old is on time; the daily one would be late.
    _layout(s3, etcd_hours=1, pg_hours=5 * 24)
    lines, ok = backups.report(backups.targets_for(_cfg(schedule="0 0 3 * * 0"), client_for=lambda *_: s3), NOW)
    assert ok, lines
    assert "120.0 h ago (limit 169 h)" in lines[1]
    lines, ok = backups.report(backups.targets_for(_cfg(), client_for=lambda *_: s3), NOW)
    assert not ok and lines[1].startswith("FAIL PostgreSQL base backup") and "(limit 26 h)" in lines[1]


def test_etcd_limit_follows_a_sparser_schedule(s3):
    _layout(s3, etcd_hours=20, pg_hours=5)
    daily = _cfg()
    daily = daily.model_copy(update={"k3s": daily.k3s.model_copy(update={"etcd_snapshot_schedule": "0 3 * * *"})})
    # daily: 25 h allowed, above the configured 12 h
    lines, ok = backups.report(backups.targets_for(daily, client_for=lambda *_: s3), NOW)
    assert ok and "(limit 25 h)" in lines[0], lines


def test_only_configured_backups_are_checked(s3):
    _layout(s3, etcd_hours=1, pg_hours=1)
    targets = backups.targets_for(_cfg(postgres=False), client_for=lambda *_: s3)
    assert [t.what for t in targets] == ["etcd snapshot"]


# ----------------------------------------------------------------------------- could not check: one sentence

def test_missing_bucket_is_could_not_check():
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")  # no bucket created
        with pytest.raises(backups.BackupCheckError) as err:
            backups.targets_for(_cfg(), client_for=lambda *_: s3)
    assert str(err.value) == ("cannot check the etcd snapshots in s3://sophia-ai-backups (https://s3.us-east-1.amazonaws.com): "
                              "the bucket does not exist (NoSuchBucket); check sophia:k3s.etcdS3.bucket")


def test_access_denied_is_could_not_check():
    from botocore.stub import Stubber

    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(s3) as stub:
        stub.add_client_error("list_objects_v2", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(backups.BackupCheckError, match=r"access was denied \(AccessDenied\); check that the key pair may list and read the bucket$"):
            backups.targets_for(_cfg(postgres=False), client_for=lambda *_: s3)


def test_unreachable_endpoint_is_could_not_check(monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    cfg = parse_with("production", lambda r: r["k3s"]["etcdS3"].update(endpoint=f"127.0.0.1:{port}"))
    with pytest.raises(backups.BackupCheckError) as err:
        backups.targets_for(cfg)
    assert str(err.value) == (f"cannot check the etcd snapshots in s3://sophia-ai-backups (https://127.0.0.1:{port}): "
                              "the endpoint cannot be reached (EndpointConnectionError); check sophia:k3s.etcdS3.endpoint and the network")
