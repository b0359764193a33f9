"""Worst-case perturbations: the stability test of Antun et al. (PNAS 2020).

Given a reconstruction map ``f`` (any pure function from measurements to an image: a
network closed over its parameters, a compressed-sensing solver, a user's function), an
image ``x`` and a measurement operator ``A`` (:mod:`mrijax.operators`; a mask is taken as
the Cartesian operator), the search looks for a small perturbation ``r`` whose effect on the
reconstruction is large.  It maximises

    Q(r) = 1/2 ||W (f(y + A r) - p)||^2 - lam/2 ||r||^2,      y = A x,

with ``p = f(y)`` (``target="prediction"``, the paper's choice for Deep MRI) or ``p = x``
(``target="truth"``), and ``W`` an optional region weight (only a zone of the output
counts).  Given an image as ``target`` the search is *targeted*: it maximises
``-1/2 ||W (f(y + A r) - p)||^2 - lam/2 ||r||^2``, pulling the reconstruction towards a
chosen false image.

Two searches, each with its own entry point and its own defaults (:data:`DEFAULTS`):

* :func:`algorithm1` (``method="algorithm1"``): Algorithm 1 of the paper, gradient ascent
  with momentum on the penalised ``Q``::

      r0 = tau * U[0, 1]          (drawn from the problem's key; real, as in the paper)
      v <- momentum * v + lr * grad Q(r)
      r <- r + v

  with ``lam = 1e-3``, ``lr = 1e-2`` (Table 1, Deep MRI) and a constant step.
* :func:`worst_case` (``method="projected"``): the constrained problem (eq. 8 of the
  paper), maximise ``1/2 ||W (f(y + A r) - p)||^2`` over ``||r|| <= radius``, by projected
  ascent with normalised steps, ``v <- momentum v + lr g / ||g||``, ``r <- P_ball(r + v)``,
  with ``lam = 0``, ``lr = radius / 20`` and a cosine step decay (so the search settles on a
  maximiser instead of circling it).

``grad`` is the steepest-ascent direction for the real inner product ``Re <a, b>`` on
complex images (JAX's ``grad`` returns its conjugate; we conjugate back).

``domain="image"`` (the paper): ``r`` is an image, measured through ``A``.
``domain="measurement"``: ``r`` lives in the measurement space (``A.restrict``: masked
k-space for Cartesian MRI, per coil for SENSE).

Batches.  Leading axes of ``x`` are independent problems, each with its own key,
hyper-parameters, radius, operator and stopping; the iterations run inside ``jit`` for the
whole batch, in chunks of ``chunk`` iterations (a host loop between chunks reports progress
and lets callers save and resume).  A problem that finishes (``steps``, ``max_r_norm``,
``max_diff_norm``) or diverges (non-finite values) freezes while the others go on.  Every
field of the state has the problem axis first, so padding and sharding are one
``tree.map``; with several devices the problem axis is sharded over a
``jax.sharding.Mesh`` of all local devices, and nothing changes for the caller.

``loop``: ``"scan"`` runs a chunk as one compiled ``lax.scan``; ``"host"`` calls one
compiled iteration per step from Python.  ``"auto"`` picks ``"host"`` on the CPU backend
(XLA:CPU runs a network's convolutions about 3x slower inside a rolled loop, and the
~0.1 ms dispatch is nothing next to an iteration) and ``"scan"`` on accelerators.

Multi-host (TPU pods): call ``jax.distributed.initialize()`` at start-up on every host,
then pass each host the same global batch; the mesh spans ``jax.devices()``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mrijax import metrics, operators
from mrijax._checks import (check_image, check_int, check_nonnegative, check_positive_finite, complex_dtype_for,
                            is_concrete)

__all__ = ["DEFAULTS", "HISTORY_KEYS", "LOOPS", "METHODS", "SWEEPABLE", "AttackResult", "AttackState", "Problems",
           "SearchConfig", "SweepResult", "algorithm1", "evaluate", "local_lipschitz", "noise_baseline",
           "result_from_state", "run", "setup", "sweep", "worst_case"]

Array = Any
ReconFn = Callable[[Array], Array]

HISTORY_KEYS = ("Q", "diff_norm", "r_norm", "Ar_norm", "ratio", "r_rel")
"""Per-iteration history: Q(r_t); ||f(y + A r_t) - f(y)||; ||r_t||; ||A r_t||;
their ratio ||f(y + A r_t) - f(y)|| / ||A r_t||; and ||r_t|| / ||x||."""

METHODS = ("projected", "algorithm1")
DEFAULTS = {
    "algorithm1": dict(lam=1e-3, lr=1e-2, momentum=0.9, tau=1e-2, schedule="constant"),
    "projected": dict(lam=0.0, lr=None, momentum=0.9, tau=1e-2, schedule="cosine"),
}
"""The defaults of each search; ``lr=None`` for ``"projected"`` means ``radius / 20``."""
LOOPS = ("auto", "host", "scan")

_TARGETS = ("prediction", "truth")
_DOMAINS = ("image", "measurement")
_RADIUS_REF = ("absolute", "x", "measurements")
_SCHEDULES = ("constant", "cosine")


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """The static (hashable) part of a search: what is compiled into the iteration."""
    method: str
    steps: int
    domain: str
    real: bool
    targeted: bool
    snapshots: tuple
    max_r_norm: float
    max_diff_norm: float
    schedule: str

    @property
    def projected(self) -> bool:
        return self.method == "projected"


class Problems(NamedTuple):
    """Per-problem data, each with a leading problem axis ``B``."""
    x: Array          # (B, H, W) complex image
    y: Array          # (B, *measurement_shape) A x
    op: Any           # the operator, every array with a leading B axis
    p: Array          # (B, H, W) reference image of the objective
    base: Array       # (B, H, W) f(y), for the output change
    weight: Array     # (B, H, W) region weight
    lam: Array        # (B,)
    lr: Array         # (B,)
    momentum: Array   # (B,)
    radius: Array     # (B,) (inf for Algorithm 1)
    x_norm: Array     # (B,)


class AttackState(NamedTuple):
    """Everything the search carries between iterations: enough to resume exactly.

    The problem axis is first in every field (``t`` is shared by all problems)."""
    r: Array            # (B, *r_shape) current perturbation (image, or measurements)
    v: Array            # (B, *r_shape) momentum
    t: Array            # () iterations done
    active: Array       # (B,) bool
    diverged: Array     # (B,) bool
    stopped_at: Array   # (B,) int, iteration count of the returned r
    snapshots: Array    # (B, S, *r_shape)
    history: dict       # name -> (B, steps), NaN after a problem stops


class AttackResult(NamedTuple):
    """What :func:`worst_case` / :func:`algorithm1` return (leading axes of ``x`` restored).

    Attributes:
      r: the final perturbation (image, or measurements for ``domain="measurement"``).
      snapshots: ``(S, ..., *r_shape)``, ``r`` after each requested iteration count (the
        early-stopped perturbations r1 < r2 < r3 of Antun Fig. 1); a problem that stopped
        earlier repeats its final ``r``.
      history: dict of ``(steps, ...)`` arrays, see :data:`HISTORY_KEYS`; NaN once stopped.
      stopped_at: number of updates behind ``r``.
      diverged: True where a non-finite value stopped the problem (``r`` is the last finite one).
      radius: the l2 radius per problem (inf for Algorithm 1).
    """
    r: Array
    snapshots: Array
    history: dict
    stopped_at: Array
    diverged: Array
    radius: Array


# ----------------------------------------------------------------------------- helpers


def _sqnorm(a):
    return jnp.sum(jnp.abs(a) ** 2)


def _measure(r, prob: Problems, cfg: SearchConfig):
    """``A r`` for one problem (image domain), or ``r`` restricted to the measurement space."""
    if cfg.domain == "measurement":
        return prob.op.restrict(r)
    return prob.op.forward(r)


def _restrict(g, prob: Problems, cfg: SearchConfig):
    """Keep a direction inside the search space (real images, or the measurement space)."""
    if cfg.domain == "measurement":
        g = prob.op.restrict(g)
    if cfg.real:
        g = jnp.real(g).astype(g.dtype)
    return g


def _objective(recon: ReconFn, cfg: SearchConfig, r, prob: Problems):
    out = recon(prob.y + _measure(r, prob, cfg))
    resid = prob.weight * (out - prob.p)
    sign = -1.0 if cfg.targeted else 1.0
    q = 0.5 * sign * _sqnorm(resid) - 0.5 * prob.lam * _sqnorm(r)
    return q, out


def _metrics(q, out, r, prob: Problems, cfg: SearchConfig):
    diff = jnp.sqrt(_sqnorm(out - prob.base))
    ar = jnp.sqrt(_sqnorm(_measure(r, prob, cfg)))
    rn = jnp.sqrt(_sqnorm(r))
    return {"Q": q, "diff_norm": diff, "r_norm": rn, "Ar_norm": ar,
            "ratio": diff / ar, "r_rel": rn / prob.x_norm}


def _project(r, radius):
    n = jnp.sqrt(_sqnorm(r))
    return r * jnp.minimum(1.0, radius / jnp.maximum(n, jnp.finfo(n.dtype).tiny))


def _one_step(recon, cfg: SearchConfig, t, prob: Problems, r, v, active, diverged, stopped_at):
    """One iteration of one problem.  Returns the new carry and the metrics of ``r``."""
    (q, out), g = jax.value_and_grad(functools.partial(_objective, recon, cfg), has_aux=True)(r, prob)
    g = _restrict(jnp.conj(g), prob, cfg)
    m = _metrics(q, out, r, prob, cfg)
    # Early stopping looks at the current iterate: it is the one returned.
    stop = (m["r_norm"] > cfg.max_r_norm) | (m["diff_norm"] >= cfg.max_diff_norm)
    if cfg.projected:
        g = g / jnp.maximum(jnp.sqrt(_sqnorm(g)), jnp.finfo(q.dtype).tiny)
    lr = prob.lr
    if cfg.schedule == "cosine":
        lr = lr * 0.5 * (1.0 + jnp.cos(jnp.pi * t / cfg.steps))
    v_new = prob.momentum * v + lr * g
    r_new = r + v_new
    if cfg.projected:
        r_new = _project(r_new, prob.radius)
    finite = jnp.isfinite(q) & jnp.all(jnp.isfinite(r_new)) & jnp.all(jnp.isfinite(out))
    go = active & ~stop & finite
    new_diverged = diverged | (active & ~stop & ~finite)
    r = jnp.where(go, r_new, r)
    v = jnp.where(go, v_new, v)
    stopped_at = jnp.where(active & ~go, t, stopped_at)
    return r, v, go, new_diverged, stopped_at, m


def _expand(a, ndim):
    return a.reshape(a.shape + (1,) * ndim)


def _iteration(recon, cfg: SearchConfig, prob: Problems, state: AttackState) -> AttackState:
    """One iteration of the search for all problems (the problems are vmapped)."""
    step = jax.vmap(functools.partial(_one_step, recon, cfg), in_axes=(None, 0, 0, 0, 0, 0, 0))
    t = state.t
    r, v, active, diverged, stopped_at, m = step(t, prob, state.r, state.v, state.active,
                                                 state.diverged, state.stopped_at)
    row = jnp.minimum(t, cfg.steps - 1)
    hist = {k: state.history[k].at[:, row].set(
        jnp.where(state.active, m[k].astype(state.history[k].dtype), state.history[k][:, row]))
        for k in HISTORY_KEYS}
    t1 = t + 1
    active = active & (t1 < cfg.steps)  # stopped_at starts at `steps`: nothing to record
    # r after t1 updates is r_{t1}: keep it for every snapshot count equal to t1.
    counts = jnp.asarray(cfg.snapshots, jnp.int32)
    take = (counts[None, :] == t1) & state.active[:, None]                 # (B, S)
    snaps = jnp.where(_expand(take, r.ndim - 1), r[:, None], state.snapshots)
    return AttackState(r, v, t1, active, diverged, stopped_at, snaps, hist)


def _advance(recon, cfg: SearchConfig, n: int, state: AttackState, prob: Problems) -> AttackState:
    """``n`` iterations for all problems in one compiled ``lax.scan``."""
    body = lambda s, _: (_iteration(recon, cfg, prob, s), None)
    state, _ = jax.lax.scan(body, state, None, length=n)
    return state


def _host_loop(loop: str) -> bool:
    """Whether to drive the iterations from the host (see the module docstring on ``loop``)."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    if loop == "auto":
        return jax.default_backend() == "cpu"
    return loop == "host"


