"""Train AUTOMAP on an image with an added detail; measure how much detail it puts into the image without it.

Gottschling et al., main results 2.1 and 2.3.

Single pair (default; the DL4IA tutorial's section 2).  An image ``x1`` and a detail
``x_det`` (an ellipse drawn with the ``--detail_*`` flags, or any ``--detail_file``),
with ``--detail_in_kernel`` projected onto the real kernel of ``A`` so that
``A x_det = 0`` (:func:`mrijax.hallucination.detail_in_kernel`).  AUTOMAP is trained on
the single pair ``(A(x1 + x_det), x1 + x_det)`` until ``--min_loss`` (or
``--steps``), then reconstructs ``x1`` from ``A x1`` and from ``A x1 + e`` (``--noise``).
The detail appears in both: the script reports the transferred fraction
``<f(A x1) - x1, x_det> / ||x_det||^2`` and the PSNR of each reconstruction.

Pairs (``--pair``; result 2.3).  One network per visibility ``v`` in ``--visibilities``,
each trained on both ``(A x1, x1)`` and ``(A(x1 + d_v), x1 + d_v)``, where ``d_v`` is the
drawn detail's kernel part plus a scaled range part with ``||A d_v|| / ||d_v|| = v``
exactly and ``||d_v|| = ||x_det||`` (:func:`mrijax.hallucination.detail_with_visibility`).
To be accurate on both images a network needs the local gain
``||f(A(x1 + d_v)) - f(A x1)|| / ||A d_v|| = 1 / v``; the curve of the gain it reached
against ``1 / v``, and of the fraction of ``d_v`` it put into ``f(A x1)``, shows the
trade-off.  The networks train side by side (``vmap``) from one initialisation.

Writes into ``--out_dir``:

* ``detail_transfer.png`` (single pair): the tutorial's 2x2 -- accurate reconstruction of
  ``x1 + x_det``, its target, the reconstruction of ``x1`` with the hallucination, ``x1``.
* ``detail_maps.png`` (single pair): the detail, ``f(A x1) - x1``, that error's kernel part
  (the hallucination map of :func:`mrijax.hallucination.error_split`) and range part, and
  the reconstruction from noisy measurements.
* ``accuracy_stability.png`` (``--pair``): local gain against ``1 / v``, transferred
  fraction and PSNRs against ``v``; ``pair_reconstructions.png``: the images per ``v``.
* ``results.json`` (all numbers and flags), ``arrays.npz`` (images, details,
  reconstructions, loss history), and while training ``fit_state.npz`` (every
  ``--chunk`` iterations; ``--resume`` continues from it).

Examples::

    python -m experiments.detail_transfer --out_dir=runs/detail --detail_in_kernel
    python -m experiments.detail_transfer --out_dir=runs/pair --pair --steps=2000
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments import common
from mrijax import fourier, metrics, models, pair_training, train
from mrijax import hallucination as hal
from mrijax.data import phantoms


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    common.define_image_flags(fv, images="shepp_logan", size=64, single=True, min_size=8)
    common.define_out_flags(fv)
    # exact_count_lines: exactly size / acceleration phase-encode lines (R = 4: 25% of them).
    common.define_mask_flags(fv, mask="exact_count_lines", acceleration=4.0, sample_n=None)
    flags.DEFINE_integer("hidden", 64, "AUTOMAP's hidden width (25000 in the paper, 64 in DL4IA).",
                         lower_bound=1, **d)
    flags.DEFINE_integer("conv_features", 64, "Channels of AUTOMAP's two 5x5 convolutions.", lower_bound=1, **d)
    flags.DEFINE_list("detail_center", ["0.3", "-0.35"], "Ellipse centre x,y in [-1, 1] (y up).", **d)
    flags.DEFINE_list("detail_axes", ["0.1", "0.08"], "Ellipse semi-axes a,b (1 = half the image side).", **d)
    flags.DEFINE_float("detail_angle", 0.0, "Ellipse rotation in degrees (counter-clockwise).", **d)
    flags.DEFINE_float("detail_value", 0.3, "Ellipse intensity (added to x1).", **d)
    flags.DEFINE_string("detail_file", None, "A real (size, size) .npy image to use as the detail instead of "
                        "the ellipse.", **d)
    flags.DEFINE_bool("detail_in_kernel", False, "Project the detail onto the (real) kernel of A, so that "
                      "||A x_det|| = 0 (single pair only).", **d)
    flags.DEFINE_bool("pair", False, "Train one network per --visibilities on (A x1, x1) and "
                      "(A(x1 + d_v), x1 + d_v): the accuracy-stability curve.", **d)
    flags.DEFINE_list("visibilities", ["0.01", "0.03", "0.1", "0.3", "0.9"],
                      "With --pair: visibilities v = ||A d_v|| / ||d_v|| in [0, max), one network each.", **d)
    flags.DEFINE_float("min_loss", 1e-3, "Stop a network once its loss (sum of squared errors per image, "
                       "mean over its pairs) is at most this (0: never).", lower_bound=0.0, **d)
    flags.DEFINE_integer("steps", 1000, "Adam steps at most.", lower_bound=1, **d)
    flags.DEFINE_float("lr", 2e-3, "Adam learning rate (peak), > 0.", **d)
    flags.DEFINE_bool("lr_decay", True, "Cosine decay of the learning rate to 1% over --steps.", **d)
    flags.DEFINE_float("noise", 0.02, "Measurement noise for f(A x1 + e): ||e|| = noise * ||A x1||.",
                       lower_bound=0.0, **d)
    flags.DEFINE_integer("seed", 0, "Seed of the network initialisation, the noise and --images=ellipses.",
                         lower_bound=0, **d)
    flags.DEFINE_integer("chunk", 50, "Iterations between progress lines / saves of the training state.",
                         lower_bound=1, **d)
    common.require_positive(fv, "lr")
    return fv


# Flags that do not change the numbers: a resumed run may differ in them.
_NOT_NUMERIC = {"resume", "chunk", "out_dir"}


def _check_flags(fv):
    """Every flag problem, before any long computation."""
    if fv.pair and fv.detail_in_kernel:
        raise ValueError("--detail_in_kernel is for the single pair; --pair builds its details from "
                         "--visibilities (v = 0 is a detail in the kernel)")
    center = common.parse_floats(fv.detail_center, "detail_center", 2)
    axes = common.parse_floats(fv.detail_axes, "detail_axes", 2)
    if min(axes) <= 0:
        raise ValueError(f"--detail_axes must be positive, got {fv.detail_axes}")
    vis = None
    if fv.pair:
        vis = common.parse_floats(fv.visibilities, "visibilities")
        if not vis:
            raise ValueError("--visibilities must not be empty with --pair")
        if min(vis) < 0 or max(vis) >= 1:
            raise ValueError(f"--visibilities must lie in [0, 1), got {fv.visibilities}")
    if not fv.lr > 0:
        raise ValueError(f"--lr must be > 0, got {fv.lr}")
    return center, axes, vis


def _detail(fv, center, axes):
    if fv.detail_file:
        if not os.path.isfile(fv.detail_file):
            raise FileNotFoundError(f"--detail_file {fv.detail_file} does not exist")
        a = np.load(fv.detail_file, allow_pickle=False)
        if a.shape != (fv.size, fv.size) or a.dtype.kind not in "biuf":
            raise ValueError(f"--detail_file must hold a real ({fv.size}, {fv.size}) array, got {a.dtype} "
                             f"{a.shape}")
        if not np.all(np.isfinite(a)) or not np.any(a):
            raise ValueError("--detail_file must be finite and not all zero")
        return a.astype(np.float32)
    d = phantoms.ellipse(fv.size, center, axes, fv.detail_angle, fv.detail_value)
    if not np.any(d):
        raise ValueError("the detail ellipse covers no pixel: enlarge --detail_axes or move --detail_center "
                         "into the image")
    return d


def _save_fit(path, fit, history):
    leaves = jax.tree_util.tree_leaves(fit)
    common.save_npz(path, history=history, **{f"leaf_{i:04d}": np.asarray(a) for i, a in enumerate(leaves)})


def _load_fit(path, template):
    arrays = common.load_npz(path)
    leaves, treedef = jax.tree_util.tree_flatten(template)
    saved = [arrays[f"leaf_{i:04d}"] for i in range(len(leaves)) if f"leaf_{i:04d}" in arrays]
    if len(saved) != len(leaves) or any(s.shape != np.shape(t) for s, t in zip(saved, leaves)):
        raise ValueError(f"{path} does not fit this run (different model or number of networks)")
    fit = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(s, dtype=t.dtype) for s, t in zip(saved, leaves)])
    return fit, arrays["history"]


def _saved_iteration(path) -> str:
    """Ctrl-C's line: how far the saved training state goes (one loss row per iteration)."""
    with np.load(path, allow_pickle=False) as z:
        return f"at iteration {z['history'].shape[0]} of the training"


