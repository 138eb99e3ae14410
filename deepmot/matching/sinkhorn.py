"""Entropic (unbalanced) optimal transport solvers, batched over images.

:func:`sinkhorn_log` is the log-domain scaling algorithm (stable for any cost scale and size);
:func:`sinkhorn_exp` reproduces the exp-domain iteration of the uotod reference code (for
comparisons only). Both solve, per image ``b``,

    min_P <P, C> - eps H(P) + tau_a KL(P 1 | a) + tau_b KL(P^T 1 | b)

(``tau = inf``: the marginal is a hard constraint). Updates, with ``lam = tau / (tau + eps)``:
``g <- lam_b (eps log b - eps LSE_i((f_i - C_ij) / eps))``, then
``f <- lam_a (eps log a - eps LSE_j((g_j - C_ij) / eps))``, repeated ``n_iter`` times and
followed by a last ``g`` update (so balanced column marginals are exact), and
``P = exp((f_i + g_j - C_ij) / eps)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["eps_rule", "sinkhorn_log", "sinkhorn_exp"]


def eps_rule(n_pred: int | Tensor, eps0: float = 0.12, rule: str = "log2n") -> float | Tensor:
    """Entropic regularisation rule of thumb of the UOT paper: ``eps0 / (log(2 n) + 1)``
    (``rule="log2n"``: main text and code) or ``eps0 / (log(n) + 1)`` (``"logn"``: appendix).

    ``n_pred``: number of predictions (int, or a tensor of per-image counts >= 1).
    """
    if rule not in ("log2n", "logn"):
        raise ValueError(f"eps_rule must be 'log2n' or 'logn', got {rule!r}")
    factor = 2.0 if rule == "log2n" else 1.0
    if isinstance(n_pred, Tensor):
        n = n_pred.to(torch.float64).clamp(min=1.0)
        return eps0 / (torch.log(factor * n) + 1.0)
    return eps0 / (math.log(factor * max(int(n_pred), 1)) + 1.0)


def _lam(tau: float, eps: Tensor) -> Tensor | float:
    if math.isinf(tau):
        return 1.0
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    return tau / (tau + eps)


def _as_eps(eps: float | Tensor, batch: int, like: Tensor) -> Tensor:
    e = torch.as_tensor(eps, dtype=like.dtype, device=like.device)
    if e.dim() == 0:
        e = e.expand(batch)
    if e.shape != (batch,):
        raise ValueError(f"eps must be a scalar or have shape ({batch},), got {tuple(e.shape)}")
    if not torch.all(e > 0):
        raise ValueError("eps must be > 0")
    return e


def sinkhorn_log(cost: Tensor, log_a: Tensor, log_b: Tensor, eps: float | Tensor, *, n_iter: int = 20,
                 tol: float | None = None, tau_a: float = math.inf, tau_b: float = math.inf,
                 init: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Log-domain (unbalanced) Sinkhorn, batched.

    ``cost`` (B, N, M), ``+inf`` = forbidden pair (``NaN``/``-inf`` are not allowed);
    ``log_a`` (B, N), ``log_b`` (B, M): log marginals, ``-inf`` for masked entries; ``eps`` a
    float or (B,) tensor. ``n_iter``: maximum number of iterations; ``tol``: stop an image once
    its error is below it -- balanced rows (``tau_a = inf``): max relative row-marginal error
    ``max_i |sum_j P_ij - a_i| / a_i``; otherwise the change of ``log u = f / eps`` (max abs).
    The loop stops when every image has converged. Rows/columns whose every pair is forbidden
    get no mass. Returns ``plan`` (B, N, M) in the units of ``a``/``b``, potentials ``f`` (B, N)
    and ``g`` (B, M), and ``n_iter_done`` (B,) int64 (``n_iter`` for images that did not reach
    ``tol``).
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must be (B, N, M), got shape {tuple(cost.shape)}")
    bsz, n, m = cost.shape
    if log_a.shape != (bsz, n) or log_b.shape != (bsz, m):
        raise ValueError(f"log_a {tuple(log_a.shape)} / log_b {tuple(log_b.shape)} do not fit cost {tuple(cost.shape)}")
    if torch.isnan(cost).any() or torch.isneginf(cost).any():
        raise ValueError("cost contains NaN or -inf (use +inf for forbidden pairs)")
    dt = torch.promote_types(cost.dtype, torch.float32)
    cost = cost.to(dt)
    e = _as_eps(eps, bsz, cost)
    e2, e3 = e[:, None], e[:, None, None]
    allowed = torch.isfinite(cost)
    row_ok = torch.isfinite(log_a) & (allowed & torch.isfinite(log_b)[:, None, :]).any(2)
    col_ok = torch.isfinite(log_b) & (allowed & row_ok[:, :, None]).any(1)
    row_ok = row_ok & (allowed & col_ok[:, None, :]).any(2)
    la = torch.where(row_ok, log_a.to(dt), torch.full_like(log_a, -math.inf, dtype=dt))
    lb = torch.where(col_ok, log_b.to(dt), torch.full_like(log_b, -math.inf, dtype=dt))
    neg_inf_f = torch.full((bsz, n), -math.inf, dtype=dt, device=cost.device)
    neg_inf_g = torch.full((bsz, m), -math.inf, dtype=dt, device=cost.device)
    lam_a, lam_b = _lam(tau_a, e2), _lam(tau_b, e2)

    def g_update(f: Tensor) -> Tensor:
        lse = torch.logsumexp((f[:, :, None] - cost) / e3, dim=1)
        return torch.where(col_ok, lam_b * (e2 * lb - e2 * lse), neg_inf_g)

    def f_update(g: Tensor) -> tuple[Tensor, Tensor]:
        lse = torch.logsumexp((g[:, None, :] - cost) / e3, dim=2)
        return torch.where(row_ok, lam_a * (e2 * la - e2 * lse), neg_inf_f), lse

    if init is None:
        f = torch.where(row_ok, torch.zeros_like(la), neg_inf_f)
    else:
        f = torch.where(row_ok, init[0].to(dt), neg_inf_f)
    n_done = torch.full((bsz,), n_iter, dtype=torch.int64, device=cost.device)
    converged = torch.zeros(bsz, dtype=torch.bool, device=cost.device)
    balanced_rows = math.isinf(tau_a)
    g = neg_inf_g
    for it in range(n_iter):
        g = g_update(f)
        f_new, lse = f_update(g)
        if tol is not None:
            if balanced_rows:
                # Row marginals of the plan (f, g) before this f update.
                rows = torch.exp(f / e2 + lse)
                rel = torch.where(row_ok, (rows - la.exp()).abs() / la.exp(), torch.zeros_like(rows))
            else:
                diff = (f_new - f) / e2
                rel = torch.where(row_ok, diff.abs(), torch.zeros_like(diff))
            err = rel.amax(dim=1) if n > 0 else rel.new_zeros(bsz)
            newly = (err < tol) & ~converged
            n_done[newly] = it + 1
            converged |= newly
        f = f_new
        if tol is not None and bool(converged.all()):
            break
    g = g_update(f)
    plan = torch.exp((f[:, :, None] + g[:, None, :] - cost) / e3)
    plan = torch.where(row_ok[:, :, None] & col_ok[:, None, :], plan, torch.zeros_like(plan))
    return plan, f, g, n_done


def sinkhorn_exp(cost: Tensor, a: Tensor, b: Tensor, eps: float | Tensor, *, n_iter: int = 20,
                 tau_a: float = math.inf, tau_b: float = math.inf) -> Tensor:
    """Exp-domain scaling iteration as in the uotod reference code (comparisons only).

    ``cost`` (B, N, M) finite, ``a`` (B, N), ``b`` (B, M) marginals (0 = masked). ``u = 1``;
    ``n_iter`` times ``v = (b / K^T u)^lam_b, u = (a / K v)^lam_a``; then a last ``v`` update;
    returns ``P = u K v`` (B, N, M). Underflows for small ``eps``; prefer :func:`sinkhorn_log`.
    """
    bsz = cost.shape[0]
    e = _as_eps(eps, bsz, cost)
    e2, e3 = e[:, None], e[:, None, None]
    lam_a, lam_b = _lam(tau_a, e2), _lam(tau_b, e2)
    kernel = torch.exp(-cost / e3)
    u = torch.ones_like(a, dtype=cost.dtype)
    v = torch.ones_like(b, dtype=cost.dtype)
    for _ in range(n_iter):
        v = (b / torch.einsum("bnm,bn->bm", kernel, u)) ** lam_b
        u = (a / torch.einsum("bnm,bm->bn", kernel, v)) ** lam_a
    v = (b / torch.einsum("bnm,bn->bm", kernel, u)) ** lam_b
    return u[:, :, None] * kernel * v[:, None, :]