@functools.lru_cache(maxsize=64)
def _compiled_advance(recon, cfg: SearchConfig, n: int):
    return jax.jit(functools.partial(_advance, recon, cfg, n))


@functools.lru_cache(maxsize=64)
def _compiled_iteration(recon, cfg: SearchConfig):
    return jax.jit(lambda state, prob: _iteration(recon, cfg, prob, state))


@functools.lru_cache(maxsize=64)
def _compiled_prepare(recon):
    return jax.jit(jax.vmap(recon))


# ----------------------------------------------------------------------------- set-up


def _as_problem_axis(a, batch_shape, tail_ndim, name):
    """Broadcast ``a`` to ``batch_shape + a.shape[-tail_ndim:]`` and flatten the batch."""
    a = jnp.asarray(a)
    tail = a.shape[a.ndim - tail_ndim:] if tail_ndim else ()
    try:
        a = jnp.broadcast_to(a, tuple(batch_shape) + tuple(tail))
    except ValueError as e:
        raise ValueError(f"{name} of shape {a.shape} does not broadcast to the batch {batch_shape}") from e
    return a.reshape((-1,) + tuple(tail))


def _keys_for(key, batch_shape):
    """One key per problem: a single key is split over the batch (a lone image uses it as is)."""
    key = jnp.asarray(key)
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    key_ndim = key.ndim if typed else key.ndim - 1
    n = int(np.prod(batch_shape)) if batch_shape else 1
    if key_ndim == 0:
        if not batch_shape:
            return key[None]
        return jax.random.split(key, n)
    kshape = key.shape if typed else key.shape[:-1]
    if tuple(kshape) != tuple(batch_shape):
        raise ValueError(f"key has batch shape {tuple(kshape)}; expected a single key or one per "
                         f"image, {tuple(batch_shape)}")
    return key.reshape((n,) + key.shape[len(kshape):])


