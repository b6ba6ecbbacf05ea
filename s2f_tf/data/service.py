"""The tf.data service for training input (`s2f data-service`, `s2f train --data_service=...`).

TensorFlow's own servers: one dispatcher, and workers that run the input pipeline (reading the
shards, cropping, batching) and stream batches to the trainers. A trainer sends its pipeline's graph
to the dispatcher; the shards must be readable from every worker at the same path (a shared or
object-store path). Sharding is OFF, as TensorFlow advises for training streams: every worker
reads the whole repeated training split, shuffled in its own nondeterministic order, and the
trainers of one run (one job) share the stream. A run therefore cannot resume at an exact input
position: a restart resumes the weights, optimizer and step exactly, and reads fresh batches.

TensorFlow's data servers listen on every interface (their gRPC port takes no host); run them on
a private network, or behind a firewall that admits only the trainers.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading

import tensorflow as tf

PREFIX = "grpc://"
STOP_SECONDS = 20.0  # how long `s2f data-service` waits for TensorFlow's servers to stop


def address(value: str) -> str:
    """'grpc://HOST:PORT' or 'HOST:PORT' -> 'grpc://HOST:PORT' (a clear error otherwise)."""
    rest = value[len(PREFIX) :] if value.startswith(PREFIX) else value
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a tf.data service address is grpc://HOST:PORT, got {value!r}")
    return PREFIX + rest


@dataclasses.dataclass
class Servers:
    dispatcher: object | None  # tf.data.experimental.service.DispatchServer, when started here
    target: str  # grpc://HOST:PORT of the dispatcher
    workers: list  # tf.data.experimental.service.WorkerServer

    def worker_tasks(self) -> list[int]:
        """Tasks (pipelines of trainers' jobs) each worker has run."""
        return [int(w._num_tasks()) for w in self.workers]  # TF's own accessor, used by its tests

    def stop(self, timeout: float) -> bool:
        """Stops the workers, then the dispatcher (so no worker is left calling a stopped one);
        False when they have not all stopped within `timeout` seconds."""
        servers = [*self.workers, *([self.dispatcher] if self.dispatcher else [])]
        stopping = threading.Thread(target=lambda: [s.stop() for s in servers], daemon=True)
        stopping.start()
        stopping.join(timeout)
        return not stopping.is_alive()


def start(port: int, workers: int, dispatcher: str = "", host: str = "127.0.0.1") -> Servers:
    """A dispatcher on `port` (0: a free one), unless `dispatcher` names one to join, and `workers`
    workers that register with it, advertising `host` as their address."""
    service = tf.data.experimental.service
    server = None
    if dispatcher:
        target = address(dispatcher)
    else:
        server = service.DispatchServer(service.DispatcherConfig(port=port), start=True)
        target = PREFIX + f"{host}:{server.target.rsplit(':', 1)[1]}"
    started = [
        service.WorkerServer(
            service.WorkerConfig(
                dispatcher_address=target[len(PREFIX) :], worker_address=f"{host}:%port%"
            )
        )
        for _ in range(workers)
    ]
    return Servers(server, target, started)


def run(port: int, workers: int, dispatcher: str = "", host: str = "127.0.0.1") -> None:
    """`s2f data-service`: starts the servers, says where, serves until SIGTERM or SIGINT, says what
    each worker did and stops the servers, waiting at most STOP_SECONDS for them."""
    if workers < 0 or (workers == 0 and dispatcher):
        raise ValueError(f"--workers must be >= 0 (>= 1 with --dispatcher), got {workers}")
    servers = start(port, workers, dispatcher, host)
    started = "joined" if dispatcher else "dispatcher"
    print(
        f"tf.data service: {started} {servers.target}, {workers} worker(s); train with "
        f"`s2f train --data_service={servers.target} ...`; stop with Ctrl-C or SIGTERM",
        flush=True,
    )
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"tf.data service: stopped; tasks run per worker: {servers.worker_tasks()}", flush=True)
    if not servers.stop(STOP_SECONDS):
        print(
            f"warning: TensorFlow's data servers did not shut down within {STOP_SECONDS:.0f} s; "
            "exiting without them",
            file=sys.stderr,
            flush=True,
        )
