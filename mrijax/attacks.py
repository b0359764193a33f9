"""Worst-case perturbations: the stability test of Antun et al. (PNAS 2020).

Given a reconstruction map ``f`` (any pure function from centred masked k-space to an
image: a network closed over its parameters, a compressed-sensing solver, a user's
function), an image ``x`` and a sampling mask, the search looks for a small
perturbation ``r`` whose effect on the reconstruction is large.  It maximises

    Q(r) = 1/2 ||W (f(y + A r) - p)||^2 - lam/2 ||r||^2,      y = A x,

with ``p = f(y)`` (``target="prediction"``, the paper's choice for Deep MRI) or
``p = x`` (``target="truth"``), and ``W`` an optional region weight (only a zone of the
output counts).  Given an image as ``target`` the search is *targeted*: it maximises
``-1/2 ||W (f(y + A r) - p)||^2 - lam/2 ||r||^2``, pulling the reconstruction towards a
chosen false image.

Update (Algorithm 1 of the paper, gradient ascent with momentum)::

    r0 = tau * U[0, 1]          (drawn from the problem's key; real, as in the paper)
    v <- momentum * v + lr * grad Q(r)
    r <- r + v

``grad`` is the steepest-ascent direction for the real inner product
``Re <a, b>`` on complex images (JAX's ``grad`` returns its conjugate; we conjugate back).

With ``radius`` the search solves the constrained problem (eq. 8 of the paper): maximise
``1/2 ||W (f(y + A r) - p)||^2`` over ``||r|| <= radius``, by projected ascent with
normalised steps, ``v <- momentum v + lr g / ||g||``, ``r <- P_ball(r + v)``, where
``lr`` defaults to ``radius / 20``, ``lam`` to 0 and the step follows a cosine decay.

``domain="image"`` (the paper): ``r`` is an image, measured through ``A``.
``domain="measurement"``: ``r`` lives on the sampled k-space entries (as masked k-space).

Batches.  Leading axes of ``x`` are independent problems, each with its own key,
hyper-parameters, radius and stopping; the iterations run inside ``jit`` for the
whole batch, in chunks of ``chunk`` iterations (a host loop between chunks reports
progress and lets callers save and resume).  A problem that finishes (``steps``,
``max_r_norm``, ``max_diff_norm``) or diverges (non-finite values) freezes while the
others go on.  With several devices the problem axis is sharded over a
``jax.sharding.Mesh`` of all local devices; nothing changes for the caller.

Multi-host (TPU pods): call ``jax.distributed.initialize()`` at start-up on every host,
then pass each host the same global batch; the mesh spans ``jax.devices()``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mrijax import fourier
from mrijax._checks import check_coil_maps, check_image, check_mask, complex_dtype_for

Array = Any
ReconFn = Callable[[Array], Array]

HISTORY_KEYS = ("Q", "diff_norm", "r_norm", "Ar_norm", "ratio", "r_rel")
"""Per-iteration history: Q(r_t); ||f(y + A r_t) - f(y)||; ||r_t||; ||A r_t||;
their ratio ||f(y + A r_t) - f(y)|| / ||A r_t||; and ||r_t|| / ||x||."""

_TARGETS = ("prediction", "truth")
_DOMAINS = ("image", "measurement")
_RADIUS_REF = ("absolute", "x", "measurements")
_SCHEDULES = ("constant", "cosine")


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class _Config:
    steps: int
    domain: str
    real: bool
    projected: bool
    targeted: bool
    snapshots: tuple
    max_r_norm: float
    max_diff_norm: float
    multicoil: bool
    schedule: str


class Problems(NamedTuple):
    """Per-problem data, each with a leading problem axis ``B``."""
    x: Array          # (B, H, W) complex image
    y: Array          # (B, [C,] H, W) masked k-space A x
    mask: Array       # (B, H, W) bool
    coil_maps: Array  # (B, C, H, W) or a (B,) placeholder for one coil
    p: Array          # (B, H, W) reference image of the objective
    base: Array       # (B, H, W) f(y), for the output change
    weight: Array     # (B, H, W) region weight
    lam: Array        # (B,)
    lr: Array         # (B,)
    momentum: Array   # (B,)
    radius: Array     # (B,) (inf when unconstrained)
    x_norm: Array     # (B,)


class AttackState(NamedTuple):
    """Everything the search carries between iterations: enough to resume exactly."""
    r: Array            # (B, H, W) current perturbation (measurement domain: masked k-space)
    v: Array            # (B, H, W) momentum
    t: Array            # () iterations done
    active: Array       # (B,) bool
    diverged: Array     # (B,) bool
    stopped_at: Array   # (B,) int, iteration count of the returned r
    snapshots: Array    # (S, B, H, W)
    history: dict       # name -> (steps, B), NaN after a problem stops


class AttackResult(NamedTuple):
    """What :func:`worst_case` returns (leading axes of ``x`` restored).

    Attributes:
      r: the final perturbation (image, or masked k-space for ``domain="measurement"``).
      snapshots: ``(S, ..., H, W)``, ``r`` after each requested iteration count (the
        early-stopped perturbations r1 < r2 < r3 of Antun Fig. 1); a problem that stopped
        earlier repeats its final ``r``.
      history: dict of ``(steps, ...)`` arrays, see :data:`HISTORY_KEYS`; NaN once stopped.
      stopped_at: number of updates behind ``r``.
      diverged: True where a non-finite value stopped the problem (``r`` is the last finite one).
      radius: the l2 radius per problem (inf when unconstrained).
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