def _resolve_target(target, x):
    if isinstance(target, str):
        if target not in _TARGETS:
            raise ValueError(f"target must be one of {_TARGETS} or an image, got {target!r}")
        return target, None
    t = jnp.asarray(target)
    check_image(t, "target")
    if t.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"target image has shape {t.shape[-2:]} but x is {x.shape[-2:]}")
    if is_concrete(t) and not bool(jnp.all(jnp.isfinite(t))):
        raise ValueError("target image contains NaN or infinity")
    return "image", t


def _bad_indices(ok, batch_shape) -> str:
    bad = np.argwhere(~np.asarray(ok).reshape(batch_shape or (1,)))
    return ", ".join(str(tuple(int(i) for i in b)) if len(b) > 1 else str(int(b[0])) for b in bad[:8])


def _call_traced(fn, *args):
    """Call a compiled function of ``recon``; a map that is not traceable gets a message saying so."""
    try:
        return fn(*args)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError,
            jax.errors.TracerBoolConversionError) as e:
        raise TypeError("the reconstruction map must be traceable by JAX (written with jax.numpy, no NumPy "
                        "calls, no Python branches on array values): the attack differentiates it under jit. "
                        "For a PyTorch model see the PyTorch bridge; the error was: "
                        f"{type(e).__name__}: {str(e).splitlines()[0]}") from e


def _mesh_sharding():
    """A 1-D mesh over all devices when there are several, else None."""
    devices = jax.devices()
    if len(devices) <= 1:
        return None, 1
    return Mesh(np.array(devices), ("problems",)), len(devices)


def _pad_problems(tree, n_pad):
    """Repeat the last problem ``n_pad`` times along the (leading) problem axis of every leaf."""
    if n_pad == 0:
        return tree
    return jax.tree.map(lambda a: a if jnp.ndim(a) == 0 else
                        jnp.concatenate([a, jnp.repeat(a[-1:], n_pad, axis=0)], axis=0), tree)


def _unpad_problems(tree, n):
    return jax.tree.map(lambda a: a if jnp.ndim(a) == 0 else a[:n], tree)


def _shard(tree, mesh):
    def put(a):
        spec = ["problems"] + [None] * (jnp.ndim(a) - 1) if jnp.ndim(a) else []
        return jax.device_put(a, NamedSharding(mesh, PartitionSpec(*spec)))
    return jax.tree.map(put, tree)


