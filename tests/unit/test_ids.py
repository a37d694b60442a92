"""Ids are unique across fork() (issue 8): `ids.new_id` draws from
a pool of OS randomness, which a forked child must not share with its parent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository root

# Run in a fresh interpreter: forking the test runner (threads, an event loop)
# is not something to do lightly, and the parent must be a plain process.
FORK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from jobq.core.ids import new_hex_id, new_id

    before = [new_id() for _ in range(10)]  # the pool is now partly used
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        ids = [new_id() for _ in range(600)] + [new_hex_id() for _ in range(300)]
        with os.fdopen(write_end, "w") as pipe:
            json.dump(ids, pipe)
        os._exit(0)
    os.close(write_end)
    parent = [new_id() for _ in range(600)] + [new_hex_id() for _ in range(300)]
    with os.fdopen(read_end) as pipe:
        child = json.load(pipe)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"before": before, "parent": parent, "child": child, "status": status}))
    """
)


def test_a_forked_child_does_not_hand_out_its_parents_ids() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    drawn = json.loads(out.stdout)
    assert drawn["status"] == 0
    parent, child = drawn["before"] + drawn["parent"], drawn["child"]
    assert len(child) == 900 and len(set(child)) == 900
    assert len(set(parent)) == len(parent)
    assert not set(parent) & set(child)
    for job_id in parent[:610] + child[:600]:
        assert uuid.UUID(job_id).version == 4 and str(uuid.UUID(job_id)) == job_id
