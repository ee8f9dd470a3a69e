"""The harness measures a child's own peak memory, not its parent's."""

from __future__ import annotations

import os
import sys

from benchmarks.harness import _vm_hwm_kib, run_child


def test_peak_rss_is_the_childs_own_not_the_parents() -> None:
    # the parent's peak goes well above what a bare interpreter needs; with vfork + exec the
    # kernel folds that peak into the child's ru_maxrss, which is why run_child reads VmHWM
    big = b"x" * (300 * 1024 * 1024)
    del big
    assert _vm_hwm_kib(os.getpid()) > 300 * 1024
    bare = run_child(
        [sys.executable, "-c", "import time; time.sleep(0.3)"], env=dict(os.environ), timeout_s=60
    )
    assert bare.returncode == 0
    assert 1 < bare.maxrss_mb < 100
    grown = run_child(
        [sys.executable, "-c", "import time; x = b'y' * (150 * 1024 * 1024); time.sleep(0.3)"],
        env=dict(os.environ),
        timeout_s=60,
    )
    assert grown.returncode == 0
    assert 150 < grown.maxrss_mb < 250
