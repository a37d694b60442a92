"""`python app.py tenants|keys|doctor|new-secret ...`: managing tenants and checking a data directory."""

from __future__ import annotations

import argparse
import stat
import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any

from jobq.core.clock import SystemClock
from jobq.core.config import Settings
from jobq.core.errors import CorruptStore
from jobq.rules.transitions import RECOVERY_FAILED_ERROR
from jobq.storage.jsonfile.files import is_own_file
from jobq.storage.jsonfile.journal import DurableLog
from jobq.tenancy.tenants import TenantsDoc, TenantsFileError, new_webhook_secret, updating


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python app.py", description="jobq administration")
    sub = parser.add_subparsers(dest="group", required=True)
    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(dest="command", required=True)
    tenants.add_parser("add", help="create a tenant and print its first key").add_argument("name")
    tenants.add_parser("list", help="list tenants")
    tenants.add_parser(
        "rotate-secret", help="a new webhook signing secret; the old one keeps signing for the rotation window"
    ).add_argument("name")
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="command", required=True)
    add = keys.add_parser("add", help="add a key to a tenant, or an admin key")
    add.add_argument("name", nargs="?")
    add.add_argument("--read-only", action="store_true", help="a key that cannot submit, cancel or retry")
    add.add_argument("--admin", action="store_true", help="an admin key that sees every tenant")
    add.add_argument("--label", default="", help="a note to tell keys apart")
    sub.add_parser("doctor", help="check the data directory and the tenants file")
    sub.add_parser("new-secret", help="print a fresh whsec_ secret, e.g. for JOBQ_ALERT_SECRET")
    return parser


def run_command(settings: Settings, argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.group == "doctor":
            return doctor(settings)
        if args.group == "new-secret":
            print(new_webhook_secret())
            return 0
        if args.group == "tenants" and args.command == "list":
            for name in sorted(TenantsDoc.read(settings.tenants_file).tenants):
                print(name)
            return 0
        if args.group == "keys" and args.admin and (args.name or args.read_only):
            print("jobq: --admin takes no tenant name and no --read-only", file=sys.stderr)
            return 2
        if args.group == "keys" and not args.admin and not args.name:
            print("jobq: name the tenant, or pass --admin", file=sys.stderr)
            return 2
        # Read, change and write under the file's update lock: concurrent
        # commands each see the other's change instead of overwriting it.
        with updating(settings.tenants_file):
            doc = TenantsDoc.read(settings.tenants_file)
            key, what = _change(settings, doc, args)
            doc.write(settings.tenants_file)
    except TenantsFileError as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"jobq: cannot write {settings.tenants_file}: {exc}", file=sys.stderr)
        return 2
    print(f"created {what}; it is shown only this once:", file=sys.stderr)
    print(key)
    return 0


def _change(settings: Settings, doc: TenantsDoc, args: argparse.Namespace) -> tuple[str, str]:
    """Apply the command to `doc`: the secret it created (to show once) and what it is."""
    if args.group == "tenants" and args.command == "rotate-secret":
        hours = settings.webhook_rotation_hours
        secret = doc.rotate_webhook_secret(args.name, SystemClock().now())
        return secret, f"a new webhook secret for {args.name!r} (the old one still signs for {hours:g} h)"
    if args.group == "tenants":
        return doc.add_tenant(args.name), f"tenant {args.name!r}"
    if args.admin:
        return doc.add_admin(args.label or "admin"), "an admin key"
    key = doc.add_key(args.name, read_only=args.read_only, label=args.label)
    return key, f"a {'read-only' if args.read_only else 'write'} key for {args.name!r}"


def parked_jobs(records: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Jobs a start could not recover and parked as `fatal`, with the reason."""
    found = []
    for key, value in records.items():
        if key.startswith("job:") and isinstance(value, dict) and value.get("status") == "fatal":
            reason = value.get("lastError")
            if isinstance(reason, str) and reason.startswith(RECOVERY_FAILED_ERROR):
                found.append((key[4:], reason))
    return found


def doctor(settings: Settings) -> int:
    """Read everything, change nothing, say what is wrong."""
    problems = 0
    try:
        doc = TenantsDoc.read(settings.tenants_file)
        print(f"ok   tenants file {settings.tenants_file}: {len(doc.tenants)} tenants, {len(doc.admins)} admin keys")
    except TenantsFileError as exc:
        print(f"FAIL {exc}")
        problems += 1
    log = DurableLog(settings.data_dir)
    if not settings.data_dir.is_dir():
        print(f"FAIL data directory {settings.data_dir} does not exist")
        return 1
    if log.held_by_other_process():
        print(f"info {settings.data_dir} is in use by a running jobq")
    try:
        records, generation, journals = log.read_all()
        statuses = Counter(v.get("status") for k, v in records.items() if k.startswith("job:") and isinstance(v, dict))
        summary = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "no jobs"
        if generation is None:
            print(f"ok   {log.snapshot_path} does not exist yet (a first start creates it)")
        else:
            print(f"ok   {log.snapshot_path}: generation {generation}, {len(journals)} journal files; {summary}")
        for job_id, reason in parked_jobs(records):
            print(f"warn job {job_id} was parked in the DLQ at start: {reason}")
    except CorruptStore as exc:
        print(f"FAIL {exc}")
        problems += 1
    except OSError as exc:
        print(f"FAIL cannot read the data directory {settings.data_dir}: {exc}")
        return 1
    data_mode = settings.data_dir.lstat().st_mode
    if data_mode & 0o022:
        # The directory's mode is the operator's (fsio.tighten): said, never changed.
        print(f"warn {settings.data_dir} has mode {stat.S_IMODE(data_mode):04o}: others may rename or delete its files")
    for path in sorted(settings.data_dir.iterdir()):
        mode = path.lstat().st_mode
        if is_own_file(path.name) and mode & 0o077 and stat.S_ISREG(mode):
            print(f"warn {path} has mode {stat.S_IMODE(mode):04o}; the next start makes it owner-only")
    return 1 if problems else 0