def setup(recon: ReconFn, x, operator, *, method: str, key, steps: int = 1000, radius=None, lam=None,
          momentum=None, lr=None, tau=None, schedule: str | None = None, target="prediction",
          domain: str = "image", real: bool = False, radius_relative_to: str = "absolute", region=None,
          snapshots: Sequence[int] = (), max_r_norm: float = math.inf, max_diff_norm: float = math.inf,
          coil_maps=None):
    """Validate the inputs and build the initial state of a search.

    Takes the arguments of :func:`worst_case` / :func:`algorithm1` and the ``method``
    (``"projected"`` or ``"algorithm1"``); hyper-parameters left ``None`` take the method's
    :data:`DEFAULTS`.  ``lam``, ``lr``, ``momentum``, ``tau`` and ``radius`` may be scalars or
    arrays broadcastable to the batch shape of ``x`` (one value per problem; this is how
    :func:`sweep` runs a grid).  Everything is checked before any compilation.

    Returns ``(cfg, problems, state, batch_shape)``, to be driven by :func:`run`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = jnp.asarray(x)
    check_image(x)
    op = operators.as_operator(operator, coil_maps)
    operators.check_fits(op, x)
    check_int(steps, "steps", 1)
    if domain not in _DOMAINS:
        raise ValueError(f"domain must be one of {_DOMAINS}, got {domain!r}")
    if radius_relative_to not in _RADIUS_REF:
        raise ValueError(f"radius_relative_to must be one of {_RADIUS_REF}, got {radius_relative_to!r}")
    projected = method == "projected"
    if projected and radius is None:
        raise ValueError("the projected search needs a radius (||r|| <= radius); for the penalised search "
                         "without one use attacks.algorithm1")
    if not projected and radius is not None:
        raise ValueError("Algorithm 1 has no radius (it penalises lam ||r||^2); for ||r|| <= radius use "
                         "attacks.worst_case")
    defaults = DEFAULTS[method]
    lam = defaults["lam"] if lam is None else lam
    momentum = defaults["momentum"] if momentum is None else momentum
    tau = defaults["tau"] if tau is None else tau
    schedule = defaults["schedule"] if schedule is None else schedule
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
    snapshots = tuple(int(s) for s in snapshots)
    if any(s < 0 or s > steps for s in snapshots):
        raise ValueError(f"snapshots must lie in [0, steps={steps}], got {snapshots}")
    for name, val in (("lam", lam), ("momentum", momentum), ("tau", tau), ("max_r_norm", max_r_norm),
                      ("max_diff_norm", max_diff_norm)):
        check_nonnegative(val, name)
    if lr is not None:
        check_positive_finite(lr, "lr (the step size; a negative one would descend)")
    if projected:
        check_positive_finite(radius, "radius")
    target_kind, target_img = _resolve_target(target, x)

    batch_shape = tuple(x.shape[:-2])
    hw = tuple(x.shape[-2:])
    xb = x.reshape((-1,) + hw).astype(complex_dtype_for(x))
    n = xb.shape[0]
    if is_concrete(xb):
        finite = jnp.all(jnp.isfinite(xb), axis=(-2, -1))
        if not bool(jnp.all(finite)):
            raise ValueError(f"x contains NaN or infinity in image(s) {_bad_indices(finite, batch_shape)}")
    opb = operators.broadcast(op, batch_shape)
    r_shape = op.measurement_shape if domain == "measurement" else hw
    cfg = SearchConfig(method=method, steps=int(steps), domain=domain, real=bool(real),
                       targeted=target_kind == "image", snapshots=snapshots, max_r_norm=float(max_r_norm),
                       max_diff_norm=float(max_diff_norm), schedule=schedule)

    yb = jax.vmap(lambda o, xi: o.forward(xi))(opb, xb)
    base = _call_traced(_compiled_prepare(recon), yb)
    if base.shape[-2:] != hw:
        raise ValueError(f"recon returned images of shape {base.shape[-2:]}, expected {hw}")
    base = base.astype(xb.dtype)
    finite = jnp.all(jnp.isfinite(base), axis=(-2, -1))
    if not bool(jnp.all(finite)):
        raise ValueError(f"recon(A x) is not finite for image(s) {_bad_indices(finite, batch_shape)}: check the "
                         "inputs and the model")
    measured = jnp.sqrt(jnp.sum(jnp.abs(yb) ** 2, axis=tuple(range(1, yb.ndim)))) > 0
    if not bool(jnp.all(measured)):
        warnings.warn(f"A x = 0 for image(s) {_bad_indices(measured, batch_shape)} (an empty mask, or an image the "
                      "operator does not see): no perturbation reaches f through the measurements, and the gains "
                      "||f(y + A r) - f(y)|| / ||A r|| will be NaN", stacklevel=3)
    if target_kind == "prediction":
        p = base
    elif target_kind == "truth":
        p = xb
    else:
        p = _as_problem_axis(target_img, batch_shape, 2, "target").astype(xb.dtype)
    real_dt = jnp.real(xb).dtype
    if region is not None:
        region = jnp.asarray(region)
        if region.ndim < 2 or tuple(region.shape[-2:]) != hw:
            raise ValueError(f"region has shape {tuple(region.shape)} but the images are {hw}: a region weight is "
                             "(..., H, W) like the images")
    weight = (jnp.ones((n,) + hw, real_dt) if region is None
              else _as_problem_axis(region.astype(real_dt), batch_shape, 2, "region"))
    x_norm = jnp.sqrt(jnp.sum(jnp.abs(xb) ** 2, axis=(-2, -1)))
    if projected:
        rad = _as_problem_axis(jnp.asarray(radius, real_dt), batch_shape, 0, "radius")
        if radius_relative_to == "x":
            rad = rad * x_norm
        elif radius_relative_to == "measurements":
            rad = rad * jnp.sqrt(jnp.sum(jnp.abs(yb) ** 2, axis=tuple(range(1, yb.ndim))))
        if radius_relative_to != "absolute" and not bool(jnp.all(rad > 0)):
            raise ValueError(f"the radius relative to ||{radius_relative_to}|| is 0 for image(s) "
                             f"{_bad_indices(rad > 0, batch_shape)}: an all-zero image (or measurement) has "
                             "no scale; give an absolute radius")
        lr_b = rad / 20.0 if lr is None else _as_problem_axis(jnp.asarray(lr, real_dt), batch_shape, 0, "lr")
    else:
        rad = jnp.full((n,), jnp.inf, real_dt)
        lr_b = _as_problem_axis(jnp.asarray(defaults["lr"] if lr is None else lr, real_dt), batch_shape, 0, "lr")
    prob = Problems(
        x=xb, y=yb, op=opb, p=p, base=base, weight=weight,
        lam=_as_problem_axis(jnp.asarray(lam, real_dt), batch_shape, 0, "lam"),
        lr=lr_b,
        momentum=_as_problem_axis(jnp.asarray(momentum, real_dt), batch_shape, 0, "momentum"),
        radius=rad, x_norm=x_norm)

    # r0 = tau * U[0, 1], real, one draw per problem from its own key.
    keys = _keys_for(key, batch_shape)
    taub = _as_problem_axis(jnp.asarray(tau, real_dt), batch_shape, 0, "tau")
    r0 = jax.vmap(lambda k, t: t * jax.random.uniform(k, r_shape, real_dt))(keys, taub).astype(xb.dtype)
    r0 = jax.vmap(lambda r, pr: _restrict(r, pr, cfg))(r0, prob)
    if projected:
        r0 = jax.vmap(_project)(r0, rad)
    snaps = jnp.broadcast_to(r0[:, None], (n, len(snapshots)) + r0.shape[1:])
    hist = {k: jnp.full((n, cfg.steps), jnp.nan, real_dt) for k in HISTORY_KEYS}
    state = AttackState(r=r0, v=jnp.zeros_like(r0), t=jnp.zeros((), jnp.int32),
                        active=jnp.ones((n,), bool), diverged=jnp.zeros((n,), bool),
                        stopped_at=jnp.full((n,), cfg.steps, jnp.int32), snapshots=snaps, history=hist)
    return cfg, prob, state, batch_shape


def run(recon: ReconFn, cfg: SearchConfig, prob: Problems, state: AttackState, *, chunk: int = 50,
        callback: Callable[[AttackState], Any] | None = None, loop: str = "auto") -> AttackState:
    """Drive a search from ``state`` to the end, ``chunk`` compiled iterations at a time.

    ``callback(state)`` runs on the host after each chunk (progress lines, saving the state
    for a later resume).  Resuming is just calling ``run`` again with a saved state.
    ``loop``: ``"auto"``, ``"host"`` or ``"scan"`` (module docstring).  With several devices
    the problems are sharded over a 1-D mesh (padded to a multiple of the device count; the
    padding is dropped again).
    """
    check_int(chunk, "chunk", 1)
    host = _host_loop(loop)
    n = prob.x.shape[0]
    mesh, n_dev = _mesh_sharding()
    if mesh is not None:
        n_pad = (-n) % n_dev
        prob = _shard(_pad_problems(prob, n_pad), mesh)
        state = _shard(_pad_problems(state, n_pad), mesh)
    done = int(state.t)
    while done < cfg.steps and bool(jnp.any(state.active)):
        k = min(chunk, cfg.steps - done)
        if host:
            one = _compiled_iteration(recon, cfg)
            for _ in range(k):
                state = one(state, prob)
        else:
            state = _compiled_advance(recon, cfg, k)(state, prob)
        done += k
        if callback is not None:
            callback(_unpad_problems(state, n))
    return _unpad_problems(state, n)


def result_from_state(cfg: SearchConfig, state: AttackState, prob: Problems, batch_shape) -> AttackResult:
    """Package a (finished) state as an :class:`AttackResult` with the batch shape restored."""
    r_shape = state.r.shape[1:]
    # A snapshot count beyond the problem's stop was never reached: it repeats the final r.
    counts = jnp.asarray(cfg.snapshots, jnp.int32)
    reached = counts[None, :] <= state.stopped_at[:, None]                           # (B, S)
    snaps = jnp.where(_expand(reached, len(r_shape)), state.snapshots, state.r[:, None])
    snaps = jnp.moveaxis(snaps, 1, 0)
    return AttackResult(
        r=state.r.reshape(batch_shape + r_shape),
        snapshots=snaps.reshape((snaps.shape[0],) + batch_shape + r_shape),
        history={k: h.T.reshape((h.shape[1],) + batch_shape) for k, h in state.history.items()},
        stopped_at=state.stopped_at.reshape(batch_shape),
        diverged=state.diverged.reshape(batch_shape),
        radius=prob.radius.reshape(batch_shape))


def _search(recon, x, operator, *, chunk, callback, loop, **kwargs) -> AttackResult:
    cfg, prob, state, batch_shape = setup(recon, x, operator, **kwargs)
    state = run(recon, cfg, prob, state, chunk=chunk, callback=callback, loop=loop)
    return result_from_state(cfg, state, prob, batch_shape)


_COMMON_ARGS = """
      recon: pure function, measurements of one problem (masked k-space ``(H, W)`` for
        Cartesian, ``(C, H, W)`` for SENSE) -> image ``(H, W)`` (complex or real).  It is
        called on one problem at a time and vmapped, so it need not handle batches.  See
        :func:`mrijax.models.reconstruction_map`.
      x: images ``(..., H, W)``; leading axes are independent problems.
      operator: a measurement operator (:mod:`mrijax.operators`), one or one per problem, or a
        centred mask ``(H, W)`` / ``(..., H, W)`` (the Cartesian operator; with ``coil_maps``
        SENSE).
      key: a PRNG key (split over the problems) or one key per problem.
      steps: iterations (M in the paper)."""


def worst_case(recon: ReconFn, x, operator, *, key, radius, steps: int = 1000, lr=None, momentum=0.9,
               tau=1e-2, schedule: str = "cosine", target="prediction", domain: str = "image", real: bool = False,
               radius_relative_to: str = "absolute", region=None, snapshots: Sequence[int] = (),
               max_r_norm: float = math.inf, max_diff_norm: float = math.inf, coil_maps=None, chunk: int = 50,
               callback=None, loop: str = "auto") -> AttackResult:
    """The worst perturbation with ``||r|| <= radius``: projected gradient ascent (eq. 8 of Antun et al.).

    Args:{common}
      radius: the l2 radius per problem (scalar or broadcasting against the batch).
      lr: the step, default ``radius / 20`` (steps are normalised: ``lr g / ||g||``).
      momentum: gamma (0.9).  tau: scale of the uniform random start (1e-2).
      schedule: ``"cosine"`` (``lr (1 + cos(pi t / steps)) / 2``, the default: a snapshot at
        ``s < steps`` is then not the result of a separate run of ``s`` steps) or ``"constant"``.
      target: ``"prediction"`` (p = f(A x)), ``"truth"`` (p = x) or an image ``(..., H, W)``
        towards which the reconstruction is pulled (a targeted, e.g. false-detail, attack).
      domain: ``"image"`` or ``"measurement"`` (module docstring).
      real: restrict ``r`` to real images (image domain).
      radius_relative_to: ``"absolute"``, ``"x"`` (radius * ||x||) or ``"measurements"``
        (radius * ||A x||).
      region: optional real weight ``(..., H, W)`` on the output difference (a zone attack).
      snapshots: iteration counts at which to keep ``r`` (e.g. ``(66, 133, 200)``).
      max_r_norm, max_diff_norm: stop a problem at the first iterate whose ``||r||`` exceeds
        ``max_r_norm`` or whose output change ``||f(y + A r) - f(y)||`` reaches ``max_diff_norm``.
      coil_maps: ``(..., C, H, W)`` sensitivities, only with a mask as ``operator``.
      chunk: iterations per compiled call between host callbacks.
      callback: ``callback(state)`` after each chunk (progress, saving).
      loop: ``"auto"``, ``"host"`` or ``"scan"`` (module docstring).

    Returns:
      an :class:`AttackResult`.
    """
    return _search(recon, x, operator, method="projected", key=key, radius=radius, steps=steps, lam=0.0, lr=lr,
                   momentum=momentum, tau=tau, schedule=schedule, target=target, domain=domain, real=real,
                   radius_relative_to=radius_relative_to, region=region, snapshots=snapshots,
                   max_r_norm=max_r_norm, max_diff_norm=max_diff_norm, coil_maps=coil_maps, chunk=chunk,
                   callback=callback, loop=loop)


def algorithm1(recon: ReconFn, x, operator, *, key, steps: int = 1000, lam=1e-3, lr=1e-2, momentum=0.9,
               tau=1e-2, schedule: str = "constant", target="prediction", domain: str = "image",
               real: bool = False, region=None, snapshots: Sequence[int] = (), max_r_norm: float = math.inf,
               max_diff_norm: float = math.inf, coil_maps=None, chunk: int = 50, callback=None,
               loop: str = "auto") -> AttackResult:
    """Algorithm 1 of Antun et al.: gradient ascent with momentum on ``Q(r)`` (penalised, no radius).

    Args:{common}
      lam: the penalty on ``||r||^2`` (1e-3, Table 1, Deep MRI).
      lr: eta (1e-2, Table 1).  momentum: gamma (0.9).  tau: scale of the random start (1e-2).
      schedule: ``"constant"`` (the paper) or ``"cosine"``.
      target, domain, real, region, snapshots, max_r_norm, max_diff_norm, coil_maps, chunk,
      callback, loop: as in :func:`worst_case`.  ``max_r_norm`` / ``max_diff_norm`` give the
      early-stopped iterates of the paper.

    Returns:
      an :class:`AttackResult` (``radius`` is inf).
    """
    return _search(recon, x, operator, method="algorithm1", key=key, steps=steps, lam=lam, lr=lr,
                   momentum=momentum, tau=tau, schedule=schedule, target=target, domain=domain, real=real,
                   region=region, snapshots=snapshots, max_r_norm=max_r_norm, max_diff_norm=max_diff_norm,
                   coil_maps=coil_maps, chunk=chunk, callback=callback, loop=loop)


worst_case.__doc__ = worst_case.__doc__.format(common=_COMMON_ARGS)
algorithm1.__doc__ = algorithm1.__doc__.format(common=_COMMON_ARGS)


# ----------------------------------------------------------------------------- sweeps

SWEEPABLE = ("lam", "lr", "momentum", "tau", "radius", "seed")


class SweepResult(NamedTuple):
    """:func:`sweep` output: ``result`` has the grid axes (in ``axes`` order) before the batch axes."""
    result: AttackResult
    axes: tuple
    values: dict


def sweep(recon: ReconFn, x, operator, *, method: str, key, grid: dict, **kwargs) -> SweepResult:
    """Run the same search over the Cartesian product of hyper-parameter values, in one batch.

    The paper stresses that the stability test is a family of searches over its parameters;
    this runs the whole family as one batched (and, with several devices, sharded) call.

    Args:
      method: ``"projected"`` (:func:`worst_case`) or ``"algorithm1"`` (:func:`algorithm1`).
      grid: ``{name: values}`` with names from :data:`SWEEPABLE` (``radius`` only for the
        projected search).  ``seed`` values are folded into ``key`` (``jax.random.fold_in``),
        so grid points with the same seed share starts.
      **kwargs: the other arguments of the search.

    Returns:
      a :class:`SweepResult`; ``result.r`` has shape ``grid_shape + x.shape``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    unknown = set(grid) - set(SWEEPABLE)
    if unknown:
        raise ValueError(f"cannot sweep {sorted(unknown)}; sweepable: {SWEEPABLE}")
    if not grid:
        raise ValueError("grid is empty")
    axes = tuple(grid)
    values = {k: np.asarray(v) for k, v in grid.items()}
    for k, v in values.items():
        if v.ndim != 1 or v.size == 0:
            raise ValueError(f"grid[{k!r}] must be a non-empty 1-D sequence, got shape {v.shape}")
    gshape = tuple(values[k].size for k in axes)
    x = jnp.asarray(x)
    bshape = tuple(x.shape[:-2])
    full = gshape + bshape

    def along(name):
        # values[name] placed on its grid axis, broadcastable to grid + batch shape.
        shape = [1] * len(full)
        shape[axes.index(name)] = gshape[axes.index(name)]
        return values[name].reshape(shape)

    hyper = {name: along(name) for name in ("lam", "lr", "momentum", "tau", "radius") if name in values}
    kwargs = dict(kwargs, **hyper)
    # One key per (grid point, image): fold the seed in, then split over the batch.
    seeds = along("seed") if "seed" in values else np.zeros([1] * len(full), np.int64)
    seeds = np.broadcast_to(seeds, gshape + (1,) * len(bshape)).reshape(-1)
    nb = int(np.prod(bshape)) if bshape else 1
    base = jnp.asarray(key)
    keys = jnp.stack([jax.random.split(jax.random.fold_in(base, int(s)), nb) for s in seeds])
    keys = keys.reshape(full + keys.shape[2:])
    xg = jnp.broadcast_to(x, full + x.shape[-2:])
    search = worst_case if method == "projected" else algorithm1
    res = search(recon, xg, operator, key=keys, **kwargs)
    return SweepResult(res, axes, {k: values[k] for k in axes})


