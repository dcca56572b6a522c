"""Float64 reference implementations of every method's loss, written independently of
kd_core.methods (numpy, explicit loops where the definition is a sum over pairs or triples)."""

from __future__ import annotations

import numpy as np


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(z))


def kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Σ_k p log(p/q) per row, with 0·log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return terms.sum(axis=1)


def kd(zs, zt, T):
    return T * T * kl_rows(softmax(zt / T), softmax(zs / T)).mean()


def kd_per_sample(zs, zt, T):
    return kl_rows(softmax(zt / T), softmax(zs / T))


def dkd_per_sample(zs, zt, y, T):
    """(TCKD_i, NCKD_i, p_t^T_i) from the full softmax: b = [p_t, Σ_{j≠t} p_j],
    p̂ = the non-target probabilities renormalised."""
    ps, pt = softmax(zs / T), softmax(zt / T)
    tckd, nckd, ptt = [], [], []
    for i, c in enumerate(y):
        rest = [j for j in range(ps.shape[1]) if j != c]
        bs = np.array([[ps[i, c], ps[i, rest].sum()]])
        bt = np.array([[pt[i, c], pt[i, rest].sum()]])
        tckd.append(kl_rows(bt, bs)[0])
        hs, ht = ps[i, rest] / ps[i, rest].sum(), pt[i, rest] / pt[i, rest].sum()
        nckd.append(kl_rows(ht[None], hs[None])[0])
        ptt.append(pt[i, c])
    return np.array(tckd), np.array(nckd), np.array(ptt)


def dkd(zs, zt, y, T, alpha, beta):
    tckd, nckd, _ = dkd_per_sample(zs, zt, y, T)
    return alpha * T * T * tckd.mean(), beta * T * T * nckd.mean()


def _pearson(a, b, eps=1e-8):
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b) + eps)


def dist(zs, zt, T, beta, gamma):
    ys, yt = softmax(zs / T), softmax(zt / T)
    inter = 1 - np.mean([_pearson(ys[i], yt[i]) for i in range(len(ys))])
    intra = 1 - np.mean([_pearson(ys[:, j], yt[:, j]) for j in range(ys.shape[1])]) if len(ys) > 1 else 0.0
    return beta * T * T * inter, gamma * T * T * intra


def logit_std(zs, zt, T, eps=1e-7):
    def z(v):
        return (v - v.mean(1, keepdims=True)) / (v.std(1, ddof=1, keepdims=True) + eps)

    return kd(z(np.asarray(zs, np.float64)), z(np.asarray(zt, np.float64)), T)


def fitnets_conv(v, u, weight, bias, coef):
    """½‖u − (W v + b)‖² per sample with a 1×1 conv W (O, C): v (B, C, H, W), u (B, O, H, W)."""
    r = np.einsum("oc,bchw->bohw", weight, v) + bias[None, :, None, None]
    return coef * 0.5 * np.mean([((u[i] - r[i]) ** 2).sum() for i in range(len(v))])


def fitnets_linear(v, u, weight, bias, coef):
    r = v.reshape(len(v), -1) @ weight.T + bias
    return coef * 0.5 * np.mean(((u.reshape(len(u), -1) - r) ** 2).sum(axis=1))


def at(student_maps, teacher_maps, beta, p=2.0):
    """β/2 Σ_j mean((q_s − q_t)²), q = vec(Σ_c |A_c|^p) / ‖·‖₂."""

    def q(a):
        m = (np.abs(a) ** p).sum(axis=1).reshape(len(a), -1)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    return beta / 2 * sum(((q(s) - q(t)) ** 2).mean() for s, t in zip(student_maps, teacher_maps))


def sp(student_maps, teacher_maps, gamma):
    total, b = 0.0, len(student_maps[0])
    for s, t in zip(student_maps, teacher_maps):
        gs = s.reshape(b, -1) @ s.reshape(b, -1).T
        gt = t.reshape(b, -1) @ t.reshape(b, -1).T
        gs = gs / np.linalg.norm(gs, axis=1, keepdims=True)
        gt = gt / np.linalg.norm(gt, axis=1, keepdims=True)
        total += ((gt - gs) ** 2).sum()
    return gamma / b**2 * total


def _huber(x):
    return np.where(np.abs(x) < 1, 0.5 * x * x, np.abs(x) - 0.5)


def rkd(es, et, w_dist, w_angle):
    es, et = es.reshape(len(es), -1), et.reshape(len(et), -1)
    b = len(es)

    def psi_d(e):
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(b)] for i in range(b)])
        off = d[~np.eye(b, dtype=bool)]
        return d / off.mean() if off.size and off.mean() > 0 else d

    def psi_a(e):
        out = np.zeros((b, b, b))
        for j in range(b):
            for i in range(b):
                for k in range(b):
                    u, v = e[i] - e[j], e[k] - e[j]
                    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                    out[j, i, k] = 0.0 if nu == 0 or nv == 0 else (u @ v) / (nu * nv)
        return out

    return (w_dist * _huber(psi_d(es) - psi_d(et)).mean(), w_angle * _huber(psi_a(es) - psi_a(et)).mean())