def _train(fv, model, mask, targets, y_example):
    """Train one network per group of targets, saving as it goes; returns (params, fit, history)."""
    optimizer = train.make_optimizer("adam", fv.lr, decay_steps=fv.steps if fv.lr_decay else None,
                                     final_lr_fraction=0.01)
    params = jax.jit(model.init)(jax.random.PRNGKey(fv.seed), y_example)
    fit = pair_training.init_pair_fit(params, optimizer, targets.shape[0], seed=fv.seed)
    history = np.zeros((0, targets.shape[0]), np.float32)
    state_path = os.path.join(fv.out_dir, "fit_state.npz")
    common.note_progress(state_path, _saved_iteration)
    if fv.resume and os.path.exists(state_path):
        fit, history = _load_fit(state_path, fit)
        print(f"resuming training at iteration {int(fit.iteration)}", flush=True)
    t0 = time.time()
    hist = [history]

    def report(f, losses):
        hist.append(losses.astype(np.float32))
        h = np.concatenate(hist)
        _save_fit(state_path, f, h)
        done = np.asarray(f.done)
        print(f"[iteration {int(f.iteration)}/{fv.steps}] loss " + " ".join(f"{l:.3g}" for l in losses[-1])
              + f"  reached min_loss {int(done.sum())}/{done.size}  {time.time() - t0:.1f}s", flush=True)

    min_loss = fv.min_loss if fv.min_loss > 0 else None
    fit = pair_training.fit_pairs(model, mask, targets, optimizer, fit, steps=fv.steps, min_loss=min_loss,
                        chunk=fv.chunk, callback=report)
    history = np.concatenate(hist)
    _save_fit(state_path, fit, history)
    return fit, history