# ----------------------------------------------------------------------------- baselines


def _prepare_eval(x, operator, coil_maps):
    x = jnp.asarray(x)
    check_image(x)
    op = operators.as_operator(operator, coil_maps)
    operators.check_fits(op, x)
    bshape = tuple(x.shape[:-2])
    hw = tuple(x.shape[-2:])
    xb = x.reshape((-1,) + hw).astype(complex_dtype_for(x))
    return xb, operators.broadcast(op, bshape), op, bshape, hw


def _psnr_magnitudes(x, ref):
    return metrics.psnr(jnp.abs(x), jnp.abs(ref))


@functools.lru_cache(maxsize=64)
def _compiled_evaluate(recon, domain: str, n_lead: int):
    """The jitted body of :func:`evaluate`, cached so repeated calls do not recompile."""
    def one(xi, oi, ri):
        y = oi.forward(xi)
        ar = oi.restrict(ri) if domain == "measurement" else oi.forward(ri)
        clean = recon(y)
        pert = recon(y + ar)
        ref = xi if domain == "measurement" else xi + ri
        return {"clean": clean, "perturbed": pert,
                "diff_norm": jnp.sqrt(_sqnorm(pert - clean)), "r_norm": jnp.sqrt(_sqnorm(ri)),
                "Ar_norm": jnp.sqrt(_sqnorm(ar)), "psnr_clean": _psnr_magnitudes(clean, xi),
                "psnr_perturbed": _psnr_magnitudes(pert, ref)}

    f = jax.vmap(one, in_axes=(0, 0, 0))
    for _ in range(n_lead):
        f = jax.vmap(f, in_axes=(None, None, 0))
    return jax.jit(f)


