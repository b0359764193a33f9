"""Training several networks on a few fixed pairs: the toy experiment of "The troublesome kernel".

Gottschling et al. (SIAM Review 2025, Fig. 2) and the DL4IA tutorial train a network on the
pairs ``(A x, x)`` and ``(A (x + x_det), x + x_det)`` only, then look at what it reconstructs
from ``A x`` (:mod:`mrijax.hallucination` holds the mathematics of that experiment).  Here
``G`` independent networks (e.g. one per visibility of the detail) are trained side by side,
with ``vmap`` over stacked parameters: :func:`init_pair_fit`, :func:`fit_pairs`,
:func:`stacked_reconstructions`, :func:`squared_error_loss`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import jax
import jax.numpy as jnp
import optax

from mrijax import fourier, train
from mrijax._checks import check_image, check_int, check_mask, is_number
from mrijax.models import reconstruction_map

__all__ = ["PairFit", "fit_pairs", "init_pair_fit", "squared_error_loss", "stacked_reconstructions"]


def _sqnorm(a):
    """Squared l2 norm over the trailing two axes (real result)."""
    return jnp.sum(jnp.square(jnp.abs(a)), axis=(-2, -1))


def squared_error_loss(prediction, target):
    """``||prediction - target||^2`` per image (sum over pixels), averaged over leading axes.

    Unlike :func:`mrijax.train.magnitude_l2_loss` the target is *not* replaced by its
    magnitude: an image plus a kernel detail is real but can be negative (the kernel
    projection rings), and the network must reproduce it with its sign.  For complex
    predictions the modulus of the difference is used.
    """
    return jnp.mean(_sqnorm(jnp.asarray(prediction) - jnp.asarray(target)))


class PairFit(NamedTuple):
    """The state of :func:`fit_pairs`: ``G`` networks trained side by side.

    Attributes:
      state: a :class:`mrijax.train.TrainState` whose leaves carry a leading axis ``G``
        (``state.step`` is ``(G,)``: optimiser steps each network took).
      done: ``(G,)`` bool, the network reached ``min_loss`` and is frozen.
      stopped_at: ``(G,)`` int32, the network's step count when its loss first was at most
        ``min_loss`` (its parameters are those), ``-1`` while not.
      iteration: ``()`` int32, iterations run so far (the same for all networks).
    """

    state: Any
    done: jax.Array
    stopped_at: jax.Array
    iteration: jax.Array


def init_pair_fit(params, optimizer: optax.GradientTransformation, num_networks: int,
                  seed: int = 0) -> PairFit:
    """``num_networks`` copies of one initialisation, ready for :func:`fit_pairs`.

    All networks start from the same ``params`` (so that they differ only by their
    training data, e.g. the visibility of the detail), each with a fresh optimiser state.

    Args:
      params: the model's variables (``model.init`` output).
      optimizer: the optax transformation (e.g. :func:`mrijax.train.make_optimizer`).
      num_networks: ``G >= 1``.
      seed: seed of the (unused by :func:`fit_pairs`, kept for compatibility) train-state key.

    Returns:
      A :class:`PairFit` at iteration 0.
    """
    check_int(num_networks, "num_networks", 1)
    check_int(seed, "seed", 0)

    def build(p):   # one compiled call instead of an op-by-op dispatch per leaf
        one = train.create_train_state(p, optimizer, seed=seed)
        return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (num_networks,) + jnp.shape(a)), one)

    return PairFit(state=jax.jit(build)(params), done=jnp.zeros((num_networks,), bool),
                   stopped_at=jnp.full((num_networks,), -1, jnp.int32), iteration=jnp.zeros((), jnp.int32))


def _static_mask(mask):
    try:
        m = np.asarray(mask)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as e:
        raise TypeError("fit_pairs / stacked_reconstructions need a concrete (NumPy) mask") from e
    if m.ndim != 2:
        raise ValueError(f"mask must be one (H, W) array here, got shape {m.shape}")
    return m.astype(bool)


def stacked_reconstructions(model, params, mask, k):
    """``f_g(k_g)`` for ``G`` networks with stacked parameters (network axis first).

    Args:
      model: a registered model (:mod:`mrijax.models`).
      params: variables whose leaves have a leading axis ``G`` (``PairFit.state.params``).
      mask: concrete centred ``(H, W)`` mask.
      k: masked centred k-space ``(G, ..., H, W)``: network ``g`` reconstructs ``k[g]``.

    Returns:
      ``(G, ..., H, W)`` reconstructions (real for AUTOMAP, complex for the cascade).
    """
    m = _static_mask(mask)
    return _compiled_stacked_map(model, m.tobytes(), m.shape)(params, jnp.asarray(k))


@functools.lru_cache(maxsize=16)
def _compiled_stacked_map(model, mask_bytes, mask_shape):
    m = np.frombuffer(mask_bytes, bool).reshape(mask_shape)
    return jax.jit(jax.vmap(lambda p, kk: reconstruction_map(model, p, m)(kk)))


def fit_pairs(model, mask, targets, optimizer: optax.GradientTransformation, fit: PairFit, *,
              steps: int, min_loss: Optional[float] = None, chunk: int = 50,
              callback: Optional[Callable[[PairFit, np.ndarray], Any]] = None,
              vmap: Optional[bool] = None) -> PairFit:
    """Train ``G`` networks, network ``g`` on the fixed pairs ``(A targets[g, p], targets[g, p])``.

    Each iteration is one full-batch optimiser step per network on
    :func:`squared_error_loss` of ``f(A t)`` against ``t`` (``f`` =
    :func:`mrijax.models.reconstruction_map`, noiseless measurements).  A network whose
    loss (evaluated before the step) is at most ``min_loss`` keeps those parameters from
    then on (the tutorial's "train until ``min_loss``"; it also protects a reached fit from
    the loss spikes Adam shows at tiny losses).  The loop ends after ``steps`` iterations
    in total (counting those ``fit`` already ran) or once every network is done.

    All networks start from ``fit`` and see only their own pairs, so the result for one
    network does not depend on the others.  On accelerators they run in one compiled,
    ``vmap``-ed step; on CPU one compiled single-network step runs network after network,
    skipping those that are done (``vmap`` over parameters turns each convolution into a
    grouped one, which XLA:CPU runs several times slower: about 4x for AUTOMAP at 64x64
    with ``G = 5``).  Both give the same numbers up to float rounding.  The compiled step
    is cached per (model, optimizer, mask, ``min_loss``), so repeated calls (resuming,
    tests) compile once.

    Args:
      model: a registered model (:mod:`mrijax.models`; the paper's experiment uses AUTOMAP).
      mask: concrete centred ``(H, W)`` mask.
      targets: ``(G, P, H, W)``: ``P`` training images for each of the ``G`` networks.
      optimizer: the optax transformation ``fit`` was initialised with.
      fit: from :func:`init_pair_fit` (or a saved one, to resume).
      steps: total iterations (>= 1).
      min_loss: stopping loss per network (``None``: train all ``steps``).
      chunk: iterations between calls of ``callback``.
      callback: ``callback(fit, losses)`` after each chunk, ``losses`` the ``(k, G)`` NumPy
        array of the losses of that chunk's iterations (before each step): progress lines,
        saving ``fit`` for a resume.
      vmap: run the ``G`` networks in one ``vmap``-ed step (``True``) or one after the
        other (``False``); ``None``: one after the other on CPU, ``vmap`` elsewhere.

    Returns:
      The final :class:`PairFit`.
    """
    m = _static_mask(mask)
    targets = jnp.asarray(targets)
    check_image(targets, "targets")
    if targets.ndim != 4:
        raise ValueError(f"targets must be (G, P, H, W), got shape {tuple(targets.shape)}")
    check_mask(m, targets.shape)
    g = int(fit.done.shape[0])
    if targets.shape[0] != g:
        raise ValueError(f"targets has {targets.shape[0]} groups but fit holds {g} networks")
    for value, name in ((steps, "steps"), (chunk, "chunk")):
        check_int(value, name, 1)
    if min_loss is not None and not (is_number(min_loss) and min_loss >= 0):
        raise ValueError(f"min_loss must be None or a number >= 0, got {min_loss!r}")
    threshold = -math.inf if min_loss is None else float(min_loss)
    one_by_one = (jax.default_backend() == "cpu") if vmap is None else not vmap
    fns = _compiled_fit_functions(model, optimizer, m.tobytes(), m.shape, threshold)
    k = fourier.forward(targets, m)
    while int(fit.iteration) < steps and not bool(jnp.all(fit.done)):
        n = min(chunk, steps - int(fit.iteration))
        if one_by_one:
            # The same compiled single-network step, network after network; a frozen
            # network is skipped (its loss is constant).
            parts, losses = _unstack((fit.state, fit.done, fit.stopped_at), g), []
            for i in range(g):
                state, done, stopped = parts[i]
                if bool(done):
                    losses.append(jnp.full((n,), fns["loss"](state.params, k[i], targets[i])))
                    continue
                mine = []
                for _ in range(n):
                    state, done, stopped, loss = fns["step"](state, done, stopped, k[i], targets[i])
                    mine.append(loss)
                parts[i] = (state, done, stopped)
                losses.append(jnp.stack(mine))
            state, done, stopped = _stack(parts)
            losses = jnp.stack(losses, axis=1)
        else:
            state, done, stopped = fit.state, fit.done, fit.stopped_at
            losses = []
            # A host loop over one compiled step (XLA:CPU runs convolutions much slower inside
            # a rolled loop, see mrijax.attacks; elsewhere the dispatch cost is negligible).
            for _ in range(n):
                state, done, stopped, loss = fns["vstep"](state, done, stopped, k, targets)
                losses.append(loss)
            losses = jnp.stack(losses)
        fit = PairFit(state=state, done=done, stopped_at=stopped, iteration=fit.iteration + n)
        if callback is not None:
            callback(fit, np.asarray(losses))
    return fit


@functools.partial(jax.jit, static_argnums=1)
def _unstack(tree, g):
    return [jax.tree_util.tree_map(lambda a: a[i], tree) for i in range(g)]


@jax.jit
def _stack(parts):
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *parts)


@functools.lru_cache(maxsize=16)
def _compiled_fit_functions(model, optimizer, mask_bytes, mask_shape, threshold):
    """The compiled pieces of :func:`fit_pairs`, cached so that repeated calls compile once."""
    m = np.frombuffer(mask_bytes, bool).reshape(mask_shape)

    def objective(params, kg, tg):
        return squared_error_loss(reconstruction_map(model, params, m)(kg), tg)

    def one(state, done, stopped, kg, tg):
        loss, grads = jax.value_and_grad(objective)(state.params, kg, tg)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new = train.TrainState(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                               step=state.step + 1, rng=state.rng)
        hit = jnp.logical_and(~done, loss <= threshold)
        done_now = jnp.logical_or(done, hit)
        # A frozen network keeps the parameters whose loss met the threshold.
        state = jax.tree_util.tree_map(lambda old, nw: jnp.where(done_now, old, nw), state, new)
        return state, done_now, jnp.where(hit, state.step, stopped), loss

    return {"step": jax.jit(one), "vstep": jax.jit(jax.vmap(one)), "loss": jax.jit(objective)}