def _measure(r, prob: Problems, cfg: _Config):
    """``A r`` for one problem (image domain) or ``mask * r`` (measurement domain)."""
    if cfg.domain == "measurement":
        return fourier.apply_mask(r, prob.mask)
    cm = prob.coil_maps if cfg.multicoil else None
    return fourier.forward(r, prob.mask, cm)


def _restrict(g, prob: Problems, cfg: _Config):
    """Keep a direction inside the search space (real images, or the sampled entries)."""
    if cfg.domain == "measurement":
        g = fourier.apply_mask(g, prob.mask)
    if cfg.real:
        g = jnp.real(g).astype(g.dtype)
    return g


def _objective(recon: ReconFn, cfg: _Config, r, prob: Problems):
    out = recon(prob.y + _measure(r, prob, cfg))
    resid = prob.weight * (out - prob.p)
    sign = -1.0 if cfg.targeted else 1.0
    q = 0.5 * sign * _sqnorm(resid) - 0.5 * prob.lam * _sqnorm(r)
    return q, out


def _metrics(q, out, r, prob: Problems, cfg: _Config):
    diff = jnp.sqrt(_sqnorm(out - prob.base))
    ar = jnp.sqrt(_sqnorm(_measure(r, prob, cfg)))
    rn = jnp.sqrt(_sqnorm(r))
    return {"Q": q, "diff_norm": diff, "r_norm": rn, "Ar_norm": ar,
            "ratio": diff / ar, "r_rel": rn / prob.x_norm}


def _project(r, radius):
    n = jnp.sqrt(_sqnorm(r))
    return r * jnp.minimum(1.0, radius / jnp.maximum(n, jnp.finfo(n.dtype).tiny))


def _one_step(recon, cfg: _Config, t, prob: Problems, r, v, active, diverged, stopped_at):
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


def _iteration(recon, cfg: _Config, prob: Problems, state: AttackState) -> AttackState:
    """One iteration of Algorithm 1 for all problems (the problems are vmapped)."""
    step = jax.vmap(functools.partial(_one_step, recon, cfg), in_axes=(None, 0, 0, 0, 0, 0, 0))
    snap_counts = jnp.asarray(cfg.snapshots, jnp.int32).reshape(-1, 1)
    t = state.t
    r, v, active, diverged, stopped_at, m = step(t, prob, state.r, state.v, state.active,
                                                 state.diverged, state.stopped_at)
    row = jnp.minimum(t, cfg.steps - 1)
    hist = {k: state.history[k].at[row].set(
        jnp.where(state.active, m[k].astype(state.history[k].dtype), state.history[k][row]))
        for k in HISTORY_KEYS}
    t1 = t + 1
    active = active & (t1 < cfg.steps)  # stopped_at starts at `steps`: nothing to record
    # r after t1 updates is r_{t1}: keep it for every snapshot count equal to t1.
    take = (snap_counts == t1) & state.active[None, :]
    snaps = jnp.where(take[..., None, None], r[None], state.snapshots)
    return AttackState(r, v, t1, active, diverged, stopped_at, snaps, hist)


def _advance(recon, cfg: _Config, n: int, state: AttackState, prob: Problems) -> AttackState:
    """``n`` iterations for all problems in one compiled ``lax.scan`` (accelerators)."""
    body = lambda s, _: (_iteration(recon, cfg, prob, s), None)
    state, _ = jax.lax.scan(body, state, None, length=n)
    return state


def _unrolled_on_host() -> bool:
    # XLA:CPU runs the convolutions of a network about 3x slower inside a rolled loop
    # (lax.scan / while_loop) than in a program that is one iteration: there the host
    # loop of one compiled iteration wins, and its dispatch cost (~0.1 ms) is nothing next
    # to an iteration of a network.  Accelerators keep the rolled chunk (no per-iteration
    # launch, and the loop body is compiled as well as a lone step).
    return jax.default_backend() == "cpu"


