"""What the jobs of one cohort (hydra/launcher=nsae_bank) share in their process: one
activation source (its LM and fixed inputs), one training stream.

Every job of a cohort has the same source, data, layers, seed and starting step (the
launcher groups them so), so each job would open the same activation source. The first
job's datamodule opens it, under the process's RNG lock; the others get the same object
(`CohortShare.activations`). LM forwards go through `LockedHarvester` (one forward at a
time: a splice hook on a layer must not leak into another job's forward). The training
batches come from one `SharedStream`: the first job to ask for batch i harvests it, every
job is served the same tensor, and a batch is dropped once every job still training has
taken it. A producer thread harvests up to `max_lead` batches past the slowest job (as
many tokens as the shuffle buffer holds), so the LM's forwards overlap the SAE steps and
the memory held for laggards (a job validating, or still setting up) stays bounded. In the
final evaluation, each batch's clean forward (the splice metrics' reference) runs once for
the cohort (`clean_log_probs`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from torch import Tensor

from nsae import rng

MAX_CLEAN = 2  # evaluation batches whose clean log-probabilities a cohort holds at once


class LockedHarvester:
    """A `Harvester` whose forwards (plain, or with a layer spliced) run one at a time."""

    def __init__(self, inner: Any, lock: threading.Lock) -> None:
        self.inner, self.lock = inner, lock

    def __call__(self, input_ids_BT: Tensor) -> Tensor:
        with self.lock:
            return self.inner(input_ids_BT)

    def logits(self, *args: Any, **kwargs: Any) -> Tensor:
        with self.lock:
            return self.inner.logits(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class SharedStream:
    """One iterator's items served to several consumers, each of which sees every item.

    A producer thread draws the items ahead of the consumers (the next buffer fill's LM
    forwards overlap the jobs' SAE steps), at most `max_lead` items past the slowest
    consumer; an item is dropped once every consumer has taken it or left."""

    def __init__(self, source: Iterable[Tensor], consumers: Iterable[str], max_lead: int) -> None:
        self._source = source
        self._cond = threading.Condition()
        self._items: dict[int, Tensor] = {}
        self._made = 0  # items drawn from the source so far
        self._error: BaseException | None = None
        self._producer: threading.Thread | None = None
        self.position = dict.fromkeys(consumers, 0)  # each consumer's next item
        self.max_lead = max_lead

    def consumer(self, name: str) -> Iterator[Tensor]:
        with self._cond:
            if self._producer is None:
                self._producer = threading.Thread(
                    target=self._produce, name="nsae-cohort-stream", daemon=True
                )
                self._producer.start()
        while True:
            yield self._get(name)

    def leave(self, name: str) -> None:
        """`name` takes no more items (its training ended, or it never trains)."""
        with self._cond:
            self.position.pop(name, None)
            self._drop_taken()
            self._cond.notify_all()

    def close(self) -> None:
        """Every consumer leaves; wait for the producer to end (it must not be inside an LM
        forward when the process exits)."""
        with self._cond:
            self.position.clear()
            self._items.clear()
            self._cond.notify_all()
        if self._producer is not None:
            self._producer.join()

    def _produce(self) -> None:
        try:
            items = iter(self._source)
            while True:
                with self._cond:
                    while self.position and self._made - min(self.position.values()) >= (
                        self.max_lead
                    ):
                        self._cond.wait()
                    if not self.position:  # every consumer left
                        return
                item = next(items)  # outside the lock: LM forwards
                with self._cond:
                    self._items[self._made] = item
                    self._made += 1
                    self._cond.notify_all()
        except BaseException as err:
            with self._cond:
                self._error = err
                self._cond.notify_all()

    def _get(self, name: str) -> Tensor:
        with self._cond:
            i = self.position[name]
            while i >= self._made:
                if self._error is not None:
                    raise RuntimeError(
                        f"the cohort's training stream failed: {self._error}"
                    ) from self._error
                self._cond.wait()
            item = self._items[i]
            self.position[name] = i + 1
            self._drop_taken()
            self._cond.notify_all()
            return item

    def _drop_taken(self) -> None:
        slowest = min(self.position.values(), default=self._made)
        for i in [i for i in self._items if i < slowest]:
            del self._items[i]


class _Consumer:
    def __init__(self, stream: SharedStream, name: str) -> None:
        self.stream, self.name = stream, name

    def __iter__(self) -> Iterator[Tensor]:
        return self.stream.consumer(self.name)


class CohortShare:
    """The state one cohort's jobs share; `names` are the jobs' run directories."""

    def __init__(self, names: list[str], max_lead: int = 64) -> None:
        self.names, self.max_lead = list(names), max_lead
        self.lm_lock = threading.Lock()
        self.source: Any = None  # the activation source, opened by the first job
        self.stream: SharedStream | None = None
        self.buffer: Iterable[Tensor] | None = None  # the stream's source (a ShuffleBuffer)
        self._stream_lock = threading.Lock()
        self.left: set[str] = set()
        self._clean: dict[Any, list[Any]] = {}  # batch key -> [log-probs or event, takes]
        self._clean_lock = threading.Lock()

    def activations(self, open_source: Callable[[], Any]) -> tuple[Any, bool]:
        """The cohort's activation source: opened by the first job that asks
        (`open_source()`), the same object for every later one; and whether this call
        opened it. Under the RNG lock: opening may reseed the global generator (a
        random-init LM, the synthetic source)."""
        with rng.GLOBAL_LOCK:
            if self.source is None:
                source = open_source()
                if getattr(source, "harvester", None) is not None:
                    source.harvester = LockedHarvester(source.harvester, self.lm_lock)
                self.source = source
                return source, True
            return self.source, False

    def train_stream(self, name: str, make: Callable[[], Iterable[Tensor]]) -> Iterable[Tensor]:
        """Job `name`'s training batches: `make()` builds the stream once, for all jobs."""
        with self._stream_lock:
            if self.stream is None:
                self.buffer = make()
                self.stream = SharedStream(self.buffer, self.names, self.max_lead)
                for gone in self.left:
                    self.stream.leave(gone)
        return _Consumer(self.stream, name)

    def clean_log_probs(self, key: Any, compute: Callable[[], Tensor]) -> Tensor:
        """The clean model's log-probabilities of the evaluation batch `key`, computed by the
        first job that asks and served to the others (the jobs of a cohort end training
        together and evaluate the same batches in the same order). An entry is dropped
        after every job has taken it; at most `MAX_CLEAN` are held (vocabulary-sized)."""
        with self._clean_lock:
            entry = self._clean.get(key)
            if entry is None:
                entry = self._clean[key] = [threading.Event(), 0, None]
                while len(self._clean) > MAX_CLEAN:  # the oldest (a job that never came)
                    del self._clean[next(iter(self._clean))]
                mine = True
            else:
                mine = False
        if mine:
            try:
                entry[2] = compute()
            finally:
                entry[0].set()
        else:
            entry[0].wait()
        value = entry[2] if entry[2] is not None else compute()  # (its maker failed)
        with self._clean_lock:
            entry[1] += 1
            if entry[1] >= len(self.names) and self._clean.get(key) is entry:
                del self._clean[key]
        return value

    def leave(self, name: str) -> None:
        """Job `name` takes no more training batches (its training ended, or it never
        trains)."""
        with self._stream_lock:
            self.left.add(name)
            if self.stream is not None:
                self.stream.leave(name)

    def close(self) -> None:
        """The cohort's jobs have ended: stop the stream's producer."""
        with self._stream_lock:
            if self.stream is not None:
                self.stream.close()
