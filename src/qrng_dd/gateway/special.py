"""The special functions behind the randomness report's p-values, in pure Python.

numpy has no incomplete gamma function and SciPy would be a large dependency for two
functions, so they are written here from their classical definitions (Numerical Recipes,
2nd ed., §6.2) and checked against closed forms and known values in the tests.
"""

from __future__ import annotations

import math

__all__ = ["binomial_sf", "igamc"]

# igamc: relative precision, iteration cap and the smallest positive float guard of the
# modified Lentz continued fraction (Numerical Recipes, 2nd ed., §6.2 gser / gcf). The series
# and the fraction both converge in O(sqrt(a)) steps near x ~ a; the cap is far above that for
# every a this module uses (a = blocks / 2).
_EPS = 1e-15
_ITMAX = 100_000
_FPMIN = 1e-300


def igamc(a: float, x: float) -> float:
    """
    Return the regularized upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a).

    This is SP 800-22's ``igamc``. For x < a + 1 it sums the series of P(a, x) and returns
    1 - P; otherwise it evaluates the continued fraction of Q with the modified Lentz method.

    Args:
        a: shape, > 0.
        x: lower limit of integration, >= 0.

    Returns:
        Q(a, x) in [0, 1].

    Raises:
        ValueError: if ``a <= 0`` or ``x < 0``.
    """
    if not (a > 0 and x >= 0):
        msg = f"igamc needs a > 0 and x >= 0, got a={a!r}, x={x!r}"
        raise ValueError(msg)
    if x == 0:
        return 1.0
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        return max(0.0, 1.0 - _gamma_series(a, x, log_prefactor))
    return min(1.0, _gamma_fraction(a, x, log_prefactor))


def _gamma_series(a: float, x: float, log_prefactor: float) -> float:
    """P(a, x) by its power series (converges for x < a + 1)."""
    ap, term = a, 1.0 / a
    total = term
    for _ in range(_ITMAX):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(log_prefactor)


def _gamma_fraction(a: float, x: float, log_prefactor: float) -> float:
    """Q(a, x) by its continued fraction, modified Lentz method (converges for x >= a + 1)."""
    b = x + 1.0 - a
    c = 1.0 / _FPMIN
    d = 1.0 / b
    h = d
    for i in range(1, _ITMAX):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = d if abs(d) >= _FPMIN else _FPMIN
        c = b + an / c
        c = c if abs(c) >= _FPMIN else _FPMIN
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h * math.exp(log_prefactor)


def binomial_sf(n: int, p: float, k: int) -> float:
    """P(Binomial(n, p) > k): terms in log space (lgamma), summed up the tail until negligible."""
    log_p, log_q, log_n_fact = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    total = 0.0
    for j in range(k + 1, n + 1):
        log_term = log_n_fact - math.lgamma(j + 1) - math.lgamma(n - j + 1)
        term = math.exp(log_term + j * log_p + (n - j) * log_q)
        total += term
        if j > n * p and term <= total * _EPS:  # past the mode the terms only shrink
            break
    return total