@functools.lru_cache(maxsize=64)
def _compiled_advance(recon, cfg: _Config, n: int):
    return jax.jit(functools.partial(_advance, recon, cfg, n))


@functools.lru_cache(maxsize=64)
def _compiled_iteration(recon, cfg: _Config):
    return jax.jit(lambda state, prob: _iteration(recon, cfg, prob, state))


@functools.lru_cache(maxsize=64)
def _compiled_prepare(recon, cfg: _Config):
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


def _positive(name, value):
    a = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(a) | np.isinf(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _resolve_target(target, x):
    if isinstance(target, str):
        if target not in _TARGETS:
            raise ValueError(f"target must be one of {_TARGETS} or an image, got {target!r}")
        return target, None
    t = jnp.asarray(target)
    check_image(t, "target")
    if t.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"target image has shape {t.shape[-2:]} but x is {x.shape[-2:]}")
    return "image", t


def _mesh_sharding(n_problems):
    """A 1-D mesh over all devices when there are several, else None."""
    devices = jax.devices()
    if len(devices) <= 1:
        return None, 1
    mesh = Mesh(np.array(devices), ("problems",))
    return mesh, len(devices)


def _pad_problems(tree, n_pad):
    if n_pad == 0:
        return tree
    return jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], n_pad, axis=0)], axis=0), tree)


def _shard(tree, mesh, axis=0):
    if mesh is None:
        return tree

    def put(a):
        spec = [None] * a.ndim
        if a.ndim > axis:
            spec[axis] = "problems"
        return jax.device_put(a, NamedSharding(mesh, PartitionSpec(*spec)))
    return jax.tree.map(put, tree)