def evaluate(recon: ReconFn, x, operator, r, *, domain: str = "image", coil_maps=None) -> dict:
    """Reconstructions and numbers for given perturbations ``r`` (same shape as ``x``, or with
    extra leading axes, e.g. the snapshots; measurement-shaped for ``domain="measurement"``).

    Returns a dict of arrays (leading axes of ``r``): ``clean`` = f(A x), ``perturbed`` =
    f(A x + A r), ``diff_norm`` = ||f(A x + A r) - f(A x)||, ``r_norm``, ``Ar_norm``,
    ``psnr_clean`` (against |x|), ``psnr_perturbed`` (against |x + r| in the image domain, |x|
    in the measurement domain) and ``psnr_change`` = ``psnr_perturbed - psnr_clean``
    (negative: the perturbation made the reconstruction worse).
    """
    if domain not in _DOMAINS:
        raise ValueError(f"domain must be one of {_DOMAINS}, got {domain!r}")
    xb, opb, op, bshape, hw = _prepare_eval(x, operator, coil_maps)
    r = jnp.asarray(r)
    r_shape = op.measurement_shape if domain == "measurement" else hw
    tail = tuple(bshape) + tuple(r_shape)
    if r.shape[r.ndim - len(tail):] != tail:
        raise ValueError(f"r has shape {r.shape}; its trailing axes must be {tail} (x's batch and the "
                         f"{'measurement' if domain == 'measurement' else 'image'} shape)")
    lead = r.shape[:r.ndim - len(tail)]
    rb = r.reshape(lead + (-1,) + tuple(r_shape)).astype(xb.dtype)

    out = _call_traced(_compiled_evaluate(recon, domain, len(lead)), xb, opb, rb)
    out["psnr_change"] = out["psnr_perturbed"] - out["psnr_clean"]
    return {k: v.reshape(lead + bshape + v.shape[len(lead) + 1:]) for k, v in out.items()}


