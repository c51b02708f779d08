"""The chief of a search spread over machines: KerasTuner's oracle server, which also
ends when trials fail in a row.

KerasTuner 1.4's chief (oracle_chief.start_server) ends only once it has told each
worker to stop. Trials that fail in a row tell no one to stop: the oracle raises the
stop to each worker as that worker ends its trial, each worker exits, and the chief
serves on for ever. This server also ends once every worker has heard that stop, and
then raises it, as a search on one machine does.
"""

from __future__ import annotations

import os
import time
from concurrent import futures

import grpc
import keras_tuner as kt
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief

POLL_SECONDS = 1.0


class FailedOnWorkers(RuntimeError):
    """Trials failed in a row on the workers, which hold their messages (the oracle is told
    only that a trial failed)."""

    def __init__(self, limit: int):
        super().__init__(f"{limit} trials in a row failed")
        self.limit = limit


def serve(oracle: kt.Oracle) -> None:
    """Serve the oracle to the workers at $KERASTUNER_ORACLE_IP:$KERASTUNER_ORACLE_PORT
    until each has stopped; FailedOnWorkers if trials failed in a row."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # one call at a time
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{os.environ['KERASTUNER_ORACLE_IP']}:"
                             f"{os.environ['KERASTUNER_ORACLE_PORT']}")
    server.start()
    try:
        while True:
            time.sleep(POLL_SECONDS)
            if _failed_in_a_row(oracle):
                if _every_worker_told(oracle):
                    break
            elif servicer.stop_triggered and _every_worker_stopped(oracle):
                return
    finally:
        server.stop(grace=None)
    raise FailedOnWorkers(oracle.max_consecutive_failed_trials)


# Read without the oracle's lock: the server's thread keeps it for good once a call
# raised there, so oracle_chief.exit_chief, which waits for the lock, could wait for ever.
# Each read is one step the interpreter does not interleave with the server's calls.

def _failed_in_a_row(oracle: kt.Oracle) -> bool:
    try:
        oracle._check_consecutive_failures()
    except RuntimeError:
        return True
    return False


def _every_worker_told(oracle: kt.Oracle) -> bool:
    """Whether each worker still listed has ended its trial, and so heard the stop: the
    oracle raises it on every trial's end once the failures are in a row."""
    running = dict(oracle.ongoing_trials)
    ended = set(oracle.end_order)
    return all(tuner_id in running and running[tuner_id].trial_id in ended
               for tuner_id in list(oracle.tuner_ids))


def _every_worker_stopped(oracle: kt.Oracle) -> bool:
    """oracle_chief.exit_chief's test: no trial running, no worker listed."""
    return not oracle.ongoing_trials and not oracle.tuner_ids
