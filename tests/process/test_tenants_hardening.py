"""The tenants file under hostile or broken conditions (issue 8).

- Concurrent CLI writes are serialized: no key is lost.
- A file of any shape never crashes the service: the start refuses in one line
  naming the bad entry; a running registry keeps the last good version.
- Limits: `maxStoredBytes`, and a `maxRunning` default below the worker's slots.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobq.core.config import Settings
from jobq.tenancy.tenants import DEFAULT_LIMITS, Limits, TenantRegistry, TenantsDoc, TenantsFileError, hash_key
from tests.conftest import ROOT

GOOD_HASH = "sha256:" + "ab" * 32
OTHER_HASH = "sha256:" + "cd" * 32


def env_for(tenants: Path, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "JOBQ_DATA_DIR": str(data_dir),
        "JOBQ_TENANTS_FILE": str(tenants),
        "JOBQ_PORT": "1",
        "JOBQ_LOG_LEVEL": "WARNING",
    }


def run_app(tenants: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "app.py", *args],
        cwd=ROOT,
        env=env_for(tenants, data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ---- concurrent CLI writes --------------------------------------------------------

# Every process imports jobq first, then waits for the same moment to run its
# command, so the read-modify-writes of the tenants file really overlap.
RACER = """
import os, sys, time
sys.path.insert(0, os.getcwd())
import app
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.001)
sys.exit(app.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_concurrent_keys_add_keeps_every_key(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.json"
    assert run_app(tenants, tmp_path, "tenants", "add", "acme").returncode == 0
    go = tmp_path / "go"
    env = env_for(tenants, tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(go), "keys", "add", "acme", "--label", f"racer-{n}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    go.write_bytes(b"")
    keys = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        keys.append(out.strip())
    assert len(set(keys)) == 8
    registry = TenantRegistry(tenants, lambda: 0.0)
    for key in keys:
        principal = registry.authenticate(key)
        assert principal is not None and principal.tenant_id == "acme", key
    assert len(registry.doc.tenants["acme"]["keys"]) == 9
    for path in tmp_path.iterdir():
        if path.name.startswith("tenants.json"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# ---- a tenants file of any shape --------------------------------------------------


def good_doc() -> dict[str, Any]:
    return {
        "tenants": {
            "acme": {
                "keys": [{"hash": GOOD_HASH, "role": "write", "label": "ci"}],
                "webhookSecrets": ["whsec_x"],
                "limits": {"maxRunning": 2},
            }
        },
        "admins": [{"hash": OTHER_HASH, "label": "ops"}],
    }


def with_(change: Any) -> bytes:
    doc = good_doc()
    change(doc)
    return orjson.dumps(doc)


def acme(doc: dict[str, Any]) -> dict[str, Any]:
    tenant: dict[str, Any] = doc["tenants"]["acme"]
    return tenant


BAD_FILES: dict[str, tuple[bytes, str]] = {
    "not-json": (b"{nope", "cannot be read"),
    "duplicate-tenant": (b'{"tenants": {"acme": {}, "acme": {}}}', "duplicate key 'acme'"),
    "a-list": (b"[]", "must be an object"),
    "tenants-a-list": (b'{"tenants": []}', "tenants must be an object"),
    "tenant-a-list": (with_(lambda d: d["tenants"].update(acme=[])), "tenants.acme must be an object"),
    "keys-not-a-list": (with_(lambda d: acme(d).update(keys={})), "tenants.acme.keys must be a list"),
    "key-a-string": (
        with_(lambda d: acme(d)["keys"].append("sha256:abc")),
        'tenants.acme.keys[1] must be an object with a "hash" string',
    ),
    "hash-not-a-string": (
        with_(lambda d: acme(d)["keys"][0].update(hash=5)),
        'tenants.acme.keys[0] must be an object with a "hash" string',
    ),
    "hash-malformed": (with_(lambda d: acme(d)["keys"][0].update(hash="md5:x")), "tenants.acme.keys[0].hash"),
    "role-unknown": (with_(lambda d: acme(d)["keys"][0].update(role="admin")), "tenants.acme.keys[0].role"),
    "label-not-a-string": (with_(lambda d: acme(d)["keys"][0].update(label=[])), "tenants.acme.keys[0].label"),
    "limits-a-list": (with_(lambda d: acme(d).update(limits=[1])), "tenants.acme.limits must be an object"),
    "limit-zero": (
        with_(lambda d: acme(d)["limits"].update(maxRunning=0)),
        "tenants.acme.limits.maxRunning must be a positive integer",
    ),
    "limit-bool": (with_(lambda d: acme(d)["limits"].update(maxQueued=True)), "tenants.acme.limits.maxQueued"),
    "limit-float": (
        with_(lambda d: acme(d)["limits"].update(maxStoredBytes=1.5)),
        "tenants.acme.limits.maxStoredBytes",
    ),
    "secrets-a-string": (
        with_(lambda d: acme(d).update(webhookSecrets="whsec_x")),
        "tenants.acme.webhookSecrets must be a list of strings",
    ),
    "secret-a-number": (with_(lambda d: acme(d).update(webhookSecrets=[1])), "tenants.acme.webhookSecrets"),
    "rotated-at-garbage": (
        with_(lambda d: acme(d).update(webhookSecretRotatedAt="yesterday")),
        "tenants.acme.webhookSecretRotatedAt",
    ),
    "rotated-at-a-number": (
        with_(lambda d: acme(d).update(webhookSecretRotatedAt=5)),
        "tenants.acme.webhookSecretRotatedAt",
    ),
    "rotated-at-year-9999": (
        with_(lambda d: acme(d).update(webhookSecretRotatedAt="9999-12-31T23:59:59Z")),
        "tenants.acme.webhookSecretRotatedAt",
    ),
    "admins-an-object": (with_(lambda d: d.update(admins={})), "admins must be a list"),
    "admin-a-string": (with_(lambda d: d["admins"].append("x")), 'admins[1] must be an object with a "hash" string'),
    "same-hash-twice": (
        with_(lambda d: d["admins"].append({"hash": GOOD_HASH})),
        "admins[1].hash is also the hash of tenants.acme.keys[0]",
    ),
    "odd-tenant-name": (with_(lambda d: d["tenants"].update({"a\nb": []})), "tenants['a\\nb'] must be an object"),
    "name-ending-in-newline": (
        with_(lambda d: d["tenants"].update({"acme\n": []})),
        "tenants['acme\\n'] must be an object",
    ),
}


@pytest.mark.parametrize(("data", "words"), list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_a_bad_tenants_file_names_the_bad_entry_in_one_line(tmp_path: Path, data: bytes, words: str) -> None:
    path = tmp_path / "tenants.json"
    path.write_bytes(data)
    with pytest.raises(TenantsFileError) as info:
        TenantsDoc.read(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert words in message
    assert "\n" not in message
    with pytest.raises(TenantsFileError):
        TenantRegistry(path, lambda: 0.0)


def test_a_tenant_name_ending_in_a_newline_is_refused() -> None:
    with pytest.raises(TenantsFileError, match="a tenant name is"):
        TenantsDoc().add_tenant("acme\n")


def test_the_good_document_and_omitted_parts_load(tmp_path: Path) -> None:
    path = tmp_path / "tenants.json"
    path.write_bytes(orjson.dumps(good_doc()))
    registry = TenantRegistry(path, lambda: 0.0)
    assert registry.limits("acme").max_running == 2
    assert registry.authenticate_hash(OTHER_HASH) is not None
    path.write_bytes(b'{"tenants": {"bare": {}, "nulls": {"limits": null}}}')
    registry = TenantRegistry(path, lambda: 0.0)
    assert registry.tenant_names() == ["bare", "nulls"]
    assert registry.limits("bare") == DEFAULT_LIMITS


@pytest.mark.parametrize(("data", "words"), list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_a_running_registry_keeps_the_last_good_version_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, data: bytes, words: str
) -> None:
    path = tmp_path / "tenants.json"
    doc = TenantsDoc()
    key = doc.add_tenant("acme")
    doc.write(path)
    now = [0.0]
    registry = TenantRegistry(path, lambda: now[0])
    path.write_bytes(data + b" " * 7)  # a new size: the registry notices the change
    now[0] += 2
    caplog.set_level(logging.ERROR)
    principal = registry.authenticate(key)
    assert principal is not None and principal.tenant_id == "acme"
    assert registry.webhook_secrets("acme", registry_now(), 24.0)
    [line] = [r.getMessage() for r in caplog.records if "action=tenants_reload_failed" in r.getMessage()]
    assert words.split("[")[0].split(" ")[0] in line


def registry_now() -> datetime:
    return datetime(2026, 12, 7, tzinfo=UTC)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
DOCUMENT_FIELDS = ["tenants", "admins", "keys", "hash", "role", "label", "limits", "acme"]
TENANT_FIELDS = ["webhookSecrets", "webhookSecretRotatedAt", "maxRunning", "submitPerMinute", "submitBurst"]
FIELD = st.sampled_from([*DOCUMENT_FIELDS, *TENANT_FIELDS, "maxQueued", "maxStoredBytes"])
VALUE = st.one_of(JSON, st.just(GOOD_HASH), st.just("read"), st.just("2026-12-07T10:00:00Z"), st.integers(-2, 3))
# Documents shaped like the real thing, with any part swapped for anything.
SHAPED = st.recursive(
    VALUE,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(FIELD, children, max_size=5),
    max_leaves=25,
)


def _load_everywhere(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        TenantsDoc.read(path)
    except TenantsFileError:
        pass
    try:
        registry = TenantRegistry(path, lambda: 0.0)
    except TenantsFileError:
        return
    # A loaded registry answers every question without raising.
    for name in [*registry.doc.tenants, "nobody"]:
        registry.limits(name)
        registry.webhook_secrets(name, registry_now(), 24.0)
    registry.authenticate("jq_anything")
    registry.authenticate_hash(GOOD_HASH)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(JSON, SHAPED, st.builds(lambda t: {"tenants": t}, SHAPED)))
def test_any_json_shape_gives_a_registry_or_a_tenants_file_error(doc: Any) -> None:
    with tempfile.TemporaryDirectory() as directory:
        _load_everywhere(Path(directory) / "tenants.json", orjson.dumps(doc))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=64))
def test_any_bytes_give_a_registry_or_a_tenants_file_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        _load_everywhere(Path(directory) / "tenants.json", data)


@pytest.mark.slow
def test_a_start_with_a_bad_tenants_file_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.json"
    tenants.write_bytes(BAD_FILES["key-a-string"][0])
    data_dir = tmp_path / "data"
    result = run_app(tenants, data_dir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'jobq: {tenants}: tenants.acme.keys[1] must be an object with a "hash" string'
    ]
    assert not data_dir.exists()  # the start was refused before anything was written


def test_doctor_reports_a_bad_tenants_file(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.json"
    tenants.write_bytes(BAD_FILES["limits-a-list"][0])
    result = run_app(tenants, tmp_path / "data", "doctor")
    assert result.returncode == 1
    assert "tenants.acme.limits must be an object" in result.stdout
    assert "Traceback" not in result.stderr


# ---- limits ------------------------------------------------------------------------


def test_limit_defaults_leave_room_for_other_tenants() -> None:
    assert DEFAULT_LIMITS.max_running == 4
    assert DEFAULT_LIMITS.max_running < Settings().worker_concurrency
    assert DEFAULT_LIMITS.max_stored_bytes == 256 * 1024 * 1024
    assert Limits.from_json({}) == DEFAULT_LIMITS


def test_max_stored_bytes_is_read_from_the_file(tmp_path: Path) -> None:
    assert Limits.from_json({"maxStoredBytes": 1024}).max_stored_bytes == 1024
    for bad in (0, -1, "1024", 1.0, True, None):
        with pytest.raises(TenantsFileError, match="maxStoredBytes must be a positive integer"):
            Limits.from_json({"maxStoredBytes": bad})
    path = tmp_path / "tenants.json"
    path.write_bytes(b'{"tenants": {"acme": {"limits": {"maxStoredBytes": 5000}}}}')
    registry = TenantRegistry(path, lambda: 0.0)
    assert registry.limits("acme").max_stored_bytes == 5000
    assert registry.limits("acme").max_running == 4
    assert hash_key("x").startswith("sha256:")