def setup(recon: ReconFn, x, mask, *, key, steps: int = 1000, lam=None, momentum=0.9, lr=None,
          tau=1e-2, target="prediction", domain: str = "image", real: bool = False, radius=None,
          radius_relative_to: str = "absolute", region=None, snapshots: Sequence[int] = (),
          max_r_norm: float = math.inf, max_diff_norm: float = math.inf, coil_maps=None,
          schedule: str | None = None):
    """Validate the inputs and build the initial state of a search.

    Takes the arguments of :func:`worst_case` (see there).  Hyper-parameters ``lam``, ``lr``,
    ``momentum``, ``tau`` and ``radius`` may be scalars or arrays broadcastable to the batch
    shape of ``x`` (one value per problem; this is how :func:`sweep` runs a grid).

    Returns ``(cfg, problems, state, batch_shape)``, to be driven by :func:`run`.
    """
    x = jnp.asarray(x)
    check_image(x)
    check_mask(mask, x.shape)
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if domain not in _DOMAINS:
        raise ValueError(f"domain must be one of {_DOMAINS}, got {domain!r}")
    if radius_relative_to not in _RADIUS_REF:
        raise ValueError(f"radius_relative_to must be one of {_RADIUS_REF}, got {radius_relative_to!r}")
    schedule = ("cosine" if radius is not None else "constant") if schedule is None else schedule
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
    snapshots = tuple(int(s) for s in snapshots)
    if any(s < 0 or s > steps for s in snapshots):
        raise ValueError(f"snapshots must lie in [0, steps={steps}], got {snapshots}")
    for name, val in (("momentum", momentum), ("tau", tau), ("max_r_norm", max_r_norm),
                      ("max_diff_norm", max_diff_norm)):
        _positive(name, val)
    projected = radius is not None
    if projected:
        _positive("radius", radius)
        if np.any(np.asarray(radius) == 0):
            raise ValueError("radius must be > 0")
    lam = (0.0 if projected else 1e-3) if lam is None else _positive("lam", lam)
    target_kind, target_img = _resolve_target(target, x)
    multicoil = coil_maps is not None
    if multicoil:
        check_coil_maps(coil_maps, x.shape)
        if domain == "measurement":
            raise ValueError("domain='measurement' is for one coil; use domain='image' with coil_maps")

    batch_shape = tuple(x.shape[:-2])
    hw = tuple(x.shape[-2:])
    xb = x.reshape((-1,) + hw).astype(complex_dtype_for(x))
    n = xb.shape[0]
    maskb = _as_problem_axis(jnp.asarray(mask).astype(bool), batch_shape, 2, "mask")
    cmb = (_as_problem_axis(coil_maps, batch_shape, 3, "coil_maps").astype(xb.dtype) if multicoil
           else jnp.zeros((n,), xb.dtype))
    cfg = _Config(steps=int(steps), domain=domain, real=bool(real), projected=projected,
                  targeted=target_kind == "image", snapshots=snapshots,
                  max_r_norm=float(max_r_norm), max_diff_norm=float(max_diff_norm), multicoil=multicoil,
                  schedule=schedule)

    fwd = jax.vmap(lambda xi, mi, ci: fourier.forward(xi, mi, ci if multicoil else None))
    yb = fwd(xb, maskb, cmb)
    base = _compiled_prepare(recon, cfg)(yb)
    if base.shape[-2:] != hw:
        raise ValueError(f"recon returned images of shape {base.shape[-2:]}, expected {hw}")
    base = base.astype(xb.dtype)
    if not bool(jnp.all(jnp.isfinite(base))):
        raise ValueError("recon(A x) is not finite for some image: check the inputs and the model")
    if target_kind == "prediction":
        p = base
    elif target_kind == "truth":
        p = xb
    else:
        p = _as_problem_axis(target_img, batch_shape, 2, "target").astype(xb.dtype)
    weight = (jnp.ones((n,) + hw, jnp.real(xb).dtype) if region is None
              else _as_problem_axis(jnp.asarray(region).astype(jnp.real(xb).dtype), batch_shape, 2, "region"))
    x_norm = jnp.sqrt(jnp.sum(jnp.abs(xb) ** 2, axis=(-2, -1)))
    if projected:
        rad = _as_problem_axis(jnp.asarray(radius, jnp.real(xb).dtype), batch_shape, 0, "radius")
        if radius_relative_to == "x":
            rad = rad * x_norm
        elif radius_relative_to == "measurements":
            rad = rad * jnp.sqrt(jnp.sum(jnp.abs(yb) ** 2, axis=tuple(range(1, yb.ndim))))
        lr_b = rad / 20.0 if lr is None else _as_problem_axis(jnp.asarray(lr, rad.dtype), batch_shape, 0, "lr")
    else:
        rad = jnp.full((n,), jnp.inf, jnp.real(xb).dtype)
        lr_b = _as_problem_axis(jnp.asarray(1e-2 if lr is None else lr, rad.dtype), batch_shape, 0, "lr")
    real_dt = rad.dtype
    prob = Problems(
        x=xb, y=yb, mask=maskb, coil_maps=cmb, p=p, base=base, weight=weight,
        lam=_as_problem_axis(jnp.asarray(lam, real_dt), batch_shape, 0, "lam"),
        lr=lr_b,
        momentum=_as_problem_axis(jnp.asarray(momentum, real_dt), batch_shape, 0, "momentum"),
        radius=rad, x_norm=x_norm)

    # r0 = tau * U[0, 1], real, one draw per problem from its own key.
    keys = _keys_for(key, batch_shape)
    taub = _as_problem_axis(jnp.asarray(tau, real_dt), batch_shape, 0, "tau")
    r0 = jax.vmap(lambda k, t: t * jax.random.uniform(k, hw, real_dt))(keys, taub).astype(xb.dtype)
    r0 = jax.vmap(lambda r, pr: _restrict(r, pr, cfg))(r0, prob)
    if projected:
        r0 = jax.vmap(_project)(r0, rad)
    s = len(snapshots)
    snaps = jnp.broadcast_to(r0, (s,) + r0.shape)
    hist = {k: jnp.full((cfg.steps, n), jnp.nan, real_dt) for k in HISTORY_KEYS}
    state = AttackState(r=r0, v=jnp.zeros_like(r0), t=jnp.zeros((), jnp.int32),
                        active=jnp.ones((n,), bool), diverged=jnp.zeros((n,), bool),
                        stopped_at=jnp.full((n,), cfg.steps, jnp.int32), snapshots=snaps, history=hist)
    return cfg, prob, state, batch_shape


