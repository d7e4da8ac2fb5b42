"""A simulated prefill/decode cluster that replays a request trace.

Event-driven, in simulated seconds. A request arrives at the router, which sends it to the
ready prefill replica with the least outstanding work. A prefill replica runs its queue in
batches under a token budget; a batch takes the profile's prefill time for its summed
input length. The KV cache then moves to a decode replica (bytes per token over the link).
A decode replica batches continuously: every sequence it holds produces a token every ITL,
the profile's ITL for the batch size and mean context length at the time; a sequence joins
when the replica's KV cache has room for its whole context, else it waits. The first token
comes from the decode replica when the sequence joins (as in vLLM's and SGLang's PD
setups): TTFT is queueing + prefill + transfer + waiting to join.

Decode progress is tracked as one "token clock" per replica (tokens each running sequence
has produced since the replica started), so an event costs O(log n), not O(batch).

Replicas asked for start Pending and become ready after the cold start; they cost GPU time
from the moment they are asked for. A replica removed stops taking work, finishes what it
holds (its queue too), then frees its GPUs: no request is ever dropped. Pending replicas
are removed first, then the least loaded.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pdscaler.domain.policy import Role
from pdscaler.domain.profile import PerfProfile
from pdscaler.sim.traces import Request


class State(StrEnum):
    PENDING = "pending"
    READY = "ready"
    DRAINING = "draining"
    GONE = "gone"


@dataclass(frozen=True)
class SimConfig:
    profile: PerfProfile
    cold_start_s: float = 60.0
    prefill_token_budget: int = 16384  # tokens one prefill batch may hold
    kv_bytes_per_token: float = 131_072.0  # Llama-3.1-8B: 32 layers x 8 KV heads x 128 x 2 x 2 B
    link_gbps: float = 400.0  # prefill-to-decode transfer bandwidth
    kv_capacity_tokens: int | None = None  # per decode replica; default: the profile's
    gpus_per_replica: dict[Role, int] = field(
        default_factory=lambda: {Role.PREFILL: 1, Role.DECODE: 1}
    )


@dataclass
class Outcome:
    """What happened to one request."""

    request: Request
    prefill_replica: int = -1
    decode_replica: int = -1
    prefill_start_s: float = math.nan  # its prefill batch began (it left the queue)
    prefilled_s: float = math.nan  # the prefill replica finished it (its own TTFT)
    first_token_s: float = math.nan
    done_s: float = math.nan

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.request.arrival_s

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first (0 for one-token answers)."""
        steps = self.request.output_tokens - 1
        return (self.done_s - self.first_token_s) / steps if steps > 0 else 0.0


@dataclass(frozen=True)
class ReplicaView:
    """One replica as its engine's gauges would show it now."""

    id: int
    role: Role
    state: State
    waiting: int  # prefill: queued for a batch; decode: waiting to join the batch
    running: int  # prefill: in the batch being prefilled; decode: sequences in the batch
    kv_tokens: float  # KV cache in use: the prefill batch's prompts, the decode batch's context
    kv_capacity: int
    decoded_tokens: float  # decode: tokens its running sequences have produced so far


@dataclass
class _Replica:
    id: int
    role: Role
    state: State
    asked_at: float
    ready_at: float
    freed_at: float = math.nan


@dataclass
class _Prefill(_Replica):
    queue: deque[Outcome] = field(default_factory=deque)
    queued_tokens: int = 0
    batch: list[Outcome] = field(default_factory=list)
    batch_tokens: int = 0

    @property
    def work(self) -> int:
        return self.queued_tokens + self.batch_tokens


@dataclass
class _Decode(_Replica):
    capacity: int = 0  # KV tokens
    clock: float = 0.0  # tokens each running sequence has produced since the replica started
    updated_at: float = 0.0
    itl_s: float = 0.0
    running: dict[int, tuple[Outcome, float]] = field(default_factory=dict)  # id: (o, joined)
    finishes: list[tuple[float, int]] = field(default_factory=list)  # (clock at end, id)
    input_sum: float = 0.0
    joined_sum: float = 0.0
    reserved: int = 0  # KV tokens set aside: each running sequence's input + output
    waiting: deque[Outcome] = field(default_factory=deque)
    waiting_tokens: int = 0  # input + output tokens of the waiting sequences
    version: int = 0  # invalidates scheduled completion events

    def kv_used(self) -> float:
        n = len(self.running)
        return self.input_sum + n * self.clock - self.joined_sum

    def mean_context(self) -> float:
        n = len(self.running)
        return self.kv_used() / n if n else 0.0


