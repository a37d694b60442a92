"""The entry points as an operator runs them (issue 9): one data directory for
`make run`, `python app.py` and every admin command (the repository root,
whatever the working directory), the README's admin commands verbatim, and
`python worker.py`'s refusals.

Nothing here writes into the real repository: the commands run in a copy of
it under `tmp_path` (its own root, so its own default data directory), with
HOME pointed at `tmp_path` and every inherited `JOBQ_*` setting removed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from jobq.core.clock import SystemClock
from jobq.core.config import DEFAULT_DATA_DIR, Settings
from jobq.tenancy.tenants import TenantRegistry
from jobq.worker.builtin import default_registry
from jobq.worker.process import run_until_stopped
from store import open_store
from tests.conftest import ROOT
from tests.support.server_process import free_port

pytestmark = pytest.mark.slow


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("JOBQ_")}
    return {**env, "HOME": str(home), "JOBQ_LOG_LEVEL": "WARNING", **extra}


def copy_repository(tmp_path: Path) -> Path:
    """What a fresh clone holds after `make run`: the code, and `.venv` (the
    real one, linked: making another would take minutes)."""
    repo = tmp_path / "clone"
    repo.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("jobq", "templates", "static"):
        shutil.copytree(ROOT / name, repo / name, ignore=ignore)
    for name in ("app.py", "store.py", "worker.py", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, repo / name)
    (repo / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    return repo


def readme_admin_commands() -> list[str]:
    """The command lines of the first `sh` block under `## Administration`, comments cut."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Administration\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "README.md: no sh block under ## Administration"
    lines = [line.split("#", 1)[0].strip() for line in match.group(1).splitlines()]
    return [line for line in lines if line]


# ---- one data directory --------------------------------------------------------


def test_the_default_data_directory_is_the_repository_root_whatever_the_cwd() -> None:
    settings = Settings.from_env({})
    assert DEFAULT_DATA_DIR == ROOT
    assert settings.data_dir == ROOT and settings.data_dir.is_absolute()
    assert settings.tenants_file == ROOT / "tenants.json"
    assert Settings().data_dir == settings.data_dir and Settings().tenants_file == settings.tenants_file
    assert Settings.from_env({"JOBQ_DATA_DIR": "/srv/jobq"}).tenants_file == Path("/srv/jobq/tenants.json")


def test_make_run_sets_no_data_directory_of_its_own() -> None:
    lines = [line for line in (ROOT / "Makefile").read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in lines if "JOBQ_DATA_DIR" in line]
    assert "\t$(BIN)/python app.py" in lines


def test_every_runtime_file_in_the_repository_root_is_git_ignored() -> None:
    names = [
        "jobs.json",
        "jobs.journal.00000001",
        "jobs.pid",
        "jobs.lock",
        "tenants.json",
        "tenants.json.lock",
        "session.key",
        ".jobs.json.tmp-123-0",
        ".tenants.json.tmp-123-0",
        ".session.key.tmp-123-0",
    ]
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *names], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert sorted(result.stdout.split()) == sorted(names), result.stderr


def test_the_readme_admin_commands_work_verbatim_and_the_server_reads_what_they_wrote(tmp_path: Path) -> None:
    commands = readme_admin_commands()
    assert len(commands) >= 5 and commands[0].endswith("tenants add acme"), commands
    repo = copy_repository(tmp_path)
    env = clean_env(tmp_path)
    outputs = []
    for line in commands:
        result = subprocess.run(
            shlex.split(line), cwd=repo, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout)
    key = outputs[0].strip()
    assert key.startswith("jq_"), outputs[0]
    # Written into the copy's root, the default data directory, and nowhere else.
    assert (repo / "tenants.json").is_file()
    assert not (repo / "data").exists()

    # From another working directory, the same data directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = subprocess.run(
        [str(repo / ".venv/bin/python"), str(repo / "app.py"), "tenants", "list"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0 and listed.stdout.split() == ["acme"], listed.stderr
    assert list(elsewhere.iterdir()) == []

    # `python app.py` serves what the commands wrote: acme's key is accepted.
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [".venv/bin/python", "app.py"],
            cwd=repo,
            env={**env, "JOBQ_PORT": str(port), "JOBQ_SHUTDOWN_GRACE_SECONDS": "2"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while not _answers(f"{url}/healthz", {}):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        assert _answers(f"{url}/jobs", {"X-API-Key": key}), log_path.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()
    assert (repo / "jobs.json").is_file()  # the store used the same directory
    assert "created tenant 'demo'" not in log_path.read_text()  # the tenants file it read was the commands'


def _answers(url: str, headers: dict[str, str]) -> bool:
    """Does `url` (on loopback) answer 200?"""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


# ---- python worker.py ----------------------------------------------------------


def run_worker(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python worker.py` as an operator starts it, over a data directory in `tmp_path`."""
    return subprocess.run(
        [sys.executable, "worker.py", *args],
        cwd=ROOT,
        env=clean_env(tmp_path, JOBQ_DATA_DIR=str(tmp_path / "data"), **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("store", [None, "json"])
def test_worker_refuses_the_json_store_and_says_where_workers_run(tmp_path: Path, store: str | None) -> None:
    result = run_worker(tmp_path, **({"JOBQ_STORE": store} if store else {}))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("jobq: worker.py does not run on the JSON store"), line
    assert "python app.py" in line and "JOBQ_WORKER_CONCURRENCY" in line and "PostgreSQL" in line
    assert not (tmp_path / "data").exists()  # nothing was touched


def test_worker_names_a_handler_module_that_cannot_be_imported(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "bad_handlers.py").write_text("raise RuntimeError('no database')\n")
    result = run_worker(tmp_path, JOBQ_HANDLERS="bad_handlers", PYTHONPATH=str(modules))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("jobq: JOBQ_HANDLERS: cannot import 'bad_handlers': RuntimeError: no database"), line
    assert not (tmp_path / "data").exists()


def test_worker_refuses_a_store_this_build_does_not_have(tmp_path: Path) -> None:
    result = run_worker(tmp_path, JOBQ_STORE="nosuch://db.invalid/jobq")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("jobq: JOBQ_STORE=") and "nosuch://db.invalid/jobq" in line and "not supported" in line
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("args", "says"), [(["--concurrency", "0"], "at least 1"), (["--bogus"], "usage")])
def test_worker_refuses_bad_arguments(tmp_path: Path, args: list[str], says: str) -> None:
    result = run_worker(tmp_path, *args)
    assert result.returncode == 2
    assert says in result.stderr


async def test_the_worker_process_runs_until_stopped_and_closes_the_store(tmp_path: Path) -> None:
    """`run_until_stopped` on any store (the JSON one here, in process): the
    worker and the sender run until told to stop, then the store is closed
    (its directory can be opened again)."""
    settings = Settings.from_env({"JOBQ_DATA_DIR": str(tmp_path / "data"), "JOBQ_SHUTDOWN_GRACE_SECONDS": "1"})
    clock = SystemClock()
    tenants = TenantRegistry(settings.tenants_file, clock.monotonic)
    registry = default_registry(allow_private_urls=False)
    stop = asyncio.Event()
    store = await open_store(settings, clock, tenants)
    running = asyncio.create_task(run_until_stopped(settings, store, registry, clock, tenants, stop.wait()))
    await asyncio.sleep(0.2)
    assert not running.done()
    stop.set()
    assert await asyncio.wait_for(running, 10) == 0
    again = await open_store(settings, clock, tenants)  # StoreLocked if the first were still open
    await again.close()