def run(recon: ReconFn, cfg: _Config, prob: Problems, state: AttackState, *, chunk: int = 50,
        callback: Callable[[AttackState], Any] | None = None) -> AttackState:
    """Drive a search from ``state`` to the end, ``chunk`` compiled iterations at a time.

    ``callback(state)`` runs on the host after each chunk (progress lines, saving the state
    for a later resume).  Resuming is just calling ``run`` again with a saved state.
    With several devices the problems are sharded over a 1-D mesh (padded to a multiple of
    the device count; the padding is dropped again).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n = prob.x.shape[0]
    mesh, n_dev = _mesh_sharding(n)
    n_pad = (-n) % n_dev
    if mesh is not None:
        prob = _shard(_pad_problems(prob, n_pad), mesh)
        state = state._replace(r=_pad_problems(state.r, n_pad), v=_pad_problems(state.v, n_pad),
                               active=_pad_problems(state.active, n_pad),
                               diverged=_pad_problems(state.diverged, n_pad),
                               stopped_at=_pad_problems(state.stopped_at, n_pad),
                               snapshots=_pad_problems(state.snapshots.swapaxes(0, 1), n_pad).swapaxes(0, 1),
                               history={k: _pad_problems(h.swapaxes(0, 1), n_pad).swapaxes(0, 1)
                                        for k, h in state.history.items()})
        state = state._replace(
            r=_shard(state.r, mesh), v=_shard(state.v, mesh), active=_shard(state.active, mesh),
            diverged=_shard(state.diverged, mesh), stopped_at=_shard(state.stopped_at, mesh),
            snapshots=_shard(state.snapshots, mesh, axis=1),
            history={k: _shard(h, mesh, axis=1) for k, h in state.history.items()})
    done = int(state.t)
    while done < cfg.steps and bool(jnp.any(state.active)):
        k = min(chunk, cfg.steps - done)
        if _unrolled_on_host():
            one = _compiled_iteration(recon, cfg)
            for _ in range(k):
                state = one(state, prob)
        else:
            state = _compiled_advance(recon, cfg, k)(state, prob)
        done += k
        if callback is not None:
            callback(_unpad_state(state, n))
    return _unpad_state(state, n)


def _unpad_state(state: AttackState, n: int) -> AttackState:
    if state.r.shape[0] == n:
        return state
    return state._replace(r=state.r[:n], v=state.v[:n], active=state.active[:n],
                          diverged=state.diverged[:n], stopped_at=state.stopped_at[:n],
                          snapshots=state.snapshots[:, :n],
                          history={k: h[:, :n] for k, h in state.history.items()})


def result_from_state(cfg: _Config, state: AttackState, prob: Problems, batch_shape) -> AttackResult:
    """Package a (finished) state as an :class:`AttackResult` with the batch shape restored."""
    hw = state.r.shape[-2:]
    # A snapshot count beyond the problem's stop was never reached: it repeats the final r.
    counts = jnp.asarray(cfg.snapshots, jnp.int32).reshape(-1, 1)
    reached = counts <= state.stopped_at[None, :]
    snaps = jnp.where(reached[..., None, None], state.snapshots, state.r[None])
    return AttackResult(
        r=state.r.reshape(batch_shape + hw),
        snapshots=snaps.reshape((snaps.shape[0],) + batch_shape + hw),
        history={k: h.reshape((h.shape[0],) + batch_shape) for k, h in state.history.items()},
        stopped_at=state.stopped_at.reshape(batch_shape),
        diverged=state.diverged.reshape(batch_shape),
        radius=prob.radius.reshape(batch_shape))


def worst_case(recon: ReconFn, x, mask, *, key, steps: int = 1000, lam=None, momentum=0.9, lr=None,
               tau=1e-2, target="prediction", domain: str = "image", real: bool = False, radius=None,
               radius_relative_to: str = "absolute", region=None, snapshots: Sequence[int] = (),
               max_r_norm: float = math.inf, max_diff_norm: float = math.inf, coil_maps=None,
               schedule: str | None = None, chunk: int = 50, callback=None) -> AttackResult:
    """Search for worst-case perturbations of ``recon`` at the images ``x`` (Antun et al., Alg. 1).

    Args:
      recon: pure function, centred masked k-space ``(H, W)`` (``(C, H, W)`` with coil maps)
        -> image ``(H, W)`` (complex or real).  It is called on one problem at a time and
        vmapped, so it need not handle batches.  See :func:`mrijax.models.reconstruction_map`.
      x: images ``(..., H, W)``; leading axes are independent problems.
      mask: centred boolean mask ``(H, W)`` or one per problem ``(..., H, W)``.
      key: a PRNG key (split over the problems) or one key per problem.
      steps: iterations (M in the paper).
      lam: the penalty on ``||r||^2``; default 1e-3 (Table 1, Deep MRI), or 0 with ``radius``.
      momentum: gamma (0.9).  lr: eta, default 1e-2 (Table 1), or ``radius / 20`` with ``radius``.
      tau: scale of the uniform random start (1e-2).
      target: ``"prediction"`` (p = f(A x)), ``"truth"`` (p = x) or an image ``(..., H, W)``
        towards which the reconstruction is pulled (a targeted, e.g. false-detail, attack).
      domain: ``"image"`` or ``"measurement"`` (see the module docstring).
      real: restrict ``r`` to real images (image domain).
      radius: if given, constrain ``||r|| <= radius`` per problem (projected, normalised ascent).
      radius_relative_to: ``"absolute"``, ``"x"`` (radius * ||x||) or ``"measurements"`` (radius * ||A x||).
      region: optional real weight ``(..., H, W)`` on the output difference (a zone attack).
      snapshots: iteration counts at which to keep ``r`` (e.g. ``(2000, 4000, 6000)``).
      max_r_norm, max_diff_norm: stop a problem at the first iterate whose ``||r||`` exceeds
        ``max_r_norm`` or whose output change ``||f(y + A r) - f(y)||`` reaches ``max_diff_norm``.
      coil_maps: ``(..., C, H, W)`` sensitivities for the multi-coil operator.
      schedule: step-size schedule, ``"constant"`` (Algorithm 1; the default without ``radius``)
        or ``"cosine"`` (``lr * (1 + cos(pi t / steps)) / 2``; the default with ``radius``, so the
        projected search settles on a maximiser instead of circling it at a fixed step).  With
        ``"cosine"`` the step depends on ``steps``, so a snapshot at ``s < steps`` is not the
        result of a separate run of ``s`` steps.
      chunk: iterations per compiled call between host callbacks.
      callback: ``callback(state)`` after each chunk (progress, saving).

    Returns:
      an :class:`AttackResult`.
    """
    cfg, prob, state, batch_shape = setup(
        recon, x, mask, key=key, steps=steps, lam=lam, momentum=momentum, lr=lr, tau=tau, target=target,
        domain=domain, real=real, radius=radius, radius_relative_to=radius_relative_to, region=region,
        snapshots=snapshots, max_r_norm=max_r_norm, max_diff_norm=max_diff_norm, coil_maps=coil_maps,
        schedule=schedule)
    state = run(recon, cfg, prob, state, chunk=chunk, callback=callback)
    return result_from_state(cfg, state, prob, batch_shape)


# ----------------------------------------------------------------------------- sweeps

SWEEPABLE = ("lam", "lr", "momentum", "tau", "radius", "seed")


class SweepResult(NamedTuple):
    """:func:`sweep` output: ``result`` has the grid axes (in ``axes`` order) before the batch axes."""
    result: AttackResult
    axes: tuple
    values: dict


def sweep(recon: ReconFn, x, mask, *, key, grid: dict, **kwargs) -> SweepResult:
    """Run the same search over the Cartesian product of hyper-parameter values, in one batch.

    The paper stresses that the stability test is a family of searches over its parameters;
    this runs the whole family as one batched (and, with several devices, sharded) call.

    Args:
      grid: ``{name: values}`` with names from :data:`SWEEPABLE`.  ``seed`` values are folded
        into ``key`` (``jax.random.fold_in``), so grid points with the same seed share starts.
      **kwargs: the other arguments of :func:`worst_case` (``radius`` is required to sweep it).

    Returns:
      a :class:`SweepResult`; ``result.r`` has shape ``grid_shape + x.shape``.
    """
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

    hyper = {}
    for name in ("lam", "lr", "momentum", "tau", "radius"):
        if name in values:
            if name == "radius" and kwargs.get("radius") is None and "radius" not in values:
                continue
            hyper[name] = along(name)
    kwargs = dict(kwargs, **hyper)
    # One key per (grid point, image): fold the seed in, then split over the batch.
    seeds = along("seed") if "seed" in values else np.zeros([1] * len(full), np.int64)
    seeds = np.broadcast_to(seeds, gshape + (1,) * len(bshape)).reshape(-1)
    nb = int(np.prod(bshape)) if bshape else 1
    base = jnp.asarray(key)
    keys = jnp.stack([jax.random.split(jax.random.fold_in(base, int(s)), nb) for s in seeds])
    keys = keys.reshape(full + keys.shape[2:])
    xg = jnp.broadcast_to(x, full + x.shape[-2:])
    res = worst_case(recon, xg, mask, key=keys, **kwargs)
    return SweepResult(res, axes, {k: values[k] for k in axes})


# ----------------------------------------------------------------------------- baselines


def _prepare_eval(x, mask, coil_maps):
    x = jnp.asarray(x)
    check_image(x)
    check_mask(mask, x.shape)
    if coil_maps is not None:
        check_coil_maps(coil_maps, x.shape)
    bshape = tuple(x.shape[:-2])
    hw = tuple(x.shape[-2:])
    xb = x.reshape((-1,) + hw).astype(complex_dtype_for(x))
    maskb = _as_problem_axis(jnp.asarray(mask).astype(bool), bshape, 2, "mask")
    cmb = None if coil_maps is None else _as_problem_axis(coil_maps, bshape, 3, "coil_maps").astype(xb.dtype)
    return xb, maskb, cmb, bshape, hw


def _psnr_mag(x, ref):
    x, ref = jnp.abs(x), jnp.abs(ref)
    mse = jnp.mean((x - ref) ** 2, axis=(-2, -1))
    return 10 * jnp.log10(jnp.max(ref, axis=(-2, -1)) ** 2 / mse)


@functools.lru_cache(maxsize=64)
def _compiled_evaluate(recon, domain: str, n_lead: int, multicoil: bool):
    """The jitted body of :func:`evaluate`, cached so repeated calls do not recompile."""
    def one(xi, mi, ci, ri):
        fwd = lambda z: fourier.forward(z, mi, ci)
        y = fwd(xi)
        ar = fourier.apply_mask(ri, mi) if domain == "measurement" else fwd(ri)
        clean = recon(y)
        pert = recon(y + ar)
        ref = xi if domain == "measurement" else xi + ri
        return {"clean": clean, "perturbed": pert,
                "diff_norm": jnp.sqrt(_sqnorm(pert - clean)), "r_norm": jnp.sqrt(_sqnorm(ri)),
                "Ar_norm": jnp.sqrt(_sqnorm(ar)), "psnr_clean": _psnr_mag(clean, xi),
                "psnr_perturbed": _psnr_mag(pert, ref)}

    f = jax.vmap(one, in_axes=(0, 0, 0 if multicoil else None, 0))
    for _ in range(n_lead):
        f = jax.vmap(f, in_axes=(None, None, None, 0))
    return jax.jit(f)


def evaluate(recon: ReconFn, x, mask, r, *, domain: str = "image", coil_maps=None) -> dict:
    """Reconstructions and numbers for given perturbations ``r`` (same shape as ``x``, or with
    extra leading axes, e.g. the snapshots).

    Returns a dict of arrays (leading axes of ``r``): ``clean`` = f(A x), ``perturbed`` =
    f(A x + A r), ``diff_norm`` = ||f(A x + A r) - f(A x)||, ``r_norm``, ``Ar_norm``,
    ``psnr_clean`` (against |x|), ``psnr_perturbed`` (against |x + r| in the image domain, |x|
    in the measurement domain) and ``psnr_drop``.
    """
    if domain not in _DOMAINS:
        raise ValueError(f"domain must be one of {_DOMAINS}, got {domain!r}")
    xb, maskb, cmb, bshape, hw = _prepare_eval(x, mask, coil_maps)
    r = jnp.asarray(r)
    if r.shape[r.ndim - len(bshape) - 2:] != tuple(bshape) + hw:
        raise ValueError(f"r has shape {r.shape}; its trailing axes must be x's {tuple(bshape) + hw}")
    lead = r.shape[:r.ndim - len(bshape) - 2]
    rb = r.reshape(lead + (-1,) + hw).astype(xb.dtype)

    out = _compiled_evaluate(recon, domain, len(lead), cmb is not None)(xb, maskb, cmb, rb)
    out["psnr_drop"] = out["psnr_clean"] - out["psnr_perturbed"]
    return {k: v.reshape(lead + bshape + v.shape[len(lead) + 1:]) for k, v in out.items()}


def noise_baseline(recon: ReconFn, x, mask, norms, draws: int, key, *, domain: str = "image",
                   real: bool = False, coil_maps=None) -> dict:
    """Random perturbations of given norms: the "typical" counterpart of the worst case.

    For each image and each norm, ``draws`` Gaussian perturbations (complex, or real with
    ``real=True``; on the sampled entries for ``domain="measurement"``) rescaled to exactly
    that norm are pushed through the reconstruction.

    Args:
      norms: ``(K,)`` or ``(..., K)`` (per image, e.g. the norms the search reached).
    Returns:
      a dict like :func:`evaluate` without the images, each of shape ``(..., K, draws)``.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    xb, maskb, cmb, bshape, hw = _prepare_eval(x, mask, coil_maps)
    norms = jnp.asarray(norms, jnp.real(xb).dtype)
    if norms.ndim == 0:
        norms = norms[None]
    normsb = _as_problem_axis(norms, bshape, 1, "norms")
    n, k = normsb.shape
    keys = jax.random.split(key, n)
    rdt = jnp.real(xb).dtype

    def draw(kk, mi):
        k1, k2 = jax.random.split(kk)
        g = jax.random.normal(k1, (k, draws) + hw, rdt).astype(xb.dtype)
        if not real:
            g = g + 1j * jax.random.normal(k2, (k, draws) + hw, rdt)
        if domain == "measurement":
            g = fourier.apply_mask(g, mi)
        return g / jnp.sqrt(jnp.sum(jnp.abs(g) ** 2, axis=(-2, -1), keepdims=True))

    dirs = jax.jit(jax.vmap(draw))(keys, maskb)                       # (n, k, draws, H, W)
    r = dirs * normsb[:, :, None, None, None]
    r = jnp.moveaxis(r, 0, 2).reshape((k, draws) + bshape + hw)     # evaluate's layout
    out = evaluate(recon, x, mask, r, domain=domain, coil_maps=coil_maps)
    out = {key_: jnp.moveaxis(jnp.moveaxis(v, 0, -1), 0, -1) for key_, v in out.items()
           if key_ not in ("clean", "perturbed")}
    return out