def _evaluate(fv, model, mask, x1, details, targets, fit):
    """All reconstructions and numbers, from library calls; returns a dict of NumPy arrays."""
    params = fit.state.params
    y1 = fourier.forward(x1, mask)
    y_det = fourier.forward(x1[None] + details, mask)                       # (G, H, W)
    y1_norm = float(jnp.linalg.norm(y1))
    e = hal.measurement_noise(jax.random.fold_in(jax.random.key(fv.seed), 1), mask, fv.noise * y1_norm)
    ks = jnp.stack([jnp.broadcast_to(y1, y_det.shape), y_det, jnp.broadcast_to(y1 + e, y_det.shape)], axis=1)
    rec = np.asarray(pair_training.stacked_reconstructions(model, params, mask, ks))  # (G, 3, H, W)
    rec_x1, rec_det, rec_noisy = rec[:, 0], rec[:, 1], rec[:, 2]
    a_det = np.asarray(jnp.linalg.norm(fourier.forward(details, mask), axis=(-2, -1)))
    split = hal.error_split(rec_x1, x1[None], mask, real=True)
    # The final training loss of each network, on its own pairs (recomputed here).
    train_rec = np.asarray(pair_training.stacked_reconstructions(model, params, mask, fourier.forward(targets, mask)))
    out = dict(
        x1=x1, details=details, targets=targets, mask=mask, noise=np.asarray(e),
        recon_x1=rec_x1, recon_detail=rec_det, recon_noisy=rec_noisy,
        detail_norm=np.asarray(jnp.linalg.norm(details, axis=(-2, -1))), A_detail_norm=a_det,
        visibility=np.asarray(hal.visibility(details, mask)),
        transferred_fraction=np.asarray(hal.transferred_fraction(rec_x1, x1, details)),
        transferred_fraction_noisy=np.asarray(hal.transferred_fraction(rec_noisy, x1, details)),
        local_gain=np.asarray(hal.local_gain(rec_det, rec_x1, a_det)),
        psnr_detail=np.asarray(metrics.psnr(rec_det, x1[None] + details)),
        psnr_x1=np.asarray(metrics.psnr(rec_x1, np.broadcast_to(x1, rec_x1.shape))),
        psnr_x1_vs_detail_image=np.asarray(metrics.psnr(rec_x1, x1[None] + details)),
        psnr_noisy=np.asarray(metrics.psnr(rec_noisy, np.broadcast_to(x1, rec_noisy.shape))),
        final_loss=np.asarray(jax.vmap(pair_training.squared_error_loss)(train_rec, targets)),
        error_kernel=np.asarray(split["kernel"]), error_range=np.asarray(split["range"]),
        error_norm=np.asarray(split["error_norm"]), error_kernel_norm=np.asarray(split["kernel_norm"]),
        error_range_norm=np.asarray(split["range_norm"]),
        steps=np.asarray(fit.state.step), stopped_at=np.asarray(fit.stopped_at),
        noise_norm=np.asarray(jnp.linalg.norm(e)), y1_norm=np.asarray(y1_norm))
    return out


