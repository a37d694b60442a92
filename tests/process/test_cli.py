"""`python app.py tenants|keys|doctor`, run as the operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from jobq.tenancy.tenants import TenantRegistry, hash_key

ROOT = Path(__file__).resolve().parents[2]  # the repository root


def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOBQ_DATA_DIR": str(data_dir), "JOBQ_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "app.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_tenant_and_keys_are_stored_hashed_and_shown_once(tmp_path: Path) -> None:
    created = run(tmp_path, "tenants", "add", "acme")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("jq_")
    read_only = run(tmp_path, "keys", "add", "acme", "--read-only").stdout.strip()
    admin = run(tmp_path, "keys", "add", "--admin").stdout.strip()

    text = (tmp_path / "tenants.json").read_text()
    for secret in (key, read_only, admin):
        assert secret not in text
    doc = orjson.loads(text)
    acme = doc["tenants"]["acme"]
    assert [k["role"] for k in acme["keys"]] == ["write", "read"]
    assert acme["keys"][0]["hash"] == hash_key(key)
    assert acme["webhookSecrets"][0].startswith("whsec_")
    assert (tmp_path / "tenants.json").stat().st_mode & 0o077 == 0

    registry = TenantRegistry(tmp_path / "tenants.json", lambda: 0.0)
    principal = registry.authenticate(read_only)
    assert principal is not None
    assert (principal.tenant_id, principal.role) == ("acme", "read")
    admin_principal = registry.authenticate(admin)
    assert admin_principal is not None
    assert admin_principal.is_admin


def test_cli_refuses_bad_requests_clearly(tmp_path: Path) -> None:
    run(tmp_path, "tenants", "add", "acme")
    again = run(tmp_path, "tenants", "add", "acme")
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert run(tmp_path, "tenants", "add", "Bad Name").returncode == 2
    missing = run(tmp_path, "keys", "add", "nobody")
    assert missing.returncode == 2
    assert "no tenant named" in missing.stderr


def test_doctor_reports_a_healthy_and_a_corrupt_directory(tmp_path: Path) -> None:
    run(tmp_path, "tenants", "add", "acme")
    healthy = run(tmp_path, "doctor")
    assert healthy.returncode == 0, healthy.stdout
    assert "1 tenants" in healthy.stdout
    (tmp_path / "jobs.json").write_bytes(b"{not json")
    broken = run(tmp_path, "doctor")
    assert broken.returncode == 1
    assert "jobs.json" in broken.stdout
    assert (tmp_path / "jobs.json").read_bytes() == b"{not json"


def test_tenants_file_changes_are_picked_up_by_a_running_registry(tmp_path: Path) -> None:
    run(tmp_path, "tenants", "add", "acme")
    now = [0.0]
    registry = TenantRegistry(tmp_path / "tenants.json", lambda: now[0])
    key = run(tmp_path, "keys", "add", "acme").stdout.strip()
    now[0] += 2
    assert registry.authenticate(key) is not None


def test_rotating_the_webhook_secret_keeps_the_old_one_for_the_window(tmp_path: Path) -> None:
    from datetime import timedelta

    from jobq.core.timefmt import parse_ts

    run(tmp_path, "tenants", "add", "acme")
    first = orjson.loads((tmp_path / "tenants.json").read_bytes())["tenants"]["acme"]["webhookSecrets"][0]
    rotated = run(tmp_path, "tenants", "rotate-secret", "acme")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new.startswith("whsec_") and new != first
    tenant = orjson.loads((tmp_path / "tenants.json").read_bytes())["tenants"]["acme"]
    assert tenant["webhookSecrets"] == [new, first]
    at = parse_ts(tenant["webhookSecretRotatedAt"])
    assert at is not None

    registry = TenantRegistry(tmp_path / "tenants.json", lambda: 0.0)
    assert registry.webhook_secrets("acme", at + timedelta(hours=23), 24) == [new, first]
    assert registry.webhook_secrets("acme", at + timedelta(hours=24), 24) == [new]
    assert registry.webhook_secrets("nobody", at, 24) == []
    assert run(tmp_path, "tenants", "rotate-secret", "nobody").returncode == 2

    again = run(tmp_path, "tenants", "rotate-secret", "acme").stdout.strip()
    assert orjson.loads((tmp_path / "tenants.json").read_bytes())["tenants"]["acme"]["webhookSecrets"] == [again, new]


def test_new_secret_prints_a_whsec_secret_the_settings_accept(tmp_path: Path) -> None:
    from jobq.core.config import Settings
    from jobq.outbound.signing import secret_bytes

    first, second = (run(tmp_path, "new-secret") for _ in range(2))
    assert first.returncode == 0 and first.stdout != second.stdout
    secret = first.stdout.strip()
    assert len(secret_bytes(secret)) == 32
    settings = Settings.from_env({"JOBQ_ALERT_URL": "https://ops.example.com/", "JOBQ_ALERT_SECRET": secret})
    assert settings.alert_secret is not None and settings.alert_secret.reveal() == secret