@functools.lru_cache(maxsize=64)
def _compiled_power_iteration(recon, multicoil: bool):
    """Jitted ``(start, iterate, finish)`` of the power iteration of :func:`local_lipschitz`.

    ``iterate(e, x, mask, maps, iters=k)`` runs ``k`` iterations (``iters`` static): the map
    is linearised once per call and its transpose gives ``J^T``, so an iteration costs one
    tangent and one transposed pass, with no repeated forward pass inside the loop.
    """
    cm_axis = 0 if multicoil else None

    def pieces(xi, mi, ci):
        y = fourier.forward(xi, mi, ci)
        mi_full = jnp.broadcast_to(jnp.expand_dims(mi, -3), y.shape) if multicoil else mi

        def g_real(e):  # real pair (2, ...) -> real pair (2, H, W)
            out = recon(y + fourier.apply_mask(e[0] + 1j * e[1], mi_full))
            return jnp.stack([jnp.real(out), jnp.imag(out)]).astype(e.dtype)
        return y, mi_full, g_real

    def start_one(xi, mi, ci, kk):
        y, mi_full, _ = pieces(xi, mi, ci)
        e0 = jax.random.normal(kk, (2,) + y.shape, jnp.real(xi).dtype) * mi_full
        return e0 / jnp.sqrt(jnp.sum(e0 ** 2))

    def iterate_one(e, xi, mi, ci, iters):
        _, _, g_real = pieces(xi, mi, ci)
        zero = jnp.zeros_like(e)
        _, jac = jax.linearize(g_real, zero)
        jac_t = jax.linear_transpose(jac, zero)

        def body(_, ei):
            (jtje,) = jac_t(jac(ei))
            nrm = jnp.sqrt(jnp.sum(jtje ** 2))
            return jtje / jnp.maximum(nrm, jnp.finfo(nrm.dtype).tiny)
        return jax.lax.fori_loop(0, iters, body, e)

    def finish_one(e, xi, mi, ci):
        _, _, g_real = pieces(xi, mi, ci)
        _, je = jax.jvp(g_real, (jnp.zeros_like(e),), (e,))
        ec = e[0] + 1j * e[1]
        return jnp.sqrt(jnp.sum(je ** 2)), ec, fourier.adjoint(ec, mi, ci)

    start = jax.jit(jax.vmap(start_one, in_axes=(0, 0, cm_axis, 0)))
    iterate = jax.jit(lambda e, x, m, c, iters: jax.vmap(
        functools.partial(iterate_one, iters=iters), in_axes=(0, 0, 0, cm_axis))(e, x, m, c),
        static_argnames="iters")
    finish = jax.jit(jax.vmap(finish_one, in_axes=(0, 0, 0, cm_axis)))
    return start, iterate, finish