def _figure_single(fv, a):
    plt = common.pyplot()
    x1, d = a["x1"], a["details"][0]
    lo, hi = float(min(x1.min(), (x1 + d).min())), float(max(x1.max(), (x1 + d).max()))
    fig, axes = plt.subplots(2, 2, figsize=(7.2, 7.4))
    panels = [(a["recon_detail"][0], f"Highly accurate reconstruction\nf(A(x1 + x_det)), PSNR {a['psnr_detail'][0]:.1f} dB"),
              (x1 + d, "Target with the detail\nx1 + x_det"),
              (a["recon_x1"][0], f"Reconstruction of x1 with hallucination\nf(A x1): transferred fraction "
                                 f"{a['transferred_fraction'][0]:.3f}"),
              (x1, f"Target without the detail\nx1 (f(A x1) vs x1: PSNR {a['psnr_x1'][0]:.1f} dB)")]
    for ax, (img, title) in zip(axes.ravel(), panels):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"Detail transfer (AUTOMAP trained on one pair), ||A x_det|| / ||x_det|| = "
                 f"{a['visibility'][0]:.2e}", fontsize=10)
    common.save_figure(os.path.join(fv.out_dir, "detail_transfer.png"), fig)

    halluc = a["recon_x1"][0] - x1
    maps = [(d, "detail x_det"), (halluc, "f(A x1) - x1"),
            (a["error_kernel"][0], f"kernel part of f(A x1) - x1\n(norm {a['error_kernel_norm'][0]:.3g})"),
            (a["error_range"][0], f"range part\n(norm {a['error_range_norm'][0]:.3g})")]
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.4))
    top = float(max(np.abs(m).max() for m, _ in maps)) or 1.0
    for ax, (img, title) in zip(axes[:4], maps):
        im = ax.imshow(img, cmap="seismic", vmin=-top, vmax=top)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.colorbar(im, ax=list(axes[:4]), fraction=0.02)
    axes[4].imshow(a["recon_noisy"][0], cmap="gray", vmin=lo, vmax=hi)
    axes[4].set_title(f"f(A x1 + e), ||e|| = {fv.noise:g} ||A x1||\ntransferred "
                      f"{a['transferred_fraction_noisy'][0]:.3f}", fontsize=9)
    axes[4].set_axis_off()
    common.save_figure(os.path.join(fv.out_dir, "detail_maps.png"), fig)


