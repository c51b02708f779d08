"""Fold models trained at once, each in its own worker process (``--jobs``).

src.ensemble hands the pool the jobs and the function that trains one; the pool
sets up each worker (its dtype policy, a fresh Keras session per job) and reports
each job's progress. A worker whose parent dies (a killed run)
exits within a second, so that no orphan trains on beside the rerun that
resumes it; the partial files killed processes leave are removed before the
next training starts.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import keras
import numpy as np

from src import model as cnn
from src.calibrate import resolve_jobs
from src.config import Config
from src.errors import RunFailed
from src.processes import watch_parent
from src.util import format_duration, remove_stale_partials, writing


class EpochLine(keras.callbacks.Callback):
    """One labelled line per epoch: what parallel workers print instead of progress bars,
    which garble each other on one terminal."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def on_epoch_end(self, epoch, logs=None):
        scores = ", ".join(f"{name} {value:.4f}" for name, value in (logs or {}).items()
                           if name in ("accuracy", "val_accuracy", "val_loss"))
        print(f"{self.label} epoch {epoch + 1}/{self.params['epochs']}: {scores}", flush=True)


POLL_SECONDS = 1.0  # how often the pool's workers are checked for one that has ended
_worker_data: dict[str, np.ndarray] = {}


def _start_worker(x: np.ndarray, y: np.ndarray, parent: int) -> None:
    # The parent's pid comes from the parent: a parent killed while this worker imported
    # TensorFlow has already left it orphaned, and os.getppid() would name the adopter.
    _worker_data.update(x=x, y=y)
    watch_parent(parent)


def _train_in_worker(train_fold: Callable, job, split: tuple[np.ndarray, np.ndarray],
                     config: Config) -> float:
    cnn.use_precision(config.precision)
    print(job.status("training"), flush=True)
    seconds = train_fold(job, _worker_data["x"], _worker_data["y"], split, config, verbose=0,
                         callbacks=[EpochLine(job.label())])
    cnn.clear_session()
    return seconds


def train_fold_models(jobs: list, x: np.ndarray, y: np.ndarray,
                      splits: list[tuple[np.ndarray, np.ndarray]], config: Config,
                      train_fold: Callable, verbose: int | str = "auto",
                      before: Callable | None = None, after: Callable | None = None) -> None:
    """Train and save every job's model (an ensemble.FoldJob) with
    ``train_fold(job, x, y, split, config, verbose, callbacks)``, one after another or in
    parallel worker processes (``--jobs``), printing a line with the elapsed time and ETA
    as each ends.

    A job is handed to a worker only when one is free, so that ``before(job)``, called
    right then, may return it changed (src.budget: fewer epochs when the round runs
    late); ``after(job, seconds)`` hears when each ends."""
    folders = {job.path.parent for job in jobs}
    for folder in folders:
        with writing(folder):  # a read-only folder fails now, not after the first fold
            folder.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(folder)  # what the workers of a killed run were saving
    workers = min(resolve_jobs(config.jobs), len(jobs))
    progress = FoldProgress(len(jobs), workers, after)
    ready = before or (lambda job: job)
    if workers <= 1:
        for job in map(ready, jobs):
            print(job.status("training"), flush=True)
            progress.done(job, train_fold(job, x, y, splits[job.fold], config, verbose))
    else:
        _train_in_pool(jobs, x, y, splits, config, train_fold, workers, ready, progress,
                       folders)


class FoldProgress:
    """The line printed as each fold model ends (its time, how many are done, the
    elapsed time and ETA), then after(job, seconds) where given."""

    def __init__(self, total: int, workers: int, after: Callable | None):
        self.total, self.workers, self.after = total, workers, after
        self.started = time.perf_counter()
        self.model_seconds: list[float] = []

    def done(self, job, seconds: float) -> None:
        self.model_seconds.append(seconds)
        finished = len(self.model_seconds)
        eta = format_duration(np.mean(self.model_seconds) * (self.total - finished)
                              / self.workers)
        print(f"{job.label()} trained in {format_duration(seconds)}; "
              f"{finished} of {self.total} to train done, elapsed "
              f"{format_duration(time.perf_counter() - self.started)}, ETA {eta}", flush=True)
        if self.after:
            self.after(job, seconds)


