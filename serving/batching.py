"""TF Serving's request batching, for the development server: `read_batching_parameters` reads the
text-format BatchingParameters file TF Serving takes (--batching_parameters_file, serving/batching.config)
and `Batcher` merges concurrent requests of one signature the way TF Serving documents it:

  - a request joins the open batch; one that would overflow max_batch_size starts a new batch, and
    when max_enqueued_batches batches already wait the request gets UNAVAILABLE ("The batch
    scheduling queue to which this task was submitted is full"); one larger than max_batch_size is
    INVALID_ARGUMENT;
  - a batch runs when it is full, or batch_timeout_micros after its first request, or when a newer
    batch has started behind it, on one of num_batch_threads threads;
  - its requests' inputs are concatenated along the batch dimension; inputs whose other dimensions
    differ fail the whole batch with TF Serving's FAILED_PRECONDITION ("Tensors with name ... from
    different tasks have different shapes and padding is turned off ..."), because s2f never pads
    samples (pad_variable_length_inputs: false; silence is not speech);
  - a request whose deadline passes while it waits gets DEADLINE_EXCEEDED, and its batch runs
    without it;
  - the merged batch is padded to the next allowed_batch_sizes entry with copies of the last
    request's first row, the model runs once, and each request gets its own rows back.

The file is parsed with protobuf's text_format into a BatchingParameters message built here with the
fields of TF Serving's session_bundle_config.proto (tensorflow-serving-api does not ship that proto),
so a file TF Serving accepts parses the same way, and a misspelt field fails with its line.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from serving.validation import RequestError

SHIPPED = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "batching.config"
)  # production's
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"
# TF Serving's defaults (BatchingParameters / BasicBatchScheduler::Options)
DEFAULTS = {
    "max_batch_size": 1000,
    "batch_timeout_micros": 0,
    "max_enqueued_batches": 10,
    "num_batch_threads": 4,
}
_WRAPPED = {  # field -> its google.protobuf wrapper type, as in session_bundle_config.proto
    "max_batch_size": "Int64Value",
    "batch_timeout_micros": "Int64Value",
    "max_enqueued_batches": "Int64Value",
    "num_batch_threads": "Int64Value",
    "thread_pool_name": "StringValue",
    "enable_large_batch_splitting": "BoolValue",
    "max_execution_batch_size": "Int64Value",
}


def _message_class():
    """BatchingParameters (the fields TF Serving's text files use) in a private descriptor pool."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="s2f/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    f = descriptor_pb2.FieldDescriptorProto
    for number, (name, wrapper) in enumerate(_WRAPPED.items(), 1):
        message.field.add(
            name=name,
            number=number,
            label=f.LABEL_OPTIONAL,
            type=f.TYPE_MESSAGE,
            type_name=f".google.protobuf.{wrapper}",
        )
    message.field.add(
        name="allowed_batch_sizes", number=20, label=f.LABEL_REPEATED, type=f.TYPE_INT64
    )
    message.field.add(
        name="pad_variable_length_inputs", number=21, label=f.LABEL_OPTIONAL, type=f.TYPE_BOOL
    )
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


@dataclass(frozen=True)
class BatchingParameters:
    max_batch_size: int = DEFAULTS["max_batch_size"]
    batch_timeout_micros: int = DEFAULTS["batch_timeout_micros"]
    max_enqueued_batches: int = DEFAULTS["max_enqueued_batches"]
    num_batch_threads: int = DEFAULTS["num_batch_threads"]
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def padded_size(self, rows: int) -> int:
        """The batch size a merged batch of `rows` runs at: the next allowed size (rows without any)."""
        return next((s for s in self.allowed_batch_sizes if s >= rows), rows)

    def merge(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Requests' inputs [rows, ...] (equal in every other dimension) -> the batch the model runs:
        concatenated along the batch dimension and padded to `padded_size` with copies of the last
        request's first row."""
        rows = sum(a.shape[0] for a in arrays)
        size = self.padded_size(rows)
        if len(arrays) == 1 and size == rows:
            return arrays[0]
        return np.concatenate(arrays + [np.repeat(arrays[-1][:1], size - rows, axis=0)])


def parse_batching_parameters(text: str, where: str = "batching parameters") -> BatchingParameters:
    """Text-format BatchingParameters -> BatchingParameters, checked as TF Serving checks them;
    ValueError naming `where` and the problem."""
    message = _message_class()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise ValueError(f"{where}: {e}") from None
    values = {k: getattr(message, k).value for k in DEFAULTS if message.HasField(k)}
    params = BatchingParameters(
        **values,
        allowed_batch_sizes=tuple(int(s) for s in message.allowed_batch_sizes),
        pad_variable_length_inputs=message.pad_variable_length_inputs,
    )
    sizes = params.allowed_batch_sizes
    problems = [
        (min(values.get(k, 1) for k in DEFAULTS) < 0 or params.max_batch_size < 1)
        and "sizes, counts and timeouts must be positive",
        sizes
        and (list(sizes) != sorted(set(sizes)) or sizes[0] < 1)
        and "allowed_batch_sizes must increase strictly from 1 or more",
        sizes
        and sizes[-1] != params.max_batch_size
        and (
            f"the last entry of allowed_batch_sizes ({sizes[-1]}) must equal max_batch_size "
            f"({params.max_batch_size})"
        ),
        params.pad_variable_length_inputs
        and "pad_variable_length_inputs: s2f never pads samples (silence would be heard as audio)",
        message.enable_large_batch_splitting.value
        and "enable_large_batch_splitting is not supported by the development server",
    ]
    problem = next((p for p in problems if p), None)
    if problem:
        raise ValueError(f"{where}: {problem}")
    return params


def read_batching_parameters(path: str) -> BatchingParameters:
    """--batching_parameters_file: OSError when unreadable, ValueError when malformed."""
    with open(path) as f:
        return parse_batching_parameters(f.read(), path)


@dataclass
class _Task:
    array: np.ndarray  # [rows, ...]
    deadline: float | None = None  # time.monotonic() by which the caller wants an answer
    done: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    error: RequestError | None = None


def _expired() -> RequestError:
    return RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded while queued")


@dataclass
class _Batch:
    started: float
    tasks: list[_Task] = field(default_factory=list)
    rows: int = 0


class Batcher:
    """One batching queue (TF Serving keeps one per model version and signature).

    Args:
      params: the BatchingParameters.
      run: the model call, merged input [B, ...] -> {output: [B, ...]} (raises RequestError).
      tensor_name: the input tensor's graph name, for TF Serving's mixed-shape message.
      on_batch: called (padded size, rows of requests) for every batch run (metrics).
    """

    def __init__(
        self,
        params: BatchingParameters,
        run: Callable[[np.ndarray], dict],
        tensor_name: str,
        on_batch: Callable[[int, int], None] | None = None,
    ):
        self.params = params
        self.run = run
        self.tensor_name = tensor_name
        self.on_batch = on_batch
        self._batches: deque[_Batch] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._loop, name="s2f-batch", daemon=True)
            for _ in range(max(1, params.num_batch_threads))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, array: np.ndarray, deadline: float | None = None) -> dict[str, np.ndarray]:
        """Queues one request's input [rows, ...] and waits for its rows of the outputs. A request
        whose `deadline` (time.monotonic()) passes while it waits gets DEADLINE_EXCEEDED, and a batch
        that has not run yet leaves it out, as TF Serving drops expired tasks."""
        p = self.params
        rows = int(array.shape[0])
        if rows > p.max_batch_size:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Task size {rows} is larger than maximum input batch size {p.max_batch_size}",
            )
        task = _Task(array, deadline)
        with self._cond:
            if self._closing:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, "this version is being unloaded")
            if not self._batches or self._batches[-1].rows + rows > p.max_batch_size:
                if len(self._batches) >= p.max_enqueued_batches:
                    raise RequestError(grpc.StatusCode.UNAVAILABLE, QUEUE_FULL)
                self._batches.append(_Batch(started=time.monotonic()))
            batch = self._batches[-1]
            batch.tasks.append(task)
            batch.rows += rows
            self._cond.notify_all()
        if not task.done.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
            raise _expired()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self) -> None:
        """Runs what is queued, then stops the threads; later submissions get UNAVAILABLE."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def _next(self) -> _Batch | None:
        """The next batch ready to run (blocks until one is), None once closed and drained."""
        timeout = self.params.batch_timeout_micros / 1e6
        with self._cond:
            while True:
                if self._batches:
                    first = self._batches[0]
                    wait = first.started + timeout - time.monotonic()
                    ready = (
                        first.rows >= self.params.max_batch_size
                        or len(self._batches) > 1
                        or wait <= 0
                        or self._closing
                    )
                    if ready:
                        return self._batches.popleft()
                    self._cond.wait(wait)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()

    def _loop(self) -> None:
        while (batch := self._next()) is not None:
            tasks = list(batch.tasks)  # all are answered, the expired ones too
            try:
                self._process(batch)
            except RequestError as e:
                for task in batch.tasks:
                    task.error = e
            except Exception as e:  # noqa: BLE001 -- every waiting request must get an answer
                error = RequestError(grpc.StatusCode.INTERNAL, f"internal error: {e}"[:2000])
                for task in batch.tasks:
                    task.error = error
            for task in tasks:
                task.done.set()

    def _process(self, batch: _Batch) -> None:
        """Merges, pads, runs once, splits (see the module docstring)."""
        now = time.monotonic()
        for task in batch.tasks:
            if task.deadline is not None and task.deadline <= now:
                task.error = _expired()
        batch.tasks = [t for t in batch.tasks if t.error is None]
        if not batch.tasks:
            return
        batch.rows = sum(t.array.shape[0] for t in batch.tasks)
        arrays = [t.array for t in batch.tasks]
        if any(a.shape[1:] != arrays[0].shape[1:] for a in arrays):
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Tensors with name '{self.tensor_name}' from different tasks have different "
                "shapes and padding is turned off. Set pad_variable_length_inputs to true, or "
                "ensure that all tensors with the same name have equal dimensions starting with "
                "the first dim.",
            )
        merged = self.params.merge(arrays)
        if self.on_batch is not None:
            self.on_batch(len(merged), batch.rows)
        outputs = self.run(merged)  # [size, ...] each
        at = 0
        for task in batch.tasks:
            rows = task.array.shape[0]
            task.result = {k: v[at : at + rows] for k, v in outputs.items()}
            at += rows
