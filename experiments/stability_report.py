"""Write a stability report (Markdown, HTML) of one reconstruction map: worst case, noise, hallucination maps.

For a model (``--model``) and a set of images (``--images``) it runs, per batch of images
and for all radii in one batched call:

* the worst-case search of :func:`mrijax.attacks.setup` / :func:`mrijax.attacks.run`
  (projected ascent, ``||r|| <= rho * ||x||`` for each radius ``rho`` in ``--radii``;
  the radius is an array broadcast over the (radius, image) problem batch);
* :func:`mrijax.attacks.noise_baseline`: Gaussian perturbations of exactly the norms the
  search reached;
* :func:`mrijax.attacks.local_lipschitz`: the linearised gain, the ``rho -> 0`` limit of
  ``||f(y + A r) - f(y)|| / ||A r||``;
* the split of each reconstruction error (clean, and worst case at every radius) into its
  part in the range of ``A*`` (what the measurements see: the data-consistency residual)
  and its part in the kernel of ``A`` (what they cannot see: the "hallucination map").

and writes into ``--out_dir``:

* ``report.md`` and ``report.html`` (one self-contained file, the PNGs embedded as base64):
  the model, the flags, a summary table per radius, a table per image, the figures and the
  definition of every number;
* ``summary.png``: PSNR change (perturbed - clean, negative = worse), gain and kernel share
  against the radius, worst case vs noise,
  and the output change against the iteration;
* ``hallucination_image{i}.png``: x, f(y), the error and its range and kernel parts, the
  worst-case perturbation, and the same for the worst case at the largest radius;
* ``results.json`` (every number, the model, the flags, the definitions) and ``arrays.npz``
  (images, perturbations, reconstructions, error parts; image axis first).

Each batch of images is saved when done (``batch{j}.npz``) and the search state after every
``--chunk`` iterations (``state_batch{j}.npz``); ``--resume`` continues an interrupted run,
redoing nothing that was finished.

Example (the defaults: the shipped cascade, two MNI slices at 64 x 64, four radii, 60
steps; under a minute on a quiet 2-core CPU)::

    python -m experiments.stability_report --out_dir=runs/stability_report
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import sys
import time

import jax
import numpy as np
from absl import flags

from experiments import common
from mrijax import attacks, checkpoint, fourier, hallucination

def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    common.define_model_flags(fv)
    common.define_image_flags(fv, images="mni", num_images=2, size=64)
    common.define_out_flags(fv)
    common.define_mask_flags(fv)
    flags.DEFINE_list("radii", ["0.005", "0.01", "0.02", "0.05"],
                      "Radii of the worst-case search: ||r|| <= radius (see --radius_relative_to).", **d)
    flags.DEFINE_enum("radius_relative_to", "x", ["absolute", "x", "measurements"],
                      "Radii in absolute units, or times ||x|| or ||A x||.", **d)
    flags.DEFINE_integer("steps", 60, "Iterations of the search.", lower_bound=1, **d)
    flags.DEFINE_float("momentum", 0.9, "Momentum of the search.", lower_bound=0.0, **d)
    flags.DEFINE_float("tau", 1e-2, "Scale of the uniform random start.", lower_bound=0.0, **d)
    flags.DEFINE_enum("schedule", "cosine", ["constant", "cosine"], "Step schedule (step radius/20).", **d)
    flags.DEFINE_bool("real", False, "Real-valued perturbations only (search and noise).", **d)
    flags.DEFINE_integer("noise_draws", 8, "Gaussian perturbations per image and radius (0: none).",
                         lower_bound=0, **d)
    flags.DEFINE_integer("lipschitz_iters", 20, "Power iterations for the linearised gain (0: skip).",
                         lower_bound=0, **d)
    flags.DEFINE_integer("batch", 4, "Images per batch (all radii of a batch run in one compiled call).",
                         lower_bound=1, **d)
    flags.DEFINE_integer("seed", 0, "Seed of the images, random starts, noise and power iteration.",
                         lower_bound=0, **d)
    flags.DEFINE_integer("chunk", 20, "Iterations per compiled call between progress lines / saves.",
                         lower_bound=1, **d)
    flags.DEFINE_integer("max_figures", 4, "Per-image figures for at most this many images.", lower_bound=0,
                         **d)
    return fv


# Flags that do not change the numbers: a resumed run may differ in them.
_NOT_NUMERIC = {"resume", "max_figures", "chunk", "out_dir"}

DEFINITIONS = {
    "A": "A = P_Omega F: the centred orthonormal 2-D FFT restricted to the sampled entries (the mask); "
         "y = A x. A* A is the orthogonal projection onto the range of A* (one coil).",
    "radius": "The worst-case search maximises ||f(y + A r) - f(y)|| over ||r|| <= rho, rho = radius "
              "times ||x|| (--radius_relative_to=x), ||A x|| (measurements) or 1 (absolute); projected "
              "normalised gradient ascent with momentum, step rho/20, from r0 = tau U[0, 1] "
              "(mrijax.attacks). radius_rel = ||r|| / ||x|| of the perturbation found.",
    "psnr": common.PSNR_DEFINITION + " (mrijax.attacks.evaluate). "
            "Clean: rec = f(y), ref = x. Perturbed (worst case and noise): rec = f(y + A r), ref = x + r.",
    "psnr_change": "PSNR(perturbed) - PSNR(clean), in dB; negative = worse (psnr_change_min: the worst "
                   "image, or draw).",
    "noise": "noise_baseline: i.i.d. complex (real with --real) Gaussian images r rescaled to exactly the "
             "norm ||r|| the worst-case search reached for that image and radius; mean/max over draws "
             "(and images). Same ||r||, so ||A r|| is smaller for noise (about sqrt(sampling rate) ||r||) "
             "than for the worst case (whose r lies mostly in the range of A*).",
    "output_change": "diff = ||f(y + A r) - f(y)||; diff_rel = diff / ||x||.",
    "gain": "||f(y + A r) - f(y)|| / ||A r||: how much the map amplifies the change of its input.",
    "lipschitz_gain": "Linearised gain: the largest singular value of the Jacobian of e -> f(y + e) over "
                      "sampled k-space (power iteration, mrijax.attacks.local_lipschitz); the limit of the "
                      "gain as the radius goes to 0.",
    "error_split": "Error e = f(y) - x, split orthogonally as e = A*A e + (e - A*A e): range part (what "
                   "the measurements see; A*(A f(y) - y), the data-consistency residual) plus kernel part "
                   "(what they cannot see: the hallucination map, P_N f(y) - P_N x). "
                   "||e||^2 = ||range||^2 + ||kernel||^2.",
    "worst_error_split": "Worst case: e' = f(y + A r) - (x + A*A r), split the same way. x + A*A r is the "
                         "image the perturbed measurements y + A r describe: the kernel part of r is "
                         "invisible to every map and is not counted. Kernel part of e' = P_N(f(y + A r) - x).",
    "kernel_share": "||kernel part||^2 / ||error||^2 (0..1): the share of the squared error the "
                    "measurements cannot have caused or corrected.",
    "change_kernel_share": "||P_N(f(y + A r) - f(y))||^2 / ||f(y + A r) - f(y)||^2: the share of the output "
                           "change the attack put into the kernel (P_N = I - A*A).",
    "r_kernel_share": "||P_N r||^2 / ||r||^2: the share of the perturbation that the measurements never see "
                      "(left over from the random start; it changes nothing).",
}


# ----------------------------------------------------------------------------- helpers


def _radii(fv) -> np.ndarray:
    radii = np.array(common.parse_floats(fv.radii, "radii"), np.float64)
    if radii.size == 0 or np.any(radii <= 0):
        raise ValueError(f"--radii must be finite numbers > 0, got {fv.radii}")
    if len(set(radii.tolist())) != radii.size:
        raise ValueError(f"--radii must not repeat a value, got {fv.radii}")
    return np.sort(radii)


def _error_split(recon, ref, mask) -> dict:
    """:func:`mrijax.hallucination.error_split` as NumPy arrays."""
    return {k: np.asarray(v) for k, v in hallucination.error_split(recon, ref, mask).items()}


# ----------------------------------------------------------------------------- one batch


def _batch(fv, j, n_batches, recon, xb, mask, radii, key):
    """Attack, baselines and error splits for one batch of images; a dict of arrays, image axis first."""
    t0 = time.time()
    n_r = radii.size
    xs = np.broadcast_to(xb[None], (n_r,) + xb.shape)                      # (R, B, H, W)
    cfg, prob, state, bshape = attacks.setup(
        recon, xs, mask, method="projected", key=key, steps=fv.steps, momentum=fv.momentum, tau=fv.tau, real=fv.real,
        radius=radii[:, None], radius_relative_to=fv.radius_relative_to, schedule=fv.schedule,
        target="prediction")
    state = common.run_search(recon, cfg, prob, state, state_path=common.batch_state_path(fv, j), resume=fv.resume,
                              chunk=fv.chunk, report=common.search_progress(f"batch {j + 1}/{n_batches}", fv.steps),
                              label=f"[batch {j + 1}/{n_batches}]")
    res = attacks.result_from_state(cfg, state, prob, bshape)

    r_rb = np.asarray(res.r)                                               # (R, B, H, W)
    ev = attacks.evaluate(recon, xb, mask, r_rb)
    first = lambda a: np.moveaxis(np.asarray(a), 0, 1)                    # (R, B, ...) -> (B, R, ...)
    r = first(r_rb)
    clean = np.asarray(ev["clean"][0])
    perturbed = first(ev["perturbed"])
    out = dict(x=xb, r=r, radius=first(res.radius), stopped_at=first(res.stopped_at),
               diverged=first(res.diverged), clean=clean, perturbed=perturbed,
               psnr_clean=np.asarray(ev["psnr_clean"][0]), psnr_perturbed=first(ev["psnr_perturbed"]),
               psnr_change=first(common.psnr_change(ev)), diff_norm=first(ev["diff_norm"]),
               r_norm=first(ev["r_norm"]), Ar_norm=first(ev["Ar_norm"]),
               **{f"history_{k}": np.transpose(np.asarray(v), (2, 1, 0)) for k, v in res.history.items()})

    # Where the errors lie: the clean error, and the worst-case error against the image the
    # perturbed measurements describe (x + A*A r).
    split = _error_split(clean, xb, mask)
    out.update({f"clean_{k}": v for k, v in split.items()})
    r_range = np.asarray(fourier.range_projection(r, mask))
    split = _error_split(perturbed, xb[:, None] + r_range, mask)
    out.update({f"worst_{k}": v for k, v in split.items()})
    sq = lambda a: np.sum(np.abs(a) ** 2, axis=(-2, -1))
    change_kernel = np.asarray(fourier.null_space_projection(perturbed - clean[:, None], mask))
    out.update(change_kernel=change_kernel, change_kernel_norm=np.sqrt(sq(change_kernel)),
               r_kernel_norm=np.sqrt(sq(np.asarray(fourier.null_space_projection(r, mask)))))

    if fv.noise_draws > 0:
        nb = attacks.noise_baseline(recon, xb, mask, out["r_norm"], fv.noise_draws,
                                    jax.random.fold_in(jax.random.key(fv.seed), 10_000 + j), real=fv.real)
        out.update(noise_psnr_change=common.psnr_change(nb), noise_diff_norm=np.asarray(nb["diff_norm"]),
                   noise_r_norm=np.asarray(nb["r_norm"]), noise_Ar_norm=np.asarray(nb["Ar_norm"]))
    if fv.lipschitz_iters > 0:
        ll = attacks.local_lipschitz(recon, xb, mask, fv.lipschitz_iters,
                                     jax.random.fold_in(jax.random.key(fv.seed), 20_000 + j))
        out.update(lipschitz_gain=np.asarray(ll["gain"]))
    # The batch's wall time shared among its images (this call only: a resumed search
    # counts from where it resumed).
    out["seconds"] = np.full(xb.shape[0], (time.time() - t0) / xb.shape[0])
    return out


# ----------------------------------------------------------------------------- numbers


def _summary(a, radii):
    """Per-radius and per-image numbers from the arrays (plain floats)."""
    xn = np.linalg.norm(a["x"], axis=(-2, -1))                              # (N,)
    gain = a["diff_norm"] / a["Ar_norm"]                                    # (N, R)
    share = lambda part, whole: part ** 2 / whole ** 2
    has_noise, has_ll = "noise_psnr_change" in a, "lipschitz_gain" in a
    per_radius = []
    for k, rho in enumerate(radii):
        e = {"radius": rho, "r_rel_mean": np.mean(a["r_norm"][:, k] / xn),
             "psnr_change_mean": np.mean(a["psnr_change"][:, k]),
             "psnr_change_min": np.min(a["psnr_change"][:, k]),
             "diff_rel_mean": np.mean(a["diff_norm"][:, k] / xn), "diff_rel_max": np.max(a["diff_norm"][:, k] / xn),
             "gain_mean": np.mean(gain[:, k]), "gain_max": np.max(gain[:, k]),
             "worst_kernel_share_mean": np.mean(a["worst_kernel_fraction"][:, k]),
             "change_kernel_share_mean": np.mean(share(a["change_kernel_norm"][:, k], a["diff_norm"][:, k])),
             "r_kernel_share_mean": np.mean(share(a["r_kernel_norm"][:, k], a["r_norm"][:, k])),
             "diverged": int(np.sum(a["diverged"][:, k]))}
        if has_noise:
            e.update(noise_psnr_change_mean=np.mean(a["noise_psnr_change"][:, k]),
                     noise_psnr_change_min=np.min(a["noise_psnr_change"][:, k]),
                     noise_diff_rel_mean=np.mean(a["noise_diff_norm"][:, k] / xn[:, None]),
                     noise_gain_mean=np.mean(a["noise_diff_norm"][:, k] / a["noise_Ar_norm"][:, k]))
        if has_ll:
            e.update(lipschitz_gain_mean=np.mean(a["lipschitz_gain"]))
        per_radius.append(e)
    per_image = []
    for i in range(xn.size):
        e = {"index": i, "x_norm": xn[i], "psnr_clean": a["psnr_clean"][i],
             "clean_error_norm": a["clean_error_norm"][i], "clean_range_norm": a["clean_range_norm"][i],
             "clean_kernel_norm": a["clean_kernel_norm"][i], "clean_kernel_share": a["clean_kernel_fraction"][i],
             "radii": []}
        if has_ll:
            e["lipschitz_gain"] = a["lipschitz_gain"][i]
        for k, rho in enumerate(radii):
            s = {"radius": rho, "radius_abs": a["radius"][i, k], "r_norm": a["r_norm"][i, k],
                 "r_rel": a["r_norm"][i, k] / xn[i], "Ar_norm": a["Ar_norm"][i, k],
                 "diff_norm": a["diff_norm"][i, k], "gain": gain[i, k], "psnr_perturbed": a["psnr_perturbed"][i, k],
                 "psnr_change": a["psnr_change"][i, k], "worst_error_norm": a["worst_error_norm"][i, k],
                 "worst_range_norm": a["worst_range_norm"][i, k], "worst_kernel_norm": a["worst_kernel_norm"][i, k],
                 "worst_kernel_share": a["worst_kernel_fraction"][i, k],
                 "change_kernel_norm": a["change_kernel_norm"][i, k], "r_kernel_norm": a["r_kernel_norm"][i, k],
                 "stopped_at": a["stopped_at"][i, k], "diverged": a["diverged"][i, k]}
            if has_noise:
                s.update(noise_psnr_change_mean=np.mean(a["noise_psnr_change"][i, k]),
                         noise_psnr_change_min=np.min(a["noise_psnr_change"][i, k]),
                         noise_diff_norm_mean=np.mean(a["noise_diff_norm"][i, k]),
                         noise_gain_mean=np.mean(a["noise_diff_norm"][i, k] / a["noise_Ar_norm"][i, k]))
            e["radii"].append(s)
        per_image.append(e)
    overall = {"psnr_clean_mean": np.mean(a["psnr_clean"]),
               "clean_kernel_share_mean": np.mean(a["clean_kernel_fraction"]),
               "clean_range_rel_max": np.max(a["clean_range_norm"] / a["clean_error_norm"])}
    if has_ll:
        overall.update(lipschitz_gain_mean=np.mean(a["lipschitz_gain"]), lipschitz_gain_max=np.max(a["lipschitz_gain"]))
    return checkpoint.to_jsonable(per_radius), checkpoint.to_jsonable(per_image), checkpoint.to_jsonable(overall)


# ----------------------------------------------------------------------------- figures


def _summary_figure(fv, a, radii, per_radius):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    has_noise = "noise_psnr_change" in a
    ax = axes[0]
    for i in range(a["x"].shape[0]):
        ax.plot(radii, a["psnr_change"][i], color="C3", lw=0.8, alpha=0.5)
    ax.plot(radii, [e["psnr_change_mean"] for e in per_radius], "o-", color="C3", lw=2, label="worst case")
    if has_noise:
        nd = a["noise_psnr_change"]                                            # (N, R, D)
        ax.fill_between(radii, nd.min(axis=(0, 2)), nd.max(axis=(0, 2)), color="C0", alpha=0.2)
        ax.plot(radii, [e["noise_psnr_change_mean"] for e in per_radius], "s-", color="C0", lw=2,
                label="Gaussian noise (range: all draws)")
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_title("PSNR change (dB), perturbed - clean: < 0 worse", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[1]
    gain = a["diff_norm"] / a["Ar_norm"]
    for i in range(gain.shape[0]):
        ax.plot(radii, gain[i], "o-", color="C3", lw=1, ms=3, label="worst case" if i == 0 else None)
    if has_noise:
        ax.plot(radii, (a["noise_diff_norm"] / a["noise_Ar_norm"]).mean(axis=(0, 2)), "s-", color="C0",
                lw=1.5, label="noise (mean)")
    if "lipschitz_gain" in a:
        for i, g in enumerate(a["lipschitz_gain"]):
            ax.axhline(g, color="k", ls="--", lw=0.8, label="linearised" if i == 0 else None)
    ax.set_title("gain ||f(y+Ar) - f(y)|| / ||Ar||", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[2]
    ax.plot(radii, [e["worst_kernel_share_mean"] for e in per_radius], "o-", color="C3",
            label="worst-case error")
    ax.plot(radii, [e["change_kernel_share_mean"] for e in per_radius], "^-", color="C2",
            label="output change")
    ax.axhline(float(np.mean(a["clean_kernel_fraction"])), color="k", ls=":", label="clean error")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("kernel share (mean over images)", fontsize=9)
    ax.legend(fontsize=7)
    for ax in axes[:3]:
        ax.set_xscale("log")
        ax.minorticks_off()                      # the radii themselves are the ticks
        ax.set_xticks(radii, [f"{rho:g}" for rho in radii])
        ax.set_xlabel(f"radius (x {'1' if fv.radius_relative_to == 'absolute' else '||' + ('x' if fv.radius_relative_to == 'x' else 'Ax') + '||'})")
        ax.grid(alpha=0.3)

    ax = axes[3]
    hist = a["history_diff_norm"] / np.linalg.norm(a["x"], axis=(-2, -1))[:, None, None]   # (N, R, steps)
    for k, rho in enumerate(radii):
        ax.plot(np.arange(1, hist.shape[-1] + 1), np.nanmean(hist[:, k], axis=0), color=f"C{k}",
                label=f"radius {rho:g}")
    ax.set_title("||f(y+Ar) - f(y)|| / ||x|| vs iteration", fontsize=9)
    ax.set_xlabel("iteration")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    common.save_figure(os.path.join(fv.out_dir, "summary.png"), fig)
    return "summary.png"


def _image_figure(fv, a, i, radii):
    plt = common.pyplot()
    k = radii.size - 1                              # the largest radius
    x = a["x"][i]
    vmax = float(np.abs(x).max()) or 1.0
    emax = float(max(np.abs(a["clean_error"][i]).max(), np.abs(a["worst_error"][i, k]).max())) or 1.0
    r = a["r"][i, k]
    xn = np.linalg.norm(x)
    norm_t = lambda v: f"||.||/||x|| = {np.linalg.norm(v) / xn:.3f}"
    rows = [
        [(np.abs(x), "x", "gray", vmax),
         (np.abs(a["clean"][i]), f"f(y)  PSNR {a['psnr_clean'][i]:.2f} dB", "gray", vmax),
         (np.abs(a["clean_error"][i]), f"|error|  {norm_t(a['clean_error'][i])}", "magma", emax),
         (np.abs(a["clean_range"][i]), f"|range part|  {norm_t(a['clean_range'][i])}", "magma", emax),
         (np.abs(a["clean_kernel"][i]), f"|kernel part| (hallucination)\n{norm_t(a['clean_kernel'][i])}",
          "magma", emax),
         (np.abs(r), f"|r| worst case (own scale)\n||r||/||x|| = {np.linalg.norm(r) / xn:.4f}", "magma",
          float(np.abs(r).max()) or 1.0)],
        [(np.abs(a["perturbed"][i, k] - a["worst_error"][i, k]), "|x + A*A r| (what y + A r describes)",
          "gray", vmax),
         (np.abs(a["perturbed"][i, k]), f"f(y + Ar)  PSNR {a['psnr_perturbed'][i, k]:.2f} dB", "gray", vmax),
         (np.abs(a["worst_error"][i, k]), f"|error|  {norm_t(a['worst_error'][i, k])}", "magma", emax),
         (np.abs(a["worst_range"][i, k]), f"|range part|  {norm_t(a['worst_range'][i, k])}", "magma", emax),
         (np.abs(a["worst_kernel"][i, k]), f"|kernel part| (hallucination)\n{norm_t(a['worst_kernel'][i, k])}",
          "magma", emax),
         (np.abs(a["change_kernel"][i, k]), "|kernel part of f(y+Ar) - f(y)| (own scale)\n"
          + norm_t(a["change_kernel"][i, k]), "magma", float(np.abs(a["change_kernel"][i, k]).max()) or 1.0)],
    ]
    fig, axes = plt.subplots(2, 6, figsize=(16, 6.2))
    for rr, row in enumerate(rows):
        for c, (img, title, cmap, top) in enumerate(row):
            ax = axes[rr, c]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=top)
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
    axes[0, 0].text(-0.08, 0.5, "clean", transform=axes[0, 0].transAxes, rotation=90, va="center",
                    ha="right", fontsize=10)
    axes[1, 0].text(-0.08, 0.5, f"worst case, radius {radii[k]:g}", transform=axes[1, 0].transAxes,
                    rotation=90, va="center", ha="right", fontsize=10)
    fig.suptitle(f"Image {i}: error maps (columns 3-5) share one colour scale [0, {emax:.3g}]; images share "
                 f"[0, {vmax:.3g}]",
                 fontsize=10)
    name = f"hallucination_image{i}.png"
    common.save_figure(os.path.join(fv.out_dir, name), fig)
    return name


# ----------------------------------------------------------------------------- the report


def _fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if not np.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
        return f"{v:.{digits - 1}e}"
    return f"{v:.1f}" if abs(v) >= 100 else f"{v:.{digits}g}"


def _report_blocks(fv, results, figures):
    """The report as a list of blocks: ("h1"|"h2"|"p"|"code", text), ("ul", items),
    ("table", header, rows), ("img", file, caption)."""
    pr, pi, ov = results["per_radius"], results["images"], results["overall"]
    has_noise, has_ll = "noise_psnr_change_mean" in pr[0], "lipschitz_gain_mean" in ov
    model = results["model"]
    ref = {"x": "||x||", "measurements": "||A x||", "absolute": "1"}[fv.radius_relative_to]
    blocks = [("h1", "Stability report")]
    name = str(model.get("model"))
    if os.path.isabs(name) and os.path.commonpath([name, common.REPO_ROOT]) == common.REPO_ROOT:
        name = os.path.relpath(name, common.REPO_ROOT)          # the shipped checkpoints, as in the README
    desc = f"Model: `{name}`"
    if model.get("config"):
        cfg = model["config"]
        desc += f", {cfg.get('class', '')}({', '.join(f'{k}={v}' for k, v in sorted(cfg.get('kwargs', {}).items()))})"
    for key in ("weights", "flip_filters", "iters"):
        if key in model:
            desc += f", {key} = {model[key]}"
    blocks.append(("p", desc + "."))
    blocks.append(("p", f"Data: {len(pi)} image(s) `{fv.images}` at {fv.size} x {fv.size}; mask `{fv.mask}` "
                        f"(acceleration {fv.acceleration:g}, sample_n {fv.sample_n}, seed {fv.mask_seed}), "
                        f"sampling rate {results['sampling_rate']:.3f}. Worst-case search: {fv.steps} steps at "
                        f"each radius (x {ref}), all radii and images in one batched call per batch of "
                        f"{fv.batch}; {fv.noise_draws} Gaussian draws per image and radius; "
                        f"{fv.lipschitz_iters} power iterations for the linearised gain. "
                        f"Compute time {results['compute_seconds']:.0f} s (all batches, compilation "
                        f"included; {_backend()})."))

    # Plain-language findings, each number taken from the tables below.
    big = pr[-1]
    lines = [f"Clean reconstruction: mean PSNR {ov['psnr_clean_mean']:.2f} dB; "
             f"{100 * ov['clean_kernel_share_mean']:.1f}% of the squared error lies in the kernel of A."]
    if ov["clean_range_rel_max"] < 1e-3:
        lines.append("The range part of every error is zero up to rounding (largest ||range|| / ||error|| = "
                     f"{ov['clean_range_rel_max']:.1e}): the model is data-consistent, so everything it gets "
                     "wrong is in the kernel, invisible to the measurements.")
    txt = (f"At the largest radius ({big['radius']:g} x {ref}) the worst case changes the PSNR by "
           f"{big['psnr_change_mean']:+.2f} dB on average (worst image {big['psnr_change_min']:+.2f}; negative = "
           "worse)")
    if has_noise:
        txt += (f"; Gaussian noise of the same norm by {big['noise_psnr_change_mean']:+.2f} dB "
                f"(worst draw {big['noise_psnr_change_min']:+.2f})")
    lines.append(txt + ".")
    txt = f"Measured gain of the worst case: {min(e['gain_mean'] for e in pr):.2f} to {max(e['gain_max'] for e in pr):.2f}"
    if has_ll:
        txt += f"; linearised gain {ov['lipschitz_gain_mean']:.2f} (mean), {ov['lipschitz_gain_max']:.2f} (max)"
    if has_noise:
        txt += f"; noise gain {min(e['noise_gain_mean'] for e in pr):.2f} to {max(e['noise_gain_mean'] for e in pr):.2f}"
    lines.append(txt + ".")
    lines.append(f"At the largest radius {100 * big['change_kernel_share_mean']:.1f}% of the output change the "
                 "attack causes lies in the kernel (structure the measurements cannot confirm or deny).")
    blocks += [("h2", "Findings"), ("ul", lines)]

    header = ["radius", "||r||/||x||", "PSNR change worst mean", "min"]
    if has_noise:
        header += ["PSNR change noise mean", "min"]
    header += ["change/||x|| worst"] + (["change/||x|| noise"] if has_noise else [])
    header += ["gain worst mean", "max"] + (["gain noise"] if has_noise else []) + \
              (["linearised gain"] if has_ll else [])
    rows = []
    for e in pr:
        row = [e["radius"], e["r_rel_mean"], e["psnr_change_mean"], e["psnr_change_min"]]
        if has_noise:
            row += [e["noise_psnr_change_mean"], e["noise_psnr_change_min"]]
        row += [e["diff_rel_mean"]] + ([e["noise_diff_rel_mean"]] if has_noise else [])
        row += [e["gain_mean"], e["gain_max"]] + ([e["noise_gain_mean"]] if has_noise else []) + \
               ([e["lipschitz_gain_mean"]] if has_ll else [])
        rows.append([_fmt(v) for v in row])
    blocks += [("h2", "Summary per radius"), ("p", "Means, minima (PSNR change: the worst) and maxima over the "
                                                    "images (noise: also over the draws). PSNR change = "
                                                    "perturbed - clean, negative = worse. Definitions below."),
               ("table", header, rows)]
    header = ["radius", "kernel share worst-case error", "kernel share output change", "kernel share of r",
              "diverged"]
    rows = [[_fmt(e["radius"]), _fmt(e["worst_kernel_share_mean"]), _fmt(e["change_kernel_share_mean"]),
             _fmt(e["r_kernel_share_mean"]), _fmt(e["diverged"])] for e in pr]
    blocks += [("p", f"Where the errors lie (mean over images; clean error: "
                     f"{_fmt(ov['clean_kernel_share_mean'])} in the kernel):"), ("table", header, rows)]

    header = ["image", "||x||", "PSNR clean", "kernel share clean"] + (["linearised gain"] if has_ll else []) + \
             [f"PSNR change r={e['radius']:g}" for e in pr] + [f"gain r={e['radius']:g}" for e in pr]
    rows = []
    for im in pi:
        row = [im["index"], im["x_norm"], im["psnr_clean"], im["clean_kernel_share"]]
        row += [im["lipschitz_gain"]] if has_ll else []
        row += [s["psnr_change"] for s in im["radii"]] + [s["gain"] for s in im["radii"]]
        rows.append([_fmt(v) for v in row])
    blocks += [("h2", "Per image"), ("table", header, rows)]

    blocks.append(("h2", "Figures"))
    for name, caption in figures:
        blocks.append(("img", name, caption))
    blocks += [("h2", "Definitions"), ("ul", [f"**{k}**: {v}" for k, v in results["definitions"].items()])]
    blocks += [("h2", "Flags"), ("code", json.dumps(checkpoint.to_jsonable(results["flags"]), indent=1, sort_keys=True)),
               ("p", "Every number is also in `results.json`, the arrays in `arrays.npz` (image axis first; "
                     "radius axis second).")]
    return blocks


def _backend() -> str:
    return f"{jax.default_backend()}, {len(jax.devices())} device(s)"


def _inline_md_to_html(text):
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def _to_markdown(blocks):
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            out.append(f"# {b[1]}\n")
        elif kind == "h2":
            out.append(f"## {b[1]}\n")
        elif kind == "p":
            out.append(b[1] + "\n")
        elif kind == "code":
            out.append("```\n" + b[1] + "\n```\n")
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in b[1]) + "\n")
        elif kind == "table":
            header, rows = b[1], b[2]
            cell = lambda c: c.replace("|", "\\|")      # a bar inside a cell would end it
            lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
            out.append("\n".join(lines) + "\n")
        elif kind == "img":
            out.append(f"![{b[1]}]({b[1]})\n\n*{b[2]}*\n")
    return "\n".join(out)


def _to_html(blocks, folder):
    body = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{_inline_md_to_html(b[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_md_to_html(b[1])}</p>")
        elif kind == "code":
            body.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline_md_to_html(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            with open(os.path.join(folder, b[1]), "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(b[1])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_inline_md_to_html(b[2])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
             "th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}th{background:#eee}"
             "img{max-width:100%}figcaption{font-style:italic;font-size:0.9em}"
             "pre{background:#f4f4f4;padding:0.6em;font-size:0.8em;overflow-x:auto}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Stability report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ----------------------------------------------------------------------------- the job


def run(fv) -> dict:
    """The whole job for parsed flags ``fv``; returns the results dict written to results.json."""
    # Everything that can be wrong with the flags fails here, before any long computation.
    radii = _radii(fv)
    size = fv.size
    mask = common.mask_from_flags(fv)
    images = common.load_checked_images(fv.images, size, count=fv.num_images, seed=fv.seed)
    if np.iscomplexobj(images):
        raise ValueError(f"--images={fv.images!r} gave complex images; this report expects real ones")
    recon, model_info = common.load_reconstruction(fv.model, mask, weights=fv.weights,
                                                   flip_filters=fv.flip_filters, cs_iters=fv.cs_iters,
                                                   cs_options=common.cs_options(fv), mask_kind=fv.mask)

    common.prepare_out_dir(fv, _NOT_NUMERIC)

    n = images.shape[0]
    t0 = time.time()
    parts = common.run_batches(
        fv, images, lambda j, n_batches, xb, key: _batch(fv, j, n_batches, recon, xb, mask, radii, key))

    arrays = common.join_batches(parts, [p["x"].shape[0] for p in parts])     # image axis first
    per_radius, per_image, overall = _summary(arrays, radii)
    arrays.update(mask=mask, radii=radii)
    results = {"model": model_info, "flags": common.flag_dict(fv), "sampling_rate": float(mask.mean()),
               "radii": radii.tolist(), "radius_relative_to": fv.radius_relative_to,
               "per_radius": per_radius, "images": per_image, "overall": overall,
               "seconds": time.time() - t0, "compute_seconds": float(np.sum(arrays["seconds"])),
               "definitions": DEFINITIONS,
               "array_layout": "arrays.npz: image axis first, then the radius axis (order of 'radii'), then "
                               "noise draws or (H, W); history_* are (image, radius, iteration)."}
    common.save_npz(os.path.join(fv.out_dir, "arrays.npz"), **arrays)
    common.save_json(os.path.join(fv.out_dir, "results.json"), results)

    figures = [(_summary_figure(fv, arrays, radii, per_radius),
                "PSNR change (negative = worse), gain and kernel share against the radius (worst case in red, "
                "Gaussian noise of the same norm in blue; thin lines: single images; dashed: linearised gain "
                "per image), and the output change against the iteration of the search.")]
    for i in range(min(n, fv.max_figures)):
        figures.append((_image_figure(fv, arrays, i, radii),
                        f"Image {i}. Top: clean reconstruction, its error and the error's range and kernel "
                        f"parts, and the worst-case perturbation r at radius {radii[-1]:g}. Bottom: the "
                        "worst case: f(y + A r), its error against x + A*A r, the two parts, and the kernel "
                        "part of the change f(y + A r) - f(y)."))
    blocks = _report_blocks(fv, results, figures)
    md = _to_markdown(blocks)
    checkpoint.write_atomically(os.path.join(fv.out_dir, "report.md"), lambda f: f.write(md.encode()))
    page = _to_html(blocks, fv.out_dir)
    checkpoint.write_atomically(os.path.join(fv.out_dir, "report.html"), lambda f: f.write(page.encode()))

    for e in per_radius:
        print(f"radius {e['radius']:g}: PSNR change worst case {e['psnr_change_mean']:+.2f} dB (worst image "
              f"{e['psnr_change_min']:+.2f})"
              + (f", noise {e['noise_psnr_change_mean']:+.2f} dB" if "noise_psnr_change_mean" in e else "")
              + f"; gain {e['gain_mean']:.3g} (max {e['gain_max']:.3g})"
              + f"; kernel share of the worst-case error {e['worst_kernel_share_mean']:.3f}", flush=True)
    print(f"done: {n} image(s); clean PSNR {overall['psnr_clean_mean']:.2f} dB, kernel share of the clean "
          f"error {overall['clean_kernel_share_mean']:.3f}"
          + (f"; linearised gain {overall['lipschitz_gain_mean']:.3g}" if "lipschitz_gain_mean" in overall else "")
          + f".  Report: {os.path.join(fv.out_dir, 'report.html')}", flush=True)
    return results


def main(argv=None) -> int:
    return common.main(define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
