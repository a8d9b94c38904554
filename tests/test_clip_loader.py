"""The decoding core (`vidgpt2.clip_loader`): how decoding workers are scheduled beside the model, and how a batch
is stacked for the trip to the main process."""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from unittest import mock

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from vidgpt2 import clip_loader

needs_sched_idle = pytest.mark.skipif(
    not hasattr(os, "SCHED_IDLE") or "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="Linux scheduling policies and the forkserver start method",
)


class SchedulingDataset(Dataset):
    """Item `i` reports the scheduling policy and niceness of the process that made it (a worker). Module level, so
    that forkserver workers can unpickle it."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict[str, Any]:
        where = [os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0), os.getpid()]
        return {"index": index, "where": torch.tensor(where)}


@needs_sched_idle
def test_decoding_workers_run_under_sched_idle_at_nice_19():
    """Workers take only CPU time the model leaves idle: SCHED_IDLE (a waking torch thread preempts them at once),
    with the lowest niceness too; the main process keeps its own policy and niceness."""
    policy, nice = os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)
    batches = list(clip_loader.clip_loader(SchedulingDataset(), batch_size=1, num_workers=1))
    where = torch.cat([batch["inputs"]["where"] for batch in batches])  # (2, 3): policy, nice, pid per item
    assert where[:, 0].tolist() == [os.SCHED_IDLE] * 2
    assert where[:, 1].tolist() == [min(19, nice + clip_loader.WORKER_NICENESS)] * 2
    assert os.getpid() not in where[:, 2].tolist()
    assert (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)) == (policy, nice)


def _priority_in_child(refuse: tuple[str, ...], hide_sched_idle: bool) -> tuple[str, int, int, list[str]]:
    """Run in a throw-away child process: with the `os` calls named in `refuse` raising PermissionError (as some
    sandboxes do) and, with `hide_sched_idle`, no `os.SCHED_IDLE` (as on macOS): what `lower_cpu_priority` reports,
    then `decoding_worker_init(0)`; returns the report, the policy and niceness the child ends up with, and the
    warnings logged."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    clip_loader.logger.addHandler(handler)
    for name in refuse:
        setattr(os, name, mock.Mock(side_effect=PermissionError(1, "Operation not permitted")))
    if hide_sched_idle:
        del os.SCHED_IDLE
    reported = clip_loader.lower_cpu_priority()
    clip_loader.decoding_worker_init(0)
    return reported, os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0), records


def _in_child(refuse: tuple[str, ...], hide_sched_idle: bool = False) -> tuple[str, int, int, list[str]]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver"), max_tasks_per_child=1) as pool:
        return pool.submit(_priority_in_child, refuse, hide_sched_idle).result(timeout=120)


@needs_sched_idle
def test_worker_priority_falls_back_to_nice_then_warns():
    nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + clip_loader.WORKER_NICENESS)
    # SCHED_IDLE refused (a sandbox) or missing (macOS): nice 19 alone, quietly
    for hide in (False, True):
        reported, policy, niceness, warnings = _in_child(("sched_setscheduler",), hide_sched_idle=hide)
        assert (reported, policy, niceness, warnings) == ("nice", os.SCHED_OTHER, nice, [])
    # neither can be set: the worker keeps the priority it started with and logs a warning
    reported, policy, niceness, warnings = _in_child(("sched_setscheduler", "nice"))
    assert (reported, policy, niceness) == ("unchanged", os.SCHED_OTHER, os.getpriority(os.PRIO_PROCESS, 0))
    assert len(warnings) == 1 and "neither SCHED_IDLE nor os.nice(19)" in warnings[0]


class ClipsDataset(Dataset):
    """Item `i`: a `(T, 3, H, W)` float32 clip whose values encode `i`."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"index": index, "pixel_values_videos": torch.full((2, 3, 4, 4), float(index)).add_(torch.arange(16.0).view(4, 4))}


def collate_and_report(items: list[dict[str, Any]]) -> dict[str, Any]:
    """`collate_clips`, plus whether the stacked batch already lives in shared memory before the worker pickles it."""
    batch = clip_loader.collate_clips(items)
    batch["stacked_in_shared_memory"] = batch["inputs"]["pixel_values_videos"].is_shared()
    return batch


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="forkserver start method")
def test_a_worker_stacks_its_batch_straight_into_shared_memory():
    """The batch crosses to the main process through shared memory; stacking there saves the copy pickling would
    make. The values are those of a plain stack, in order."""
    loader = DataLoader(ClipsDataset(), batch_size=2, num_workers=1, collate_fn=collate_and_report,
                        multiprocessing_context="forkserver")
    batches = list(loader)
    assert [batch["stacked_in_shared_memory"] for batch in batches] == [True, True]
    dataset = ClipsDataset()
    for batch, first in zip(batches, (0, 2), strict=True):
        expected = torch.stack([dataset[first]["pixel_values_videos"], dataset[first + 1]["pixel_values_videos"]])
        assert batch["indices"] == [first, first + 1]
        assert torch.equal(batch["inputs"]["pixel_values_videos"], expected)  # (2, 2, 3, 4, 4)
    # in the main process (num_workers=0) nothing is shared: a plain stack
    here = clip_loader.collate_clips([dataset[0], dataset[1]])
    assert not here["inputs"]["pixel_values_videos"].is_shared()


UNGUARDED_SCRIPT = """
import vidgpt2
rows = vidgpt2.caption_videos([{clip!r}], {model!r}, num_workers=1, show_progress=False, max_new_tokens=3)
print("ROWS", len(rows))
"""


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="the forkserver start method")
def test_script_without_main_guard_is_told_how_to_fix_it(tmp_path):
    """A script that starts decoding workers at import time (no `if __name__ == "__main__":`) kills its workers: the
    fork server imports the script again. PyTorch says only "DataLoader worker ... exited unexpectedly"; the error now
    names the guard and num_workers=0. Found by a new user running the README's `caption_videos` line as a script."""
    import subprocess
    import sys

    from tests.tiny import save_tiny_captioner
    from tests.video_fixtures import write_test_clip

    clip = write_test_clip(tmp_path / "clip.mp4")
    model = save_tiny_captioner(tmp_path / "model")
    script = tmp_path / "caption_script.py"
    script.write_text(UNGUARDED_SCRIPT.format(clip=str(clip), model=str(model)))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode != 0
    assert "exited unexpectedly" in result.stderr and clip_loader.WORKER_START_HINT in result.stderr
