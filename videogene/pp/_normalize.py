"""Value checks, raw-count detection, sparse normalize_total + log1p, time parsing."""

from __future__ import annotations

import math
import re

import numpy as np
import scipy.sparse as sp

from ..errors import InputError

#: counts per cell after normalize_total (fixed, so slices and files share one scale)
TARGET_SUM = 1e4

_TIME_RE = re.compile(r"^\s*[A-Za-z]*\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*[A-Za-z]*\s*$")


def parse_time(value, *, name: str = "time") -> float:
    """``9.5``, ``"9.5"``, ``"E9.5"``, ``"E12.5 "``, ``"P0"`` -> float days."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        t = float(value)
    else:
        m = _TIME_RE.match(str(value))
        if not m:
            raise InputError(f"{name}: cannot read a time from {value!r} (expected e.g. 9.5 or E9.5)")
        t = float(m.group(1))
    if not math.isfinite(t):
        raise InputError(f"{name}: time {value!r} is not finite")
    return t


def _data_of(x) -> np.ndarray:
    return x.data if sp.issparse(x) else np.asarray(x).ravel()


def check_values(x, *, name: str) -> None:
    """NaN, infinite or negative values -> InputError."""
    data = _data_of(x)
    if data.size == 0:
        return
    if not np.isfinite(data).all():
        raise InputError(f"{name}: expression contains NaN or infinite values")
    if data.min() < 0:
        raise InputError(f"{name}: expression contains negative values (min {data.min():.3g}); "
                         "expected counts or log-normalized values >= 0")


def looks_like_counts(x) -> bool:
    """Raw counts: every stored value an integer, and not a 0/1 indicator matrix."""
    data = _data_of(x)
    data = data[data != 0]
    if data.size == 0:
        return False
    return bool(np.all(np.equal(np.mod(data, 1), 0)) and data.max() > 1)


def normalize_log1p(x, *, target_sum: float = TARGET_SUM):
    """normalize_total (to ``target_sum`` per cell) then log1p, sparse in, sparse out."""
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float32, copy=True)
        totals = np.asarray(x.sum(axis=1)).ravel()
        factors = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        x.data *= np.repeat(factors, np.diff(x.indptr)).astype(np.float32)
        np.log1p(x.data, out=x.data)
        return x
    x = np.asarray(x, dtype=np.float32)
    totals = x.sum(axis=1, keepdims=True)
    factors = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(x * factors)
