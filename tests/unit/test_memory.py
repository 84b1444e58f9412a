"""release_free_memory returns free heap pages to the system (glibc on Linux) and changes nothing else."""

from __future__ import annotations

import sys

import numpy as np

from nncompress.memory import release_free_memory


def test_release_free_memory_after_freeing_many_small_buffers():
    buffers = [np.ones(1 << 14, np.float32) for _ in range(2000)]  # 64 KB each: heap, not mmap
    total = float(sum(b.sum() for b in buffers))
    del buffers
    released = release_free_memory()
    assert released is sys.platform.startswith("linux")
    assert total == 2000 * (1 << 14)
