"""`pipeline.SideBySide`: the demo's two pretrainings run in two processes, the CPU threads split between them."""

from __future__ import annotations

import os
import time

import pytest
import torch

from vistune.demo.pipeline import SideBySide


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_job_runs_in_a_second_process_on_its_share_of_the_threads(two_threads):
    # One job per block: a second SideBySide opened inside the first would see one thread and run here.
    with SideBySide(os.getpid) as pid:
        pass
    assert pid.result() != os.getpid()
    with SideBySide(torch.get_num_threads) as threads:
        here = torch.get_num_threads()  # this side's share while the job runs
    assert threads.result() == 1 and here == 1
    assert torch.get_num_threads() == 2  # restored after


def test_the_jobs_error_is_raised_by_result(two_threads):
    with SideBySide(int, "not a number") as job:
        pass
    with pytest.raises(ValueError, match="not a number"):
        job.result()


def test_an_error_here_stops_the_second_process(two_threads):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="body failed"), SideBySide(time.sleep, 60):
        raise RuntimeError("body failed")
    assert time.perf_counter() - start < 30  # terminated, not waited for
    assert torch.get_num_threads() == 2


def test_on_one_thread_the_job_runs_here_after_the_body():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with SideBySide(os.getpid) as job:
            assert job.result() is None  # not run yet
        assert job.result() == os.getpid()
        with SideBySide(os.getpid, run=False) as skipped:
            pass
        assert skipped.result() is None
    finally:
        torch.set_num_threads(before)
