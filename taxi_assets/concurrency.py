"""Work on several months at once, reported one by one in the caller's thread.

The assets download, clean and load the months of a range side by side (threads: downloads wait on the network,
COPY and DuckDB on their servers, cleaning on worker processes), while Dagster's ``context.log`` and
``add_asset_metadata`` must be called from the step's own thread: ``each_finished`` hands each month's result or
error back there as soon as it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def each_finished(
    items: Iterable[T], work: Callable[[T], R], parallel: int
) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """``work(item)`` for every item, up to ``parallel`` at once (threads; 1: one after another in this thread),
    yielded in the caller's thread as each ends: ``(item, result, None)`` or ``(item, None, error)``. A caller that
    stops early (an interrupt) cancels the items not started and waits for those running, so none is cut short."""
    items = list(items)
    if parallel <= 1 or len(items) <= 1:
        for item in items:
            try:
                result = work(item)
            except Exception as error:
                yield item, None, error
            else:
                yield item, result, None
        return
    pool = ThreadPoolExecutor(max_workers=min(parallel, len(items)), thread_name_prefix="month")
    try:
        running: dict[Future, T] = {pool.submit(work, item): item for item in items}
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in [f for f in running if f in done]:  # in the items' order
                item = running.pop(future)
                error = future.exception()
                yield item, None if error else future.result(), error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
