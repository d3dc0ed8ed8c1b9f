"""Files the pipeline may not read end as rejects with their reason. Root reads everything through
its capabilities, so when the suite runs as root the check runs in a child process without them."""

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PR_CAPBSET_DROP = 24
LIST_AND_LOAD = """
import json, sys
try:
    open(sys.argv[1], "rb").close()
    print("READABLE")
    raise SystemExit(0)
except PermissionError:
    pass
from medtrinity_tasks.config import load_settings
from medtrinity_tasks.run.pipeline import build_stages
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.sources.layouts import list_inputs
from medtrinity_tasks.stages import run_inprocess

settings = load_settings()
source = get_source("synthetic_dermoscopy", settings)
rows = run_inprocess(build_stages(source, settings), list_inputs(source, settings))
print(json.dumps({row["source_relpath"]: row.get("reject_reason") for row in rows}))
"""


def _without_capabilities():
    """In the child before exec: empty the capability bounding set, so that root runs the new
    program with no capability, and file modes apply to it as to anyone."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in range(64):
        libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)  # fails harmlessly past the last capability


def test_unreadable_files_are_rejected_with_the_reason(samples_dir):
    staged = Path(tempfile.mkdtemp(prefix="medtrinity-perm-"))
    try:
        shutil.copytree(samples_dir / "synthetic_dermoscopy", staged / "synthetic_dermoscopy")
        for path in [staged, *staged.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (locked := staged / "synthetic_dermoscopy" / "images" / "synthetic_0001.jpg").chmod(0o000)
        (staged / "synthetic_dermoscopy" / "masks" / "synthetic_0002_segmentation.png").chmod(0o000)
        env = {**os.environ, "MEDTRINITY_SAMPLES_DIR": str(staged), "HOME": str(staged)}
        done = subprocess.run(
            [sys.executable, "-c", LIST_AND_LOAD, str(locked)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=_without_capabilities if os.geteuid() == 0 else None,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        if done.stdout.strip() == "READABLE":
            pytest.skip("this machine lets the test process read a file with mode 000")
        rejects = json.loads(done.stdout.strip().splitlines()[-1])
        assert rejects[f"images/{locked.name}"].startswith("not a readable image (PermissionError")
        assert rejects["images/synthetic_0002.jpg"].startswith("not a readable image (PermissionError")
        assert rejects["images/synthetic_0000.jpg"] is None  # the rest is read as usual
    finally:
        shutil.rmtree(staged, ignore_errors=True)