def local_lipschitz(recon: ReconFn, x, mask, iters: int, key, *, coil_maps=None) -> dict:
    """The linearised worst direction: power iteration on the Jacobian of ``e -> f(A x + e)``.

    ``e`` ranges over the sampled k-space entries (equivalently ``r`` over the range of
    ``A*``: ``A r = e``).  The map is treated as real-linear (real and imaginary parts), with
    ``jax.jvp`` and ``jax.vjp``, so non-holomorphic networks are handled exactly.

    Returns a dict: ``gain`` (..., the largest singular value ||J e|| / ||e||),
    ``direction`` (the unit measurement-space direction e, ``(..., [C,] H, W)``) and
    ``image_direction`` (``A* e``, the image-space perturbation that produces it).
    The gain holds only for perturbations small enough for the linearisation; compare with
    the ratio the nonlinear search reaches.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    xb, maskb, cmb, bshape, hw = _prepare_eval(x, mask, coil_maps)
    keys = jax.random.split(key, xb.shape[0])
    start, iterate, finish = _compiled_power_iteration(recon, cmb is not None)
    e = start(xb, maskb, cmb, keys)
    if _unrolled_on_host():   # one compiled iteration per call on CPU, as in :func:`run`
        for _ in range(iters):
            e = iterate(e, xb, maskb, cmb, iters=1)
    else:                     # the whole loop in one call, linearised once
        e = iterate(e, xb, maskb, cmb, iters=iters)
    gain, e, img = finish(e, xb, maskb, cmb)
    return {"gain": gain.reshape(bshape), "direction": e.reshape(bshape + e.shape[1:]),
            "image_direction": img.reshape(bshape + hw)}