def noise_baseline(recon: ReconFn, x, operator, norms, draws: int, key, *, domain: str = "image",
                   real: bool = False, coil_maps=None) -> dict:
    """Random perturbations of given norms: the "typical" counterpart of the worst case.

    For each image and each norm, ``draws`` Gaussian perturbations (complex, or real with
    ``real=True``; in the measurement space for ``domain="measurement"``) rescaled to exactly
    that norm are pushed through the reconstruction.

    Args:
      norms: ``(K,)`` or ``(..., K)`` (per image, e.g. the norms the search reached).
    Returns:
      a dict like :func:`evaluate` without the images, each of shape ``(..., K, draws)``.
    """
    check_int(draws, "draws", 1)
    xb, opb, op, bshape, hw = _prepare_eval(x, operator, coil_maps)
    norms = jnp.asarray(norms, jnp.real(xb).dtype)
    if norms.ndim == 0:
        norms = norms[None]
    normsb = _as_problem_axis(norms, bshape, 1, "norms")
    n, k = normsb.shape
    keys = jax.random.split(key, n)
    rdt = jnp.real(xb).dtype
    r_shape = tuple(op.measurement_shape if domain == "measurement" else hw)
    axes = tuple(range(-len(r_shape), 0))

    def draw(kk, oi):
        k1, k2 = jax.random.split(kk)
        g = jax.random.normal(k1, (k, draws) + r_shape, rdt).astype(xb.dtype)
        if not real:
            g = g + 1j * jax.random.normal(k2, (k, draws) + r_shape, rdt)
        if domain == "measurement":
            g = oi.restrict(g)
        return g / jnp.sqrt(jnp.sum(jnp.abs(g) ** 2, axis=axes, keepdims=True))

    dirs = jax.jit(jax.vmap(draw))(keys, opb)                           # (n, k, draws, *r_shape)
    r = dirs * _expand(normsb, len(r_shape) + 1)
    r = jnp.moveaxis(r, 0, 2).reshape((k, draws) + bshape + r_shape)  # evaluate's layout
    out = evaluate(recon, x, op, r, domain=domain)
    return {name: jnp.moveaxis(jnp.moveaxis(v, 0, -1), 0, -1) for name, v in out.items()
            if name not in ("clean", "perturbed")}