def _figure_pair(fv, a, vis):
    plt = common.pyplot()
    v = np.asarray(vis)
    pos = v > 0
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    inv = 1 / v[pos]
    ax.loglog(inv, a["local_gain"][pos], "o-", label="gain reached  ||f(A(x1+d_v)) - f(A x1)|| / ||A d_v||")
    grid = np.geomspace(min(inv.min(), 1.0), inv.max(), 50)
    ax.loglog(grid, grid, "k--", lw=1, label="needed to be accurate on both: 1/v")
    ax.set_xlabel("1 / v = ||d_v|| / ||A d_v||")
    ax.set_ylabel("local gain")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    ax = axes[1]
    ax.semilogx(v[pos], a["transferred_fraction"][pos], "o-", label="f(A x1)")
    ax.semilogx(v[pos], a["transferred_fraction_noisy"][pos], "s--", label=f"f(A x1 + e), noise {fv.noise:g}")
    ax.set_xlabel("visibility v = ||A d_v|| / ||d_v||")
    ax.set_ylabel("transferred fraction of d_v")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    ax = axes[2]
    ax.semilogx(v[pos], a["psnr_x1"][pos], "o-", label="f(A x1) vs x1")
    ax.semilogx(v[pos], a["psnr_detail"][pos], "s-", label="f(A(x1 + d_v)) vs x1 + d_v")
    ax.set_xlabel("visibility v")
    ax.set_ylabel("PSNR (dB)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.suptitle("Accuracy-stability trade-off: one AUTOMAP per v, trained on (A x1, x1) and "
                 "(A(x1 + d_v), x1 + d_v)", fontsize=10)
    common.save_figure(os.path.join(fv.out_dir, "accuracy_stability.png"), fig)

    x1 = a["x1"]
    lo = float(min(x1.min(), (x1[None] + a["details"]).min()))
    hi = float(max(x1.max(), (x1[None] + a["details"]).max()))
    n = len(v)
    fig, axes = plt.subplots(n, 4, figsize=(9.6, 2.5 * n), squeeze=False)
    for i in range(n):
        d = a["details"][i]
        halluc = a["recon_x1"][i] - x1
        top = float(np.abs(d).max()) or 1.0
        row = [(x1 + d, "gray", lo, hi, f"x1 + d_v, v = {v[i]:g}"),
               (a["recon_detail"][i], "gray", lo, hi, f"f(A(x1 + d_v)) {a['psnr_detail'][i]:.1f} dB"),
               (a["recon_x1"][i], "gray", lo, hi, f"f(A x1) {a['psnr_x1'][i]:.1f} dB"),
               (halluc, "seismic", -top, top, f"f(A x1) - x1: transfer {a['transferred_fraction'][i]:.2f}")]
        for j, (img, cmap, vmin, vmax, title) in enumerate(row):
            axes[i, j].imshow(img, cmap=cmap, vmin=vmin, vmax=vmax)
            axes[i, j].set_title(title, fontsize=8)
            axes[i, j].set_axis_off()
    common.save_figure(os.path.join(fv.out_dir, "pair_reconstructions.png"), fig)


def _network_entries(a, vis):
    keys = ("visibility", "detail_norm", "A_detail_norm", "transferred_fraction", "transferred_fraction_noisy",
            "local_gain", "psnr_detail", "psnr_x1", "psnr_x1_vs_detail_image", "psnr_noisy", "final_loss",
            "error_norm", "error_kernel_norm", "error_range_norm", "steps", "stopped_at")
    out = []
    for i in range(a["details"].shape[0]):
        e = {k: a[k][i] for k in keys}
        if vis is not None:
            e["target_visibility"] = vis[i]
            e["gain_needed"] = 1 / vis[i] if vis[i] > 0 else float("inf")
        out.append(e)
    return out


