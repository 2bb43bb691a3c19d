"""The server's measurements, written in Prometheus' text format (``GET /metrics``).

Three kinds, as Prometheus names them: counters (only go up), gauges (a value now) and
histograms (how many observations fell at or below each bucket bound, their sum and count).
Labels have a fixed, small set of values (route names, status codes), so memory stays bounded
however long the server runs. Updates come from the event loop and from the model's worker
thread, so each metric has a lock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence

__all__ = ["Counter", "Gauge", "Histogram", "Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]

# Seconds: from a tokenization of a few words (~0.1 ms) to a 2,048-text request (minutes).
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_INPUT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
BATCH_TOKEN_BUCKETS = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    pairs = [*labels, extra] if extra else list(labels)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A count that only goes up, one per set of label values."""

    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}_total{_label_text(k)} {_number(v)}" for k, v in items]


class Gauge(_Metric):
    """A value that goes up and down (no labels)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._value = 0.0

    def add(self, amount: float) -> None:
        with self._lock:
            self._value += amount

    def set(self, value: float) -> None:
        with self._lock:
            self._value = value

    @property
    def value(self) -> float:
        return self._value

    def lines(self) -> list[str]:
        return [f"{self.name} {_number(self._value)}"]


class Histogram(_Metric):
    """Observations counted into cumulative buckets, one series per set of label values."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text)
        self.bounds = tuple(sorted(buckets)) + (math.inf,)
        self._series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * len(self.bounds), [0.0]))
            for i, bound in enumerate(self.bounds):  # the first bucket that holds it
                if value <= bound:
                    counts[i] += 1
                    break
            total[0] += value

    def lines(self) -> list[str]:
        with self._lock:
            series = sorted((k, (list(c), t[0])) for k, (c, t) in self._series.items())
        out = []
        for labels, (counts, total) in series:
            running = 0
            for bound, n in zip(self.bounds, counts, strict=True):
                running += n
                le = ("le", _number(bound))
                out.append(f"{self.name}_bucket{_label_text(labels, le)} {running}")
            out.append(f"{self.name}_sum{_label_text(labels)} {_number(total)}")
            out.append(f"{self.name}_count{_label_text(labels)} {running}")
        return out


class Metrics:
    """Everything ``GET /metrics`` reports, prefixed ``npdistil_``."""

    def __init__(self) -> None:
        self.requests = Counter("npdistil_requests", "HTTP requests answered, by route and status")
        self.request_duration = Histogram(
            "npdistil_request_duration_seconds",
            "Time from a request's arrival to its answer, by route",
            TIME_BUCKETS,
        )
        self.in_flight = Gauge(
            "npdistil_requests_in_flight", "Requests admitted and not yet answered"
        )
        self.inputs = Counter("npdistil_inputs", "Inputs (texts, pairs) received, by route")
        self.tokens = Counter(
            "npdistil_tokens", "Tokens run through the model, special tokens included"
        )
        self.dropped = Counter(
            "npdistil_dropped_inputs",
            "Inputs never run because their client disconnected first",
        )
        self.queue_size = Gauge("npdistil_queue_size", "Inputs waiting for the model")
        self.batch_inputs = Histogram(
            "npdistil_batch_size", "Inputs per forward pass", BATCH_INPUT_BUCKETS
        )
        self.batch_tokens = Histogram(
            "npdistil_batch_tokens", "Tokens per forward pass (no padding)", BATCH_TOKEN_BUCKETS
        )
        self.tokenization_duration = Histogram(
            "npdistil_tokenization_duration_seconds",
            "Time to read, check and tokenize one request",
            TIME_BUCKETS,
        )
        self.queue_duration = Histogram(
            "npdistil_queue_duration_seconds",
            "Time an input waits in the queue for its forward pass",
            TIME_BUCKETS,
        )
        self.inference_duration = Histogram(
            "npdistil_inference_duration_seconds",
            "Time of one forward pass and its pooling",
            TIME_BUCKETS,
        )

    def _all(self) -> Iterable[Counter | Gauge | Histogram]:
        return (
            self.requests,
            self.request_duration,
            self.in_flight,
            self.inputs,
            self.tokens,
            self.dropped,
            self.queue_size,
            self.batch_inputs,
            self.batch_tokens,
            self.tokenization_duration,
            self.queue_duration,
            self.inference_duration,
        )

    def render(self) -> str:
        """The exposition text: HELP and TYPE lines, then each series."""
        lines: list[str] = []
        for metric in self._all():
            lines += metric.header() + metric.lines()
        return "\n".join(lines) + "\n"