@functools.lru_cache(maxsize=64)
def _compiled_power_iteration(recon):
    """Jitted ``(start, iterate, finish)`` of the power iteration of :func:`local_lipschitz`.

    ``iterate(e, x, op, iters=k)`` runs ``k`` iterations (``iters`` static): the map is
    linearised once per call and its transpose gives ``J^T``, so an iteration costs one
    tangent and one transposed pass, with no repeated forward pass inside the loop.
    """
    def pieces(xi, oi):
        y = oi.forward(xi)

        def g_real(e):  # real pair (2, *measurement_shape) -> real pair (2, H, W)
            out = recon(y + oi.restrict(e[0] + 1j * e[1]))
            return jnp.stack([jnp.real(out), jnp.imag(out)]).astype(e.dtype)
        return y, g_real

    def as_pair(c):
        return jnp.stack([jnp.real(c), jnp.imag(c)])

    def start_one(xi, oi, kk):
        y, _ = pieces(xi, oi)
        k1, k2 = jax.random.split(kk)
        rdt = jnp.real(xi).dtype
        e0 = as_pair(oi.restrict(jax.random.normal(k1, y.shape, rdt) + 1j * jax.random.normal(k2, y.shape, rdt)))
        return e0 / jnp.sqrt(jnp.sum(e0 ** 2))

    def iterate_one(e, xi, oi, iters):
        _, g_real = pieces(xi, oi)
        zero = jnp.zeros_like(e)
        _, jac = jax.linearize(g_real, zero)
        jac_t = jax.linear_transpose(jac, zero)

        def body(_, ei):
            (jtje,) = jac_t(jac(ei))
            nrm = jnp.sqrt(jnp.sum(jtje ** 2))
            return jtje / jnp.maximum(nrm, jnp.finfo(nrm.dtype).tiny)
        return jax.lax.fori_loop(0, iters, body, e)

    def finish_one(e, xi, oi):
        _, g_real = pieces(xi, oi)
        _, je = jax.jvp(g_real, (jnp.zeros_like(e),), (e,))
        ec = e[0] + 1j * e[1]
        return jnp.sqrt(jnp.sum(je ** 2)), ec, oi.adjoint(ec)

    start = jax.jit(jax.vmap(start_one))
    iterate = jax.jit(lambda e, x, o, iters: jax.vmap(functools.partial(iterate_one, iters=iters))(e, x, o),
                      static_argnames="iters")
    finish = jax.jit(jax.vmap(finish_one))
    return start, iterate, finish


def local_lipschitz(recon: ReconFn, x, operator, iters: int, key, *, coil_maps=None, loop: str = "auto") -> dict:
    """The linearised worst direction: power iteration on the Jacobian of ``e -> f(A x + e)``.

    ``e`` ranges over the measurement space (equivalently ``r`` over the range of ``A*``:
    ``A r = e``).  The map is treated as real-linear (real and imaginary parts), with
    ``jax.linearize`` and its transpose, so non-holomorphic networks are handled exactly.

    Returns a dict: ``gain`` (..., the largest singular value ||J e|| / ||e||),
    ``direction`` (the unit measurement-space direction e, ``(..., *measurement_shape)``) and
    ``image_direction`` (``A* e``, the image-space perturbation that produces it).
    The gain holds only for perturbations small enough for the linearisation; compare with
    the ratio the nonlinear search reaches.  ``loop`` as in :func:`run`.
    """
    check_int(iters, "iters", 1)
    host = _host_loop(loop)
    xb, opb, op, bshape, hw = _prepare_eval(x, operator, coil_maps)
    keys = jax.random.split(key, xb.shape[0])
    start, iterate, finish = _compiled_power_iteration(recon)
    e = start(xb, opb, keys)
    if host:   # one compiled iteration per call, as in :func:`run`
        for _ in range(iters):
            e = iterate(e, xb, opb, iters=1)
    else:      # the whole loop in one call, linearised once
        e = iterate(e, xb, opb, iters=iters)
    gain, e, img = finish(e, xb, opb)
    return {"gain": gain.reshape(bshape), "direction": e.reshape(bshape + e.shape[1:]),
            "image_direction": img.reshape(bshape + hw)}
