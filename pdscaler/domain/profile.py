"""The measured performance of one replica (one engine instance) of a serving stack.

A :class:`PerfProfile` holds measured points: prefill time by input length, and decode
operating points (inter-token latency and throughput by context length and batch size).
It answers the two questions capacity sizing asks: how long does one prefill take, and how
many tokens/s and sequences can one decode replica carry within an ITL SLO.

Pure: no I/O and the standard library only. Loaders that read profiler output live in
``pdscaler.profiles``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import groupby, pairwise


class ProfileError(ValueError):
    """A profile cannot be built from its source; the message names the source and the fault."""


@dataclass(frozen=True)
class PrefillPoint:
    """A single request of ``isl_tokens`` input tokens takes ``ttft_ms`` to its first token."""

    isl_tokens: float
    ttft_ms: float


@dataclass(frozen=True)
class DecodePoint:
    """One decode operating point of one replica.

    ``concurrency`` sequences of ``context_tokens`` each are decoded together, each producing a
    token every ``itl_ms``; ``tokens_per_s`` is the replica's output tokens/s at that point.
    """

    context_tokens: float
    concurrency: float
    itl_ms: float
    tokens_per_s: float


@dataclass(frozen=True)
class DecodeCapacity:
    """What one decode replica carries: output tokens/s and sequences, at ITL ``itl_ms``."""

    tokens_per_s: float
    concurrency: float
    itl_ms: float


@dataclass(frozen=True, eq=False)
class PerfProfile:
    """The performance of ONE replica, from measured points. Compared by identity.

    Construction validates: a non-empty name and non-empty point lists, every value positive
    and finite, prefill points strictly increasing in ``isl_tokens``, decode points sorted by
    ``context_tokens`` and, within one context length, strictly increasing in
    ``concurrency``; ``max_kv_tokens`` is None (unknown) or positive. A violation raises
    ValueError naming the profile and the offending point.
    """

    name: str
    prefill: tuple[PrefillPoint, ...]
    decode: tuple[DecodePoint, ...]
    max_kv_tokens: int | None
    source: str
    _prefill_fit: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _curves: tuple[tuple[float, tuple[DecodePoint, ...]], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._validate()
        xs = [p.isl_tokens for p in self.prefill]
        ys = [p.ttft_ms for p in self.prefill]
        object.__setattr__(self, "_prefill_fit", _polyfit(xs, ys, degree=min(2, len(xs) - 1)))
        curves = tuple(
            (context, tuple(points))
            for context, points in groupby(self.decode, key=lambda p: p.context_tokens)
        )
        object.__setattr__(self, "_curves", curves)

    def prefill_ms(self, isl_tokens: float) -> float:
        """Time to first token of one request of ``isl_tokens`` input tokens, in ms.

        Inside the measured range: piecewise-linear interpolation between measured points
        (a measured length returns its measurement). Outside it: the least-squares fit
        ``a + b·n + c·n²`` over all measured points (a lower degree with fewer than three
        points), clamped so that the answer stays positive and consistent with the
        measurements: above the range never less than the longest measured prefill; below it
        never more than the shortest measured prefill, nor less than that prefill's time
        scaled down in proportion to length (a shorter prompt is not cheaper per token).
        Raises ValueError unless ``isl_tokens`` is positive and finite.
        """
        _require_positive("isl_tokens", isl_tokens)
        first, last = self.prefill[0], self.prefill[-1]
        if isl_tokens < first.isl_tokens:
            floor_ms = first.ttft_ms * isl_tokens / first.isl_tokens
            return min(max(self._fit_ms(isl_tokens), floor_ms), first.ttft_ms)
        if isl_tokens > last.isl_tokens:
            return max(self._fit_ms(isl_tokens), last.ttft_ms)
        i = bisect_left(self.prefill, isl_tokens, key=lambda p: p.isl_tokens)
        hi = self.prefill[i]
        if hi.isl_tokens == isl_tokens:
            return hi.ttft_ms
        lo = self.prefill[i - 1]
        share = (isl_tokens - lo.isl_tokens) / (hi.isl_tokens - lo.isl_tokens)
        return _lerp(lo.ttft_ms, hi.ttft_ms, share)

    def prefill_tokens_per_s(self, isl_tokens: float) -> float:
        """Prefill throughput of one replica serving requests of ``isl_tokens`` one at a time."""
        return isl_tokens / self.prefill_ms(isl_tokens) * 1000.0

    def decode_capacity(self, context_tokens: float, itl_slo_ms: float) -> DecodeCapacity | None:
        """The highest-throughput operating point with ITL within ``itl_slo_ms``.

        Along each measured context length's curve (points in order of concurrency, joined
        by straight lines), the best point is the one of highest tokens/s on the part of the
        curve within the SLO, e.g. where a segment reaches the SLO. Between two measured
        context lengths the curve searched is the two curves blended at equal concurrency,
        as :meth:`itl_ms` blends them (each sequence producing a token every ITL), so that
        the capacity answered is the one the ITL model delivers; beyond the measured range
        the nearest curve is used.
        When ``max_kv_tokens`` is known, concurrency is capped at
        ``max_kv_tokens / context_tokens`` (before interpolating, so the chosen point is the
        best capped one) and tokens/s falls in proportion, keeping the point's ITL (fewer
        sequences decode no slower, so this errs on the safe side).

        Returns None when a curve used has no point within the SLO (even its smallest
        measured batch is too slow). The answer never decreases as the SLO is relaxed; an
        infinite SLO (none) gives the highest-throughput point. Raises ValueError unless
        ``context_tokens`` is positive and finite and ``itl_slo_ms`` positive.
        """
        _require_positive("context_tokens", context_tokens)
        _require_slo("itl_slo_ms", itl_slo_ms)
        kv_cap = self._concurrency_cap(context_tokens)
        bracket = [(weight, points) for weight, points in self._bracket(context_tokens) if weight]
        if len(bracket) == 1:
            return _best_within_slo(bracket[0][1], itl_slo_ms, kv_cap)
        return _best_within_slo(_blended_curve(bracket, context_tokens), itl_slo_ms, kv_cap)

    def lowest_itl_capacity(self, context_tokens: float) -> DecodeCapacity:
        """The operating point of lowest ITL for ``context_tokens``: no SLO can do better.

        On each curve used (chosen and interpolated as in :meth:`decode_capacity`) the point
        of lowest measured ITL, KV-capped the same way. Callers size with it when
        :meth:`decode_capacity` finds no point within the SLO.
        """
        _require_positive("context_tokens", context_tokens)
        kv_cap = self._concurrency_cap(context_tokens)
        return _blend(
            [
                (weight, _capped(_as_capacity(min(points, key=lambda p: p.itl_ms)), kv_cap))
                for weight, points in self._bracket(context_tokens)
            ]
        )

    def itl_ms(self, context_tokens: float, concurrency: float) -> float:
        """Inter-token latency of ``concurrency`` sequences of ``context_tokens`` decoded
        together: piecewise-linear along each measured curve (below its smallest batch, that
        batch's ITL; beyond its largest, the last segment's slope, never faster), blended
        between the two measured context lengths around ``context_tokens``."""
        _require_positive("context_tokens", max(context_tokens, 1.0))
        return sum(
            weight * _itl_along(points, max(concurrency, 1.0))
            for weight, points in self._bracket(context_tokens)
        )

    def _fit_ms(self, isl_tokens: float) -> float:
        scale, *coefficients = self._prefill_fit
        x = isl_tokens / scale
        return sum(c * x**power for power, c in enumerate(coefficients))

    def _concurrency_cap(self, context_tokens: float) -> float | None:
        return None if self.max_kv_tokens is None else self.max_kv_tokens / context_tokens

    def _bracket(self, context_tokens: float) -> list[tuple[float, tuple[DecodePoint, ...]]]:
        """The curves to use for ``context_tokens``, with their interpolation weights."""
        contexts = [context for context, _ in self._curves]
        if context_tokens <= contexts[0]:
            return [(1.0, self._curves[0][1])]
        if context_tokens >= contexts[-1]:
            return [(1.0, self._curves[-1][1])]
        i = bisect_left(contexts, context_tokens)
        (lo_context, lo_points), (hi_context, hi_points) = self._curves[i - 1], self._curves[i]
        share = (context_tokens - lo_context) / (hi_context - lo_context)
        return [(1.0 - share, lo_points), (share, hi_points)]

    def _validate(self) -> None:
        where = f"profile {self.name!r}"
        if not self.name:
            raise ValueError("a profile needs a name")
        if not self.prefill or not self.decode:
            raise ValueError(f"{where}: needs at least one prefill and one decode point")
        kinds: tuple[tuple[str, Sequence[PrefillPoint | DecodePoint]], ...] = (
            ("prefill", self.prefill),
            ("decode", self.decode),
        )
        for kind, points in kinds:
            for i, point in enumerate(points):
                for label, value in asdict(point).items():
                    _require_positive(f"{where}: {kind}[{i}].{label}", value)
        _require_increasing(
            f"{where}: prefill points", "isl_tokens", [(p.isl_tokens,) for p in self.prefill]
        )
        _require_increasing(
            f"{where}: decode points",
            "context_tokens, then concurrency",
            [(d.context_tokens, d.concurrency) for d in self.decode],
        )
        if self.max_kv_tokens is not None and self.max_kv_tokens <= 0:
            raise ValueError(f"{where}: max_kv_tokens must be positive, got {self.max_kv_tokens}")


def _best_within_slo(
    points: Sequence[DecodePoint], itl_slo_ms: float, kv_cap: float | None
) -> DecodeCapacity | None:
    """The highest-throughput point of one curve with ITL ≤ the SLO (KV-capped), or None.

    Along a straight segment tokens/s, concurrency and ITL change linearly, and the capped
    tokens/s is linear below the cap and monotone above it. So the best point of the part of
    the curve within the SLO is a measured point, a point where the curve crosses the SLO or
    a point where it crosses the KV cap; these are the candidates, which makes the answer
    exact and never smaller for a looser SLO.
    """
    candidates = [_as_capacity(p) for p in points]
    for a, b in pairwise(points):
        if _crosses(a.itl_ms, b.itl_ms, itl_slo_ms):
            at_slo = _along(a, b, (itl_slo_ms - a.itl_ms) / (b.itl_ms - a.itl_ms))
            candidates.append(replace(at_slo, itl_ms=itl_slo_ms))
        if kv_cap is not None and _crosses(a.concurrency, b.concurrency, kv_cap):
            candidates.append(
                _along(a, b, (kv_cap - a.concurrency) / (b.concurrency - a.concurrency))
            )
    within = [_capped(c, kv_cap) for c in candidates if c.itl_ms <= itl_slo_ms]
    return max(within, key=lambda c: c.tokens_per_s) if within else None


def _blended_curve(
    bracket: Sequence[tuple[float, Sequence[DecodePoint]]], context_tokens: float
) -> tuple[DecodePoint, ...]:
    """The curve between two measured contexts: at every concurrency either curve measured,
    the weighted ITL of both (:meth:`PerfProfile.itl_ms`), each sequence a token per ITL."""
    concurrencies = sorted({p.concurrency for _, points in bracket for p in points})
    curve = []
    for n in concurrencies:
        itl = sum(weight * _itl_along(points, n) for weight, points in bracket)
        curve.append(DecodePoint(context_tokens, n, itl, n / itl * 1000.0))
    return tuple(curve)


def _itl_along(points: Sequence[DecodePoint], concurrency: float) -> float:
    if concurrency <= points[0].concurrency:
        return points[0].itl_ms
    for a, b in pairwise(points):
        if concurrency <= b.concurrency:
            share = (concurrency - a.concurrency) / (b.concurrency - a.concurrency)
            return _lerp(a.itl_ms, b.itl_ms, share)
    last = points[-1]
    if len(points) == 1:
        return last.itl_ms * concurrency / last.concurrency
    before = points[-2]
    slope = max((last.itl_ms - before.itl_ms) / (last.concurrency - before.concurrency), 0.0)
    return last.itl_ms + slope * (concurrency - last.concurrency)


def _crosses(start: float, end: float, level: float) -> bool:
    return min(start, end) < level < max(start, end)


def _along(a: DecodePoint, b: DecodePoint, share: float) -> DecodeCapacity:
    """The point ``share`` of the way from ``a`` to ``b`` on the straight segment."""
    return DecodeCapacity(
        tokens_per_s=_lerp(a.tokens_per_s, b.tokens_per_s, share),
        concurrency=_lerp(a.concurrency, b.concurrency, share),
        itl_ms=_lerp(a.itl_ms, b.itl_ms, share),
    )


def _as_capacity(point: DecodePoint) -> DecodeCapacity:
    return DecodeCapacity(point.tokens_per_s, point.concurrency, point.itl_ms)


def _capped(capacity: DecodeCapacity, kv_cap: float | None) -> DecodeCapacity:
    """Limit concurrency to what the KV cache holds; tokens/s falls in proportion."""
    if kv_cap is None or capacity.concurrency <= kv_cap:
        return capacity
    kept = kv_cap / capacity.concurrency
    return DecodeCapacity(capacity.tokens_per_s * kept, kv_cap, capacity.itl_ms)


def _blend(weighted: Sequence[tuple[float, DecodeCapacity]]) -> DecodeCapacity:
    return DecodeCapacity(
        tokens_per_s=sum(w * c.tokens_per_s for w, c in weighted),
        concurrency=sum(w * c.concurrency for w, c in weighted),
        itl_ms=sum(w * c.itl_ms for w, c in weighted),
    )


def _lerp(a: float, b: float, share: float) -> float:
    return a + (b - a) * share


def _require_positive(label: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{label} must be a positive finite number, got {value}")


def _require_slo(label: str, value: float) -> None:
    """An SLO is positive; +inf means there is none."""
    if not value > 0:  # also refuses NaN
        raise ValueError(f"{label} must be positive (or inf for none), got {value}")


def _require_increasing(what: str, order: str, keys: Sequence[tuple[float, ...]]) -> None:
    for i, (before, after) in enumerate(pairwise(keys), start=1):
        if after <= before:
            raise ValueError(
                f"{what} must be strictly increasing in {order}: point [{i}] {after} comes "
                f"after {before}"
            )


def _polyfit(xs: Sequence[float], ys: Sequence[float], degree: int) -> tuple[float, ...]:
    """Least-squares polynomial fit: (scale, c0, c1, …) with y ≈ Σ c_k·(x/scale)^k.

    x is divided by its largest value first: the normal equations of raw token counts
    (x⁴ ~ 1e17) would lose most of a double's precision.
    """
    scale = max(xs)
    size = degree + 1
    us = [x / scale for x in xs]
    # Normal equations (VᵀV)·c = Vᵀy of the Vandermonde matrix V, as one augmented matrix.
    rows = [
        [sum(u ** (j + k) for u in us) for k in range(size)]
        + [sum(y * u**j for u, y in zip(us, ys, strict=True))]
        for j in range(size)
    ]
    return (scale, *_solve(rows))


def _solve(rows: list[list[float]]) -> list[float]:
    """Solve an augmented linear system by Gaussian elimination with partial pivoting."""
    size = len(rows)
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(col + 1, size):
            factor = rows[r][col] / rows[col][col]
            rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col], strict=True)]
    solution = [0.0] * size
    for r in reversed(range(size)):
        known = sum(rows[r][k] * solution[k] for k in range(r + 1, size))
        solution[r] = (rows[r][size] - known) / rows[r][r]
    return solution