def run(fv) -> dict:
    """The whole job for parsed flags ``fv``; returns the results dict written to results.json."""

    # Everything that can be wrong with the flags fails here, before any long computation.
    center, axes, vis = _check_flags(fv)
    size = fv.size
    mask = common.mask_from_flags(fv)
    x1 = common.load_checked_images(fv.images, size, count=1, seed=fv.seed)[0]
    notes = []
    if np.iscomplexobj(x1):
        x1 = np.abs(x1)
        notes.append("--images is complex: its magnitude is x1 (AUTOMAP reconstructs real images)")
        print(f"note: {notes[-1]}", flush=True)
    x1 = x1.astype(np.float32)
    base = _detail(fv, center, axes)
    if fv.pair:
        # d_v for each v, all of norm ||base||; raises (naming the largest v) if a v is out of reach.
        details = np.asarray(hal.detail_with_visibility(np.broadcast_to(base, (len(vis), size, size)), mask,
                                                        np.asarray(vis), real=True))
        targets = np.stack([np.broadcast_to(x1, details.shape), x1[None] + details], axis=1)   # (G, 2, H, W)
    else:
        detail = np.asarray(hal.detail_in_kernel(base, mask, real=True)) if fv.detail_in_kernel else base
        details = detail[None].astype(np.float32)
        targets = (x1[None] + details)[:, None]                                              # (1, 1, H, W)
    details = details.astype(np.float32)
    targets = targets.astype(np.float32)

    a_norm = np.asarray(jnp.linalg.norm(fourier.forward(details, mask), axis=(-2, -1)))
    d_norm = np.linalg.norm(details, axis=(-2, -1))
    for i in range(details.shape[0]):
        label = f"v = {vis[i]:g}: " if fv.pair else ""
        print(f"{label}||A x_det||_2 = {a_norm[i]:.4g}   ||x_det||_2 = {d_norm[i]:.4g}   "
              f"||A x_det|| / ||x_det|| = {a_norm[i] / d_norm[i]:.4g}", flush=True)

    common.prepare_out_dir(fv, _NOT_NUMERIC)
    model = models.build({"class": "automap",
                          "kwargs": dict(n=size, m=int(mask.sum()), hidden=fv.hidden,
                                         conv_features=fv.conv_features)})
    y_example = fourier.gather(fourier.fft2c(targets[0, :1]), mask)
    t0 = time.time()
    fit, history = _train(fv, model, mask, targets, y_example)
    train_seconds = time.time() - t0

    arrays = _evaluate(fv, model, mask, x1, details, targets, fit)
    arrays["loss_history"] = history
    if vis is not None:
        arrays["target_visibilities"] = np.asarray(vis)
    networks = _network_entries(arrays, vis)
    results = {
        "flags": common.flag_dict(fv), "mode": "pair" if fv.pair else "single",
        "sampling_rate": float(mask.mean()), "notes": notes,
        "x1_norm": float(np.linalg.norm(x1)), "A_x1_norm": float(arrays["y1_norm"]),
        "noise_norm": float(arrays["noise_norm"]),
        "base_detail_norm": float(np.linalg.norm(base)),
        "base_detail_visibility": float(hal.visibility(base, mask)),
        "base_detail_max_visibility_real": float(hal.max_visibility(base, mask, real=True)),
        "networks": networks, "iterations": int(fit.iteration), "train_seconds": train_seconds,
        "definitions": {
            "visibility": "||A x_det|| / ||x_det||",
            "transferred_fraction": "<f(A x1) - x1, x_det> / ||x_det||^2 (real inner product)",
            "transferred_fraction_noisy": "the same with f(A x1 + e), ||e|| = noise * ||A x1||",
            "local_gain": "||f(A(x1 + x_det)) - f(A x1)|| / ||A x_det||; accuracy on both needs 1 / visibility",
            "psnr": "mrijax.metrics.psnr (peak of the reference): psnr_detail f(A(x1 + x_det)) vs x1 + x_det, "
                    "psnr_x1 f(A x1) vs x1, psnr_noisy f(A x1 + e) vs x1",
            "final_loss": "sum of squared errors per image, mean over the network's training pairs",
            "error_*_norm": "f(A x1) - x1 split into the real kernel of A and its complement "
                            "(mrijax.hallucination.error_split, real=True)"}}
    if not fv.pair:
        results.update(transferred_fraction=networks[0]["transferred_fraction"],
                       A_detail_norm=networks[0]["A_detail_norm"], visibility=networks[0]["visibility"])
    common.save_npz(os.path.join(fv.out_dir, "arrays.npz"), **arrays)
    common.save_json(os.path.join(fv.out_dir, "results.json"), results)
    if fv.pair:
        _figure_pair(fv, arrays, vis)
        for e in networks:
            print(f"v = {e['target_visibility']:g}: transferred fraction {e['transferred_fraction']:.3f} "
                  f"(noisy {e['transferred_fraction_noisy']:.3f}), local gain {e['local_gain']:.3g} "
                  f"(1/v = {e['gain_needed']:.3g}), PSNR x1 {e['psnr_x1']:.1f} dB, x1 + d_v "
                  f"{e['psnr_detail']:.1f} dB, steps {e['steps']}", flush=True)
    else:
        _figure_single(fv, arrays)
        e = networks[0]
        print(f"done after {e['steps']} steps (loss {e['final_loss']:.3g}): transferred fraction "
              f"{e['transferred_fraction']:.4f} (noisy measurements: {e['transferred_fraction_noisy']:.4f}); "
              f"PSNR f(A(x1 + x_det)) {e['psnr_detail']:.2f} dB, f(A x1) vs x1 {e['psnr_x1']:.2f} dB, "
              f"f(A x1 + e) vs x1 {e['psnr_noisy']:.2f} dB", flush=True)
    print(f"files in {fv.out_dir}", flush=True)
    return results


def main(argv=None) -> int:
    return common.main(define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
