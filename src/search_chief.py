"""The chief of a search spread over machines: KerasTuner's oracle server, which also
ends when trials fail in a row.

KerasTuner 1.4's chief (oracle_chief.start_server) ends only once it has told each
worker to stop. Trials that fail in a row tell no one to stop: the oracle raises the
stop to a worker that ends its trial, but hands a worker that asks for one a new trial
(or, in Hyperband, has it wait for ever on the failed trial it still lists as running),
and the chief serves on for ever. This server tells each worker as it ends its trial or
asks for the next, ends once every worker has heard, and then raises the stop, as a
search on one machine does.

A worker waits for its chief (wait_for_chief) for minutes, not KerasTuner's hour: one
started after its chief has ended, or given another address, is told so, and one whose
chief dies mid-search stops in minutes.
"""

from __future__ import annotations

import os
import socket
import time
from concurrent import futures

import grpc
import keras_tuner as kt
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief, oracle_client

from src.errors import DataError
from src.util import format_duration

POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 5.0
# How long a worker waits for its chief to answer: long enough for a chief started after
# it to load its data; KerasTuner's own wait (oracle_client.TIMEOUT) is an hour.
CHIEF_WAIT_SECONDS = 600.0
QUIET_WAIT_SECONDS = 5.0  # a chief that answers in this time is not worth a line


class FailedOnWorkers(RuntimeError):
    """Trials failed in a row on the workers, which hold their messages (the oracle is told
    only that a trial failed)."""

    def __init__(self, limit: int):
        super().__init__(f"{limit} trials in a row failed")
        self.limit = limit


class Servicer(oracle_chief.OracleServicer):
    """KerasTuner's servicer, which tells a worker of trials failed in a row when it asks
    for a trial, as KerasTuner's oracle does when it ends one."""

    def __init__(self, oracle: kt.Oracle):
        super().__init__(oracle)
        self.told = 0  # the workers told so far

    def CreateTrial(self, request, context):  # gRPC names it
        """A trial for the worker; once trials have failed in a row, the stop instead."""
        if _failed_in_a_row(self.oracle):
            self.oracle.tuner_ids.discard(request.tuner_id)  # it stops: not waited for
            self.told += 1
            context.abort(grpc.StatusCode.ABORTED, "Number of consecutive failures exceeded "
                          f"the limit of {self.oracle.max_consecutive_failed_trials}.")
        return super().CreateTrial(request, context)

    def EndTrial(self, request, context):
        """End the worker's trial; the oracle raises the stop if trials failed in a row."""
        try:
            return super().EndTrial(request, context)
        except RuntimeError:
            self.told += 1
            raise


def serve(oracle: kt.Oracle) -> None:
    """Serve the oracle to the workers at $KERASTUNER_ORACLE_IP:$KERASTUNER_ORACLE_PORT
    until each has stopped; FailedOnWorkers if trials failed in a row."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # one call at a time
    servicer = Servicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{os.environ['KERASTUNER_ORACLE_IP']}:"
                             f"{os.environ['KERASTUNER_ORACLE_PORT']}")
    server.start()
    try:
        while True:
            time.sleep(POLL_SECONDS)
            if _failed_in_a_row(oracle):
                # At least one told: a rerun's chief finds the failures in its saved state
                # before any worker has asked.
                if servicer.told and _every_worker_told(oracle):
                    break
            elif servicer.stop_triggered and _every_worker_stopped(oracle):
                return
    finally:
        # The last worker's answer may still be on its way: let it go out.
        server.stop(grace=STOP_GRACE_SECONDS).wait()
    raise FailedOnWorkers(oracle.max_consecutive_failed_trials)


def wait_for_chief(address: str) -> None:
    """Return once a gRPC server answers at address ("ip:port"), saying so when it takes a
    while; DataError after CHIEF_WAIT_SECONDS. From then on each of KerasTuner's requests
    to the chief waits CHIEF_WAIT_SECONDS at most, not its hour (a chief that died)."""
    seconds = CHIEF_WAIT_SECONDS
    host, _, port = address.rpartition(":")
    try:  # a name no server can answer at: said now, not after minutes
        socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:  # UnicodeError: a name IDNA cannot encode
        said = getattr(error, "strerror", None) or str(error)
        raise DataError("an address this machine can look up", f"{address} ({said})",
                        column="$KERASTUNER_ORACLE_IP:$KERASTUNER_ORACLE_PORT") from None
    channel = grpc.insecure_channel(address)
    ready = grpc.channel_ready_future(channel)
    try:
        try:
            ready.result(timeout=min(QUIET_WAIT_SECONDS, seconds))
        except grpc.FutureTimeoutError:
            print(f"waiting for the chief at {address} (up to {format_duration(seconds)})",
                  flush=True)
            ready.result(timeout=max(seconds - QUIET_WAIT_SECONDS, 0.0))
    except grpc.FutureTimeoutError:
        raise DataError("a chief serving the search there", f"none answered at {address} in "
                        f"{format_duration(seconds)}", column="$KERASTUNER_ORACLE_IP:"
                        "$KERASTUNER_ORACLE_PORT", hint="start the chief (KERASTUNER_TUNER_ID="
                        "chief) first or beside its workers; a chief ends once its search "
                        "is done") from None
    finally:
        ready.cancel()
        channel.close()
    oracle_client.TIMEOUT = CHIEF_WAIT_SECONDS  # read by each request (keras-tuner < 1.5)


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
    oracle raises it on every trial's end once the failures are in a row (a worker told
    as it asked for a trial is no longer listed)."""
    running = dict(oracle.ongoing_trials)
    ended = set(oracle.end_order)
    return all(tuner_id in running and running[tuner_id].trial_id in ended
               for tuner_id in list(oracle.tuner_ids))


def _every_worker_stopped(oracle: kt.Oracle) -> bool:
    """oracle_chief.exit_chief's test: no trial running, no worker listed."""
    return not oracle.ongoing_trials and not oracle.tuner_ids
