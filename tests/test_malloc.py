"""The launch scripts' malloc settings: merged into the user's GLIBC_TUNABLES, applied by one re-exec
of the same command line, and only for `python -m launch.<script>`."""

import json
import subprocess
import sys

from conftest import ROOT, subprocess_env
from launch import _malloc


def test_tunables_keep_what_the_user_set():
    ours = "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1"
    assert _malloc.tunables("") == ours
    assert _malloc.tunables("glibc.malloc.hugetlb=0") == "glibc.malloc.hugetlb=0:glibc.malloc.arena_max=1"
    assert _malloc.tunables("glibc.malloc.arena_max=2") == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


PROBE = """
import json, os, sys
calls = []
os.execv = lambda exe, argv: calls.append([exe, argv, os.environ.get("GLIBC_TUNABLES")])
sys.orig_argv = [sys.executable, "-m", "launch.train", "--config.steps=3"]
import launch
print(json.dumps(calls))
"""


def test_python_m_launch_restarts_once_with_the_tunables():
    env = subprocess_env()
    env.pop("GLIBC_TUNABLES", None)
    env.pop(_malloc.OFF, None)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    (exe, argv, tunables), = json.loads(out.stdout)
    assert argv == [sys.executable, "-m", "launch.train", "--config.steps=3"] and tunables == _malloc.tunables("")
    env[_malloc.OFF] = "default"  # what the restarted process sees: no second restart
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
