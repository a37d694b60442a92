"""The operator's own handlers (JOBQ_HANDLERS): imported at start, their job
types accepted at submit and run; a module that fails to import stops the
start with its name, before anything in the data directory is touched."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, write_tenants
from tests.support.server_process import Server

pytestmark = pytest.mark.slow

SHOUT = '''
from jobq.worker.handlers import REGISTRY, Context
from jobq.core.models import Job


@REGISTRY.handler("shout")
async def shout(job: Job, ctx: Context) -> dict:
    ctx.logger.info("shouting")
    return {"text": job.payload["text"].upper()}
'''


async def test_an_operators_handler_module_is_loaded_and_its_jobs_run(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "my_handlers.py").write_text(SHOUT)
    keys = write_tenants(tmp_path / "tenants.json")
    server = Server(
        tmp_path, tmp_path / "data", tmp_path / "tenants.json", JOBQ_HANDLERS="my_handlers", PYTHONPATH=str(modules)
    )
    await server.start(session)
    try:
        headers = {"X-API-Key": keys.acme}
        async with session.post(
            f"{server.url}/jobs", json={"type": "shout", "payload": {"text": "hi"}}, headers=headers
        ) as response:
            assert response.status == 201, await response.text()
            job_id = (await response.json())["jobId"]
        for _ in range(100):
            async with session.get(f"{server.url}/jobs/{job_id}", headers=headers) as response:
                job = await response.json()
            if job["status"] == "succeeded":
                break
            await asyncio.sleep(0.05)
        assert job["status"] == "succeeded", job
        assert job["result"] == {"text": "HI"}
        async with session.post(
            f"{server.url}/jobs", json={"type": "whisper", "payload": {}}, headers=headers
        ) as response:
            assert response.status == 422  # only registered types are accepted
    finally:
        assert server.stop() == 0, server.log


@pytest.mark.parametrize(
    ("source", "says"),
    [
        pytest.param("raise RuntimeError('no database')", "RuntimeError: no database", id="raises"),
        pytest.param("def broken(:\n", "SyntaxError", id="syntax-error"),
        pytest.param(
            "from jobq.worker.handlers import REGISTRY\n@REGISTRY.handler('echo')\nasync def echo(job, ctx): ...\n",
            "already registered",
            id="takes-a-built-in-name",
        ),
        pytest.param(None, "ModuleNotFoundError", id="missing"),
    ],
)
def test_a_module_that_cannot_be_imported_stops_the_start_with_its_name(
    tmp_path: Path, source: str | None, says: str
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    if source is not None:
        (modules / "bad_handlers.py").write_text(source)
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "JOBQ_DATA_DIR": str(data_dir),
        "JOBQ_PORT": "1",  # never reached
        "JOBQ_HANDLERS": "bad_handlers",
        "PYTHONPATH": str(modules),
    }
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("jobq: JOBQ_HANDLERS: cannot import 'bad_handlers': ") and says in line, line
    assert not data_dir.exists()  # nothing was touched


def test_a_bad_module_list_is_refused_naming_the_setting() -> None:
    env = {**os.environ, "JOBQ_HANDLERS": "ok_module, not a module"}
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "JOBQ_HANDLERS" in result.stderr and "'not a module'" in result.stderr