class Cluster:
    """Replays ``trace`` (arrival order) on pools of ``initial`` replicas, ready at 0."""

    def __init__(
        self, config: SimConfig, trace: Sequence[Request], initial: dict[Role, int]
    ) -> None:
        self.config = config
        self.profile = config.profile
        self.now = 0.0
        self.outcomes: list[Outcome] = []
        self._trace = trace
        self._next_request = 0
        self._events: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._sequence = itertools.count()
        self._ids = itertools.count()
        self._prefill: list[_Prefill] = []
        self._decode: list[_Decode] = []
        self._unrouted: deque[Outcome] = deque()  # no ready prefill replica yet
        self._to_decode: deque[Outcome] = deque()  # no ready decode replica yet
        capacity = config.kv_capacity_tokens or self.profile.max_kv_tokens or 1_000_000
        self._kv_capacity = capacity
        self._transfer_s_per_token = config.kv_bytes_per_token * 8 / (config.link_gbps * 1e9)
        self._gpu_seconds = {Role.PREFILL: 0.0, Role.DECODE: 0.0}
        self._finished_output_tokens = 0
        self.prefilled: list[Outcome] = []  # in order of prefill done, for metrics
        self.first_tokens: list[Outcome] = []  # in order of first token, for metrics
        self.finished: list[Outcome] = []  # in order of completion
        # (time, ITL in s, tokens produced at that ITL since the replica's previous event)
        self.itl_samples: list[tuple[float, float, float]] = []
        for role, count in initial.items():
            for _ in range(count):
                self._add(role, ready_at=0.0)
        if trace:
            self._push(trace[0].arrival_s, self._arrive, None)

    # -- driving ---------------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        """Process every event up to simulated time ``t``."""
        events = self._events
        while events and events[0][0] <= t:
            at, _seq, handle, argument = heapq.heappop(events)
            self.now = at
            handle(argument)
        self.now = max(self.now, t)

    def done(self) -> bool:
        """Every request of the trace has finished."""
        return len(self.finished) == len(self._trace)

    def set_replicas(self, role: Role, count: int) -> None:
        """Grow (new replicas start Pending) or shrink (pending first, then least loaded)."""
        pool = self._pool(role)
        active = [r for r in pool if r.state in (State.PENDING, State.READY)]
        for _ in range(count - len(active)):
            replica = self._add(role, ready_at=self.now + self.config.cold_start_s)
            self._push(replica.ready_at, self._ready, replica)
        if count >= len(active):
            return
        victims = sorted(active, key=lambda r: (r.state is State.READY, self._load(r)))
        for replica in victims[: len(active) - count]:
            self._drain(replica)

    # -- what the pools look like ----------------------------------------------------------

    def counts(self, role: Role) -> tuple[int, int, int]:
        """(ready, pending, draining) replicas."""
        states = [r.state for r in self._pool(role)]
        return states.count(State.READY), states.count(State.PENDING), states.count(State.DRAINING)

    def gpu_seconds(self, role: Role) -> float:
        """GPU time used so far: from asked for to freed (or now)."""
        gpus = self.config.gpus_per_replica[role]
        total = self._gpu_seconds[role]
        for replica in self._pool(role):
            if replica.state is not State.GONE:
                total += (self.now - replica.asked_at) * gpus
        return total

    def queued(self, role: Role) -> tuple[int, int]:
        """(requests, tokens) waiting: for prefill, to be prefilled; for decode, to join."""
        if role is Role.PREFILL:
            requests = len(self._unrouted) + sum(len(r.queue) for r in self._prefill)
            tokens = sum(o.request.input_tokens for o in self._unrouted) + sum(
                r.queued_tokens for r in self._prefill
            )
            return requests, tokens
        waiting = [*self._to_decode, *(o for r in self._decode for o in r.waiting)]
        return len(waiting), sum(o.request.input_tokens for o in waiting)

    def running(self, role: Role) -> int:
        if role is Role.PREFILL:
            return sum(len(r.batch) for r in self._prefill)
        return sum(len(r.running) for r in self._decode)

    def kv_utilization(self) -> float:
        """Mean KV-cache use over the ready decode replicas (0 with none)."""
        ready = [
            r for r in self._decode if r.state is not State.PENDING and r.state is not State.GONE
        ]
        if not ready:
            return 0.0
        return sum(self._kv(r) / r.capacity for r in ready) / len(ready)

    def generated_tokens(self) -> float:
        """Output tokens produced so far: those of finished requests, and those running
        sequences have produced (each its first token, then one a step)."""
        total = float(self._finished_output_tokens)
        for r in self._decode:
            if r.running:
                total += len(r.running) + self._kv(r) - r.input_sum
        return total

    def pod_load(self, role: Role) -> dict[str, float]:
        return {
            f"{role.value}-{r.id}": float(self._load(r))
            for r in self._pool(role)
            if r.state is State.READY
        }

    def replicas(self, role: Role) -> list[ReplicaView]:
        """The pool's replicas not yet gone (pending, ready, draining), oldest first."""
        return [self._view(r) for r in self._pool(role)]

    def _view(self, r: _Replica) -> ReplicaView:
        if isinstance(r, _Prefill):
            kv, waiting, running, decoded = float(r.batch_tokens), len(r.queue), len(r.batch), 0.0
        else:
            assert isinstance(r, _Decode)
            kv, waiting, running = self._kv(r), len(r.waiting), len(r.running)
            # A running sequence has produced its first token, then one per step since it
            # joined: one each, plus the context beyond the prompts.
            decoded = running + kv - r.input_sum
        return ReplicaView(r.id, r.role, r.state, waiting, running, kv, self._kv_capacity, decoded)

    # -- events ----------------------------------------------------------------------------

    def _arrive(self, _: None) -> None:
        request = self._trace[self._next_request]
        self._next_request += 1
        if self._next_request < len(self._trace):
            self._push(self._trace[self._next_request].arrival_s, self._arrive, None)
        outcome = Outcome(request)
        self.outcomes.append(outcome)
        self._route_prefill(outcome)

    def _route_prefill(self, outcome: Outcome) -> None:
        ready = [r for r in self._prefill if r.state is State.READY]
        if not ready:
            self._unrouted.append(outcome)
            return
        replica = min(ready, key=lambda r: r.work)
        outcome.prefill_replica = replica.id
        replica.queue.append(outcome)
        replica.queued_tokens += outcome.request.input_tokens
        if not replica.batch:
            self._start_batch(replica)

    def _start_batch(self, replica: _Prefill) -> None:
        budget = self.config.prefill_token_budget
        batch: list[Outcome] = []
        tokens = 0
        while replica.queue and (
            not batch or tokens + replica.queue[0].request.input_tokens <= budget
        ):
            outcome = replica.queue.popleft()
            outcome.prefill_start_s = self.now
            tokens += outcome.request.input_tokens
            batch.append(outcome)
        if not batch:
            return
        replica.queued_tokens -= tokens
        replica.batch, replica.batch_tokens = batch, tokens
        self._push(self.now + self.profile.prefill_ms(tokens) / 1000.0, self._prefill_done, replica)

    def _prefill_done(self, replica: _Prefill) -> None:
        for outcome in replica.batch:
            outcome.prefilled_s = self.now
            self.prefilled.append(outcome)
            transfer = outcome.request.input_tokens * self._transfer_s_per_token
            self._push(self.now + transfer, self._decode_in, outcome)
        replica.batch, replica.batch_tokens = [], 0
        if replica.queue:
            self._start_batch(replica)
        elif replica.state is State.DRAINING:
            self._free(replica)

    def _decode_in(self, outcome: Outcome) -> None:
        self._route_decode(outcome)

    def _route_decode(self, outcome: Outcome) -> None:
        ready = [r for r in self._decode if r.state is State.READY]
        if not ready:
            self._to_decode.append(outcome)
            return
        replica = max(ready, key=lambda r: r.capacity - self._kv(r) - r.waiting_tokens)
        outcome.decode_replica = replica.id
        replica.waiting.append(outcome)
        replica.waiting_tokens += outcome.request.input_tokens + outcome.request.output_tokens
        self._admit(replica)

    def _admit(self, replica: _Decode) -> None:
        self._advance(replica)
        admitted = False
        while replica.waiting:
            request = replica.waiting[0].request
            need = request.input_tokens + request.output_tokens
            # Room is reserved for a sequence's whole context, output included, so the
            # cache never overflows as the batch grows (the schedulers' admission rule).
            if replica.running and replica.reserved + need > replica.capacity:
                break
            outcome = replica.waiting.popleft()
            replica.waiting_tokens -= need
            # The decode replica emits the first token once the KV cache is in and the
            # sequence has joined the batch (as vLLM's and SGLang's PD proxies work).
            outcome.first_token_s = self.now
            self.first_tokens.append(outcome)
            if request.output_tokens <= 1:
                self._finish(outcome)
                continue
            key = next(self._ids)
            replica.running[key] = (outcome, replica.clock)
            replica.input_sum += request.input_tokens
            replica.joined_sum += replica.clock
            replica.reserved += need
            heapq.heappush(replica.finishes, (replica.clock + request.output_tokens - 1, key))
            admitted = True
        if admitted:
            self._reschedule(replica)

    def _decode_due(self, due: tuple[_Decode, int]) -> None:
        replica, version = due
        if version == replica.version:  # else rescheduled since: this event is stale
            self._decode_done(replica)

    def _decode_done(self, replica: _Decode) -> None:
        """The first sequence is due to finish, or the ITL is due for an update."""
        self._advance(replica)
        while replica.finishes and replica.finishes[0][0] <= replica.clock + 1e-9:
            _end, key = heapq.heappop(replica.finishes)
            outcome, joined = replica.running.pop(key)
            replica.input_sum -= outcome.request.input_tokens
            replica.joined_sum -= joined
            replica.reserved -= outcome.request.input_tokens + outcome.request.output_tokens
            self._finish(outcome)
        if replica.waiting:
            self._admit(replica)
        self._reschedule(replica)
        if replica.state is State.DRAINING and not replica.running and not replica.waiting:
            self._free(replica)

    def _ready(self, replica: _Replica) -> None:
        if replica.state is not State.PENDING:
            return  # removed before it was ready
        replica.state = State.READY
        if isinstance(replica, _Prefill):
            pending, self._unrouted = self._unrouted, deque()
            for outcome in pending:
                self._route_prefill(outcome)
        else:
            assert isinstance(replica, _Decode)
            replica.updated_at = self.now
            pending, self._to_decode = self._to_decode, deque()
            for outcome in pending:
                self._route_decode(outcome)

    # -- decode bookkeeping ----------------------------------------------------------------

    def _advance(self, replica: _Decode) -> None:
        if replica.running and replica.itl_s > 0 and self.now > replica.updated_at:
            steps = (self.now - replica.updated_at) / replica.itl_s
            replica.clock += steps
            # As an engine's ITL histogram sees it: each token's gap, when it is produced.
            self.itl_samples.append((self.now, replica.itl_s, steps * len(replica.running)))
        replica.updated_at = self.now

    def _reschedule(self, replica: _Decode) -> None:
        replica.version += 1
        if not replica.running:
            replica.itl_s = 0.0
            return
        n = len(replica.running)
        replica.itl_s = self.profile.itl_ms(max(replica.mean_context(), 1.0), n) / 1000.0
        tokens_left = max(replica.finishes[0][0] - replica.clock, 0.0)
        # The context grows as tokens come: look no further ahead than a few percent of it,
        # so that the ITL is brought up to date as the batch's context lengthens.
        tokens_left = min(tokens_left, max(16.0, 0.02 * replica.mean_context()))
        self._push(self.now + tokens_left * replica.itl_s, self._decode_due,
                   (replica, replica.version))  # fmt: skip

    def _kv(self, replica: _Decode) -> float:
        if replica.running and replica.itl_s > 0:
            clock = replica.clock + (self.now - replica.updated_at) / replica.itl_s
        else:
            clock = replica.clock
        return replica.input_sum + len(replica.running) * clock - replica.joined_sum

    # -- replicas --------------------------------------------------------------------------

    def _pool(self, role: Role) -> list[_Prefill] | list[_Decode]:
        return self._prefill if role is Role.PREFILL else self._decode

    def _add(self, role: Role, ready_at: float) -> _Replica:
        state = State.READY if ready_at <= self.now else State.PENDING
        replica: _Replica
        if role is Role.PREFILL:
            replica = _Prefill(next(self._ids), role, state, self.now, ready_at)
            self._prefill.append(replica)
        else:
            replica = _Decode(next(self._ids), role, state, self.now, ready_at,
                              capacity=self._kv_capacity, updated_at=self.now)  # fmt: skip
            self._decode.append(replica)
        return replica

    def _load(self, replica: _Replica) -> float:
        if isinstance(replica, _Prefill):
            return replica.work
        assert isinstance(replica, _Decode)
        return len(replica.running) + len(replica.waiting)

    def _drain(self, replica: _Replica) -> None:
        if replica.state is State.PENDING:
            self._free(replica)
            return
        replica.state = State.DRAINING
        idle = (
            not replica.batch and not replica.queue
            if isinstance(replica, _Prefill)
            else not replica.running and not replica.waiting  # type: ignore[attr-defined]
        )
        if idle:
            self._free(replica)

    def _free(self, replica: _Replica) -> None:
        replica.state = State.GONE
        replica.freed_at = self.now
        gpus = self.config.gpus_per_replica[replica.role]
        self._gpu_seconds[replica.role] += (self.now - replica.asked_at) * gpus
        pool = self._pool(replica.role)
        pool.remove(replica)  # type: ignore[arg-type]

    def _finish(self, outcome: Outcome) -> None:
        outcome.done_s = self.now
        self._finished_output_tokens += outcome.request.output_tokens
        self.finished.append(outcome)

    def _push(self, at: float, handle: Callable[[Any], None], argument: object) -> None:
        heapq.heappush(self._events, (at, next(self._sequence), handle, argument))