def _train_in_pool(jobs: list, x: np.ndarray, y: np.ndarray,
                   splits: list[tuple[np.ndarray, np.ndarray]], config: Config,
                   train_fold: Callable, workers: int, ready: Callable, progress: FoldProgress,
                   folders: set[Path]) -> None:
    """train_fold_models with `workers` processes, each handed its next job (ready(job))
    when it is free; on an error or Ctrl-C every worker stops and the files they were
    saving go, the models already saved stay."""
    # Each worker keeps TensorFlow's default thread pools, one thread per core: on 2 cores
    # two such workers train faster than two of one thread each, and the last fold,
    # training alone, still uses every core (README, measured figures).
    print(f"training {len(jobs)} fold models, {workers} at a time in worker processes",
          flush=True)
    others = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(x, y, os.getpid()))
    waiting, running, started = list(jobs), {}, set()

    def start_next() -> None:
        job = ready(waiting.pop(0))
        with _ctrl_c_held():  # the pool starts a worker in submit: it inherits this
            future = pool.submit(_train_in_worker, train_fold, job, splits[job.fold], config)
        running[future] = job
        started.update(set(multiprocessing.active_children()) - others)

    try:
        while waiting and len(running) < workers:
            start_next()
        while running:
            done, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            if not done and _any_ended(started):  # the pool may never notice: see _any_ended
                raise BrokenProcessPool("a worker process ended")
            for future in done:
                seconds = future.result()  # the job stays in running should it raise
                progress.done(running.pop(future), seconds)
                if waiting:
                    start_next()
    except BaseException as error:  # an error or Ctrl-C: stop every fold, keep saved ones
        _stop_workers(pool, others, folders)
        if isinstance(error, BrokenProcessPool):  # a worker ended abruptly: SIGKILLed
            # by the OOM killer, say. The pool fails every running job, and refuses more.
            training = sorted(running.values(), key=lambda job: job.number)
            # --jobs is part of a budget's plan: another makes a new plan, whose epochs
            # may not be those of the models saved.
            one_at_a_time = (" (--jobs 1 trains one at a time, in less memory, but plans "
                             "afresh, which may train the saved fold models again)"
                             if config.planned else ", with --jobs 1 to train one at a time")
            raise RunFailed(
                "a worker process was killed (out of memory?) while "
                f"{' and '.join(job.label() for job in training)} trained; the fold "
                f"models saved stay: run the same command again to resume{one_at_a_time}"
                ) from None
        raise
    if _any_ended(started):  # every model is saved; a shutdown would wait for ever
        _stop_workers(pool, others, folders)
    else:
        pool.shutdown(wait=True)


@contextlib.contextmanager
def _ctrl_c_held():
    """Ctrl-C held back meanwhile, and acted on after: SIGINT blocked in this thread, so
    that a worker started now never gets it (a blocked signal stays blocked across fork
    and exec), and recorded rather than raised here, so that the worker is the pool's
    before the run stops it. Ctrl-C reaches every process of the terminal's group: it is
    now the parent's alone, which stops the workers itself, where a worker still
    importing TensorFlow printed its own traceback. (submit waits for a new worker to
    read its data: seconds.)"""
    if (not hasattr(signal, "pthread_sigmask")  # Windows: no terminal process groups
            or threading.current_thread() is not threading.main_thread()):  # no handlers
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)  # Python's own: KeyboardInterrupt


def _any_ended(workers: set) -> bool:
    """Whether a worker process has ended. One killed while idle (the OOM killer) dies
    holding the lock of the queue the others take jobs from: they can take none, and
    the pool, when it hears of the death together with other news, waits for ever."""
    return any(worker.exitcode is not None for worker in workers)


def _stop_workers(pool: ProcessPoolExecutor, others: set, folders: set[Path]) -> None:
    """Stop the pool and its worker processes (this process's children but others) now,
    and remove the files they were saving."""
    pool.shutdown(wait=False, cancel_futures=True)
    processes = set(multiprocessing.active_children()) - others
    for worker in processes:
        worker.terminate()
    for worker in processes:
        worker.join(timeout=10)
    for folder in folders:
        remove_stale_partials(folder)
