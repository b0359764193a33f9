"""Find worst-case perturbations of an MRI reconstruction map and measure them (Antun et al., PNAS 2020).

For each image ``x`` it runs the batched search of :func:`mrijax.attacks.worst_case` on
the chosen model and writes into ``--out_dir``:

* ``perturbations_image{i}.png``: Antun Fig. 1 layout.  Columns: the clean case and
  ``|x + r_j|`` for each snapshot ``r_j``; rows: the perturbed image, the network's
  reconstruction from ``A(x + r_j)`` and (``--compare_cs``) the compressed-sensing one.
* ``perturbations_rescaled_image{i}.png``: ``|r_j|`` rescaled to one range (Fig. 8 style).
* ``history.png``: output change, ``||r||`` and their ratio against the iteration, one line
  per image.
* ``results.json``: every norm, PSNR/SSIM per snapshot and its ``psnr_change`` =
  PSNR(perturbed) - PSNR(clean) (negative = worse), the Gaussian-noise baseline of the
  same norms, the linearised gain (``--lipschitz_iters``), the model and all flags.
* ``arrays.npz``: images, perturbations, snapshots, reconstructions and histories (image
  axis first, except the snapshot-major ``(S, N, ...)`` arrays; ``history_*`` are
  ``(N, steps)``).

Multi-coil data (``--coil_maps=estimate``): ``--images`` must be multi-coil k-space
(``kspace:PATH`` of shape ``(N, C, H, W)`` or ``fastmri:FOLDER`` of multi-coil volumes, read
by :func:`mrijax.data.images.load_multicoil_kspace`).  Coil maps ``S_c`` are estimated from
the block of k-space centre that the mask samples fully
(:func:`mrijax.data.sensitivity.estimate_coil_maps`), and the image the attack measures
against (the truth ``x``) is the SENSE combination ``x = sum_c conj(S_c) ifft2c(k_c)`` of the
fully sampled coil data.  The measurements are then simulated with the SENSE operator,
``A x = (P F (S_c x))_c``, so the maps are exact for the model by construction.  Every
reconstruction map uses the same maps (the cascade and CS with the SENSE operator,
``zero_filled`` as ``A* y``; AUTOMAP is refused), each image is attacked on its own (one
compiled call per image, whatever ``--batch`` says), CS runs in the penalised form
(``constrained=False``, as :mod:`mrijax.cs` recommends with coil maps; with ``--cs_delta`` in
the noise-aware constrained form instead), and only
``--domain=image`` is allowed.

Progress is printed after every ``--chunk`` iterations and the search state is saved
then (``state_batch{j}.npz``); finished batches are kept as ``batch{j}.npz``.
``--resume`` continues an interrupted run from there, redoing nothing that was finished
(Ctrl-C prints how far the saved state goes).

Example (the README's first command; the shipped checkpoint on the embedded phantom)::

    python -m experiments.worst_case --out_dir=runs/worst_case
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np
from absl import flags

from experiments import common
from mrijax import attacks, fourier, metrics
from mrijax.data import sensitivity
from mrijax.data.images import load_multicoil_kspace


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    common.define_model_flags(fv)
    common.define_image_flags(fv)
    common.define_out_flags(fv)
    common.define_mask_flags(fv)
    flags.DEFINE_integer("steps", 100, "Iterations of the search (M).", lower_bound=1, **d)
    flags.DEFINE_float("lam", None, "Penalty lam on ||r||^2 (default 1e-3; 0 with --radius).", lower_bound=0.0,
                       **d)
    flags.DEFINE_float("momentum", 0.9, "Momentum gamma.", lower_bound=0.0, **d)
    flags.DEFINE_float("lr", None, "Step eta, > 0 (default 1e-2; radius/20 with --radius).", **d)
    flags.DEFINE_float("tau", 1e-2, "Scale of the uniform random start.", lower_bound=0.0, **d)
    flags.DEFINE_float("radius", 0.02, "l2 radius of r (see --radius_relative_to); <= 0 for the "
                       "unconstrained Algorithm 1 with lam.", **d)
    flags.DEFINE_enum("radius_relative_to", "x", ["absolute", "x", "measurements"],
                      "Radius in absolute units, or times ||x|| or ||A x||.", **d)
    flags.DEFINE_enum("schedule", None, ["constant", "cosine"],
                      "Step schedule (default: cosine with --radius, constant without).", **d)
    flags.DEFINE_list("snapshots", [], "Iteration counts whose r to keep (default steps/3, 2 steps/3, steps).",
                      **d)
    flags.DEFINE_string("target", "prediction", "'prediction' (p = f(Ax)), 'truth' (p = x) or a .npy image "
                        "to pull the reconstruction towards.", **d)
    flags.DEFINE_enum("domain", "image", ["image", "measurement"], "Where r lives.", **d)
    flags.DEFINE_enum("coil_maps", "none", ["none", "estimate"],
                      "'estimate': --images is multi-coil k-space (kspace:PATH (N, C, H, W) or fastmri:FOLDER); "
                      "coil maps are estimated from the mask's fully sampled centre, x is the SENSE "
                      "combination and every model uses the SENSE operator (one image per compiled call; "
                      "CS penalised; image domain only).", **d)
    flags.DEFINE_bool("real", False, "Real-valued perturbations only (image domain).", **d)
    flags.DEFINE_list("region", [], "Zone of the output that counts: row0,col0,row1,col1 as fractions of "
                      "the image side (a box), e.g. 0.3,0.3,0.5,0.5.", **d)
    flags.DEFINE_integer("batch", 4, "Images attacked at once (one compiled call).", lower_bound=1, **d)
    flags.DEFINE_integer("starts", 1, "Random starts per image (copies with their own keys; the best is "
                         "reported).", lower_bound=1, **d)
    flags.DEFINE_integer("seed", 0, "Seed of the random starts and of the noise baseline.", lower_bound=0, **d)
    flags.DEFINE_integer("chunk", 25, "Iterations per compiled call between progress lines / saves.",
                         lower_bound=1, **d)
    flags.DEFINE_integer("noise_draws", 8, "Gaussian perturbations per norm for the baseline (0: none).",
                         lower_bound=0, **d)
    flags.DEFINE_integer("lipschitz_iters", 0, "Power iterations for the linearised gain (0: skip).",
                         lower_bound=0, **d)
    flags.DEFINE_bool("compare_cs", True, "Add the compressed-sensing reconstruction row.", **d)
    flags.DEFINE_integer("max_figures", 4, "Per-image figures for at most this many images.", lower_bound=0, **d)
    common.require_positive(fv, "lr")
    return fv


# Flags that do not change the numbers: a resumed run may differ in them.
_NOT_NUMERIC = {"resume", "max_figures", "chunk", "out_dir"}


def _region(spec, size):
    if not spec:
        return None
    try:
        r0, c0, r1, c1 = (float(v) for v in spec)
    except ValueError as e:
        raise ValueError(f"--region must be four fractions row0,col0,row1,col1, got {spec}") from e
    if not (0 <= r0 < r1 <= 1 and 0 <= c0 < c1 <= 1):
        raise ValueError(f"--region needs 0 <= row0 < row1 <= 1 and 0 <= col0 < col1 <= 1, got {spec}")
    w = np.zeros((size, size), np.float32)
    w[int(round(r0 * size)):max(int(round(r1 * size)), int(round(r0 * size)) + 1),
      int(round(c0 * size)):max(int(round(c1 * size)), int(round(c0 * size)) + 1)] = 1.0
    return w


def _target(spec, size):
    if spec in ("prediction", "truth"):
        return spec
    if not os.path.isfile(spec):
        raise ValueError(f"--target must be 'prediction', 'truth' or a .npy image file, got {spec!r}")
    t = np.load(spec, allow_pickle=False)
    if t.shape[-2:] != (size, size):
        raise ValueError(f"--target image {spec} has shape {t.shape}, expected (..., {size}, {size})")
    if t.dtype.kind not in "biufc" or not np.all(np.isfinite(t)):
        raise ValueError(f"--target image {spec} holds NaN, infinity or non-numbers: a target must be an image")
    return t


def _snapshots(fv):
    if fv.snapshots:
        try:
            snaps = sorted({int(s) for s in fv.snapshots})
        except ValueError as e:
            raise ValueError(f"--snapshots must be integers, got {fv.snapshots}") from e
        if snaps[0] < 1 or snaps[-1] > fv.steps:
            raise ValueError(f"--snapshots must lie in [1, steps={fv.steps}], got {snaps}")
        return tuple(snaps)
    s = fv.steps
    return tuple(sorted({max(1, s // 3), max(1, (2 * s) // 3), s}))


def _steps_may_not_grow(fv):
    """Why ``--steps`` may not grow on ``--resume`` for these flags (``None``: it may).

    Continuing a finished search for more iterations is the same search only when nothing
    done so far depends on ``--steps``: a constant step (the cosine decay is a function of it)
    and explicit ``--snapshots`` (the default ones are steps/3, 2 steps/3, steps)."""
    radius = fv.radius is not None and fv.radius > 0
    schedule = fv.schedule or ("cosine" if radius else "constant")
    if schedule != "constant":
        return "with --schedule=constant (the cosine step decay depends on --steps)"
    if not fv.snapshots:
        return "with explicit --snapshots (the default snapshots depend on --steps)"
    return None


def _attack_kwargs(fv, snapshots, size):
    radius = fv.radius if fv.radius is not None and fv.radius > 0 else None
    return dict(steps=fv.steps, lam=fv.lam, momentum=fv.momentum, lr=fv.lr, tau=fv.tau,
                target=_target(fv.target, size), domain=fv.domain, real=fv.real, radius=radius,
                radius_relative_to=fv.radius_relative_to, region=_region(fv.region, size),
                snapshots=snapshots, schedule=fv.schedule)


def _attack_batch(fv, j, n_batches, recon, cs_recon, xb, mask, kwargs, key, *, coil_maps=None):
    """Attack one batch of images (with its random starts); returns a dict of NumPy arrays.

    ``coil_maps`` ``(B, C, H, W)``: the images' sensitivities, the ones ``recon`` and
    ``cs_recon`` close over (so ``B`` is 1 unless all images share their maps).
    """
    starts = fv.starts
    xs = np.repeat(xb[:, None], starts, axis=1)                    # (B, starts, H, W)
    cm, cm_s = (None, None) if coil_maps is None else (coil_maps, np.asarray(coil_maps)[:, None])
    method = "algorithm1" if kwargs["radius"] is None else "projected"
    cfg, prob, state, bshape = attacks.setup(recon, xs, mask, method=method, key=key, coil_maps=cm_s, **kwargs)
    state = common.run_search(recon, cfg, prob, state, state_path=common.batch_state_path(fv, j), resume=fv.resume,
                              chunk=fv.chunk, report=common.search_progress(f"batch {j + 1}/{n_batches}", fv.steps),
                              label=f"[batch {j + 1}/{n_batches}]")
    res = attacks.result_from_state(cfg, state, prob, bshape)

    # Pick the best start per image: the largest output change at the final r.
    snaps = np.asarray(res.snapshots)                               # (S, B, starts, H, W)
    ev_all = attacks.evaluate(recon, xs, mask, res.r, domain=fv.domain, coil_maps=cm_s)
    best = np.argmax(np.asarray(ev_all["diff_norm"]), axis=1)       # (B,)
    pick = lambda a, axis: np.take_along_axis(
        a, best.reshape((1,) * axis + (-1, 1) + (1,) * (a.ndim - axis - 2)), axis=axis + 1).squeeze(axis + 1)
    r = pick(np.asarray(res.r), 0)
    snaps = pick(snaps, 1)
    # History (steps, B, starts) -> the best start's, image axis first: (B, steps).
    hist = {k: np.moveaxis(pick(np.asarray(v), 1), 0, -1) for k, v in res.history.items()}

    ev = attacks.evaluate(recon, xb, mask, snaps, domain=fv.domain, coil_maps=cm)  # (S, B, ...)
    ref = np.abs(xb + snaps) if fv.domain == "image" else np.abs(np.broadcast_to(xb, snaps.shape))
    out = dict(x=xb, r=r, snapshots=snaps, clean=np.asarray(ev["clean"][0]), perturbed=np.asarray(ev["perturbed"]),
               r_norm=np.asarray(ev["r_norm"]), Ar_norm=np.asarray(ev["Ar_norm"]),
               diff_norm=np.asarray(ev["diff_norm"]), psnr_clean=np.asarray(ev["psnr_clean"][0]),
               psnr_perturbed=np.asarray(ev["psnr_perturbed"]), psnr_change=common.psnr_change(ev),
               ssim_clean=np.asarray(metrics.ssim(np.abs(ev["clean"][0]), np.abs(xb))),
               ssim_perturbed=np.asarray(metrics.ssim(np.abs(ev["perturbed"]), ref)),
               stopped_at=pick(np.asarray(res.stopped_at), 0), diverged=pick(np.asarray(res.diverged), 0),
               radius=pick(np.asarray(res.radius), 0), best_start=best,
               start_diff_norm=np.asarray(ev_all["diff_norm"]),
               **{f"history_{k}": v for k, v in hist.items()})
    if cs_recon is not None:
        evc = attacks.evaluate(cs_recon, xb, mask, snaps, domain=fv.domain, coil_maps=cm)
        out.update(cs_clean=np.asarray(evc["clean"][0]), cs_perturbed=np.asarray(evc["perturbed"]),
                   cs_psnr_clean=np.asarray(evc["psnr_clean"][0]), cs_psnr_perturbed=np.asarray(evc["psnr_perturbed"]),
                   cs_psnr_change=common.psnr_change(evc), cs_diff_norm=np.asarray(evc["diff_norm"]))
    if fv.noise_draws > 0:
        norms = np.moveaxis(np.asarray(ev["r_norm"]), 0, -1)           # (B, S)
        nb = attacks.noise_baseline(recon, xb, mask, norms, fv.noise_draws,
                                    jax.random.fold_in(jax.random.key(fv.seed), 10_000 + j),
                                    domain=fv.domain, real=fv.real, coil_maps=cm)
        out.update(noise_diff_norm=np.asarray(nb["diff_norm"]), noise_psnr_change=common.psnr_change(nb))
    if fv.lipschitz_iters > 0:
        ll = attacks.local_lipschitz(recon, xb, mask, fv.lipschitz_iters,
                                     jax.random.fold_in(jax.random.key(fv.seed), 20_000 + j), coil_maps=cm)
        out.update(lipschitz_gain=np.asarray(ll["gain"]))
    return out


def _figures(fv, arrays, snapshots, has_cs, what=""):
    plt = common.pyplot()
    n = arrays["x"].shape[0]
    for i in range(min(n, fv.max_figures)):
        x = arrays["x"][i]
        cols = [("clean", np.zeros_like(x), arrays["clean"][i], arrays["psnr_clean"][i],
                 arrays["cs_clean"][i] if has_cs else None, arrays["cs_psnr_clean"][i] if has_cs else None)]
        for s, count in enumerate(snapshots):
            cols.append((f"r after {count} it.", arrays["snapshots"][s, i], arrays["perturbed"][s, i],
                         arrays["psnr_perturbed"][s, i], arrays["cs_perturbed"][s, i] if has_cs else None,
                         arrays["cs_psnr_perturbed"][s, i] if has_cs else None))
        rows = 3 if has_cs else 2
        fig, axes = plt.subplots(rows, len(cols), figsize=(2.6 * len(cols), 2.7 * rows), squeeze=False)
        xn = np.linalg.norm(x)
        vmax = float(np.abs(x).max())
        for c, (name, r, rec, ps, cs_rec, cs_ps) in enumerate(cols):
            rel = np.linalg.norm(r) / xn
            # PSNR change = perturbed - clean (negative = worse), beside each perturbed PSNR.
            change = lambda value, clean: "" if c == 0 else f" ({value - clean:+.2f})"
            panels = [(np.abs(x + r), f"|x + r|  {name}\n||r||/||x|| = {rel:.4f}"),
                      (np.abs(rec), f"network  PSNR {ps:.2f} dB{change(ps, cols[0][3])}")]
            if has_cs:
                panels.append((np.abs(cs_rec), f"CS  PSNR {cs_ps:.2f} dB{change(cs_ps, cols[0][5])}"))
            for rr, (img, title) in enumerate(panels):
                ax = axes[rr, c]
                ax.imshow(img, cmap="gray", vmin=0, vmax=vmax)
                ax.set_title(title, fontsize=8)
                ax.set_axis_off()
        fig.suptitle(f"Worst-case perturbations, image {i}{what} (PSNR against |x + r|; in brackets its "
                     "change from the clean case, negative = worse)", fontsize=10)
        common.save_figure(os.path.join(fv.out_dir, f"perturbations_image{i}.png"), fig)

        fig, axes = plt.subplots(1, len(snapshots), figsize=(2.6 * len(snapshots), 2.8), squeeze=False)
        mags = [np.abs(arrays["snapshots"][s, i]) for s in range(len(snapshots))]
        top = max(float(m.max()) for m in mags) or 1.0
        for s, count in enumerate(snapshots):
            ax = axes[0, s]
            ax.imshow(mags[s] / top, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"|r| after {count} it. (x{1 / top:.3g})", fontsize=8)
            ax.set_axis_off()
        common.save_figure(os.path.join(fv.out_dir, f"perturbations_rescaled_image{i}.png"), fig)

    common.save_figure(os.path.join(fv.out_dir, "history.png"), history_figure(arrays))


HISTORY_PANELS = (("history_diff_norm", "||f(y + A r) - f(y)||"), ("history_r_rel", "||r|| / ||x||"),
                  ("history_ratio", "||f(y + A r) - f(y)|| / ||A r||"))


def history_figure(arrays):
    """``history.png``: one panel per :data:`HISTORY_PANELS` entry, one line per image against
    the iteration (1 ... steps); ``arrays["history_*"]`` are ``(images, steps)``.  Returns the figure."""
    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(HISTORY_PANELS), figsize=(13, 3.4))
    for ax, (key, title) in zip(axes, HISTORY_PANELS):
        hist = np.asarray(arrays[key])                                  # (images, steps)
        it = np.arange(1, hist.shape[1] + 1)
        for i in range(hist.shape[0]):
            ax.plot(it, hist[i], lw=1, label=f"image {i}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        # Norms and gains are >= 0; from 0, a constant ||r|| (the projected search) is a flat line
        # instead of rounding noise blown up by autoscaling.
        ax.set_ylim(bottom=0)
        ax.ticklabel_format(axis="y", useOffset=False)
    if 1 < np.asarray(arrays[HISTORY_PANELS[0][0]]).shape[0] <= 8:
        axes[0].legend(fontsize=7)
    return fig


def _summary(arrays, snapshots, has_cs):
    n = arrays["x"].shape[0]
    per_image = []
    for i in range(n):
        xn = float(np.linalg.norm(arrays["x"][i]))
        snaps = []
        for s, count in enumerate(snapshots):
            e = {"iterations": count, "r_norm": arrays["r_norm"][s, i], "r_rel": arrays["r_norm"][s, i] / xn,
                 "Ar_norm": arrays["Ar_norm"][s, i], "diff_norm": arrays["diff_norm"][s, i],
                 "gain": arrays["diff_norm"][s, i] / arrays["Ar_norm"][s, i],
                 "psnr_perturbed": arrays["psnr_perturbed"][s, i], "psnr_change": arrays["psnr_change"][s, i],
                 "ssim_perturbed": arrays["ssim_perturbed"][s, i]}
            if has_cs:
                e.update(cs_psnr_perturbed=arrays["cs_psnr_perturbed"][s, i],
                         cs_psnr_change=arrays["cs_psnr_change"][s, i], cs_diff_norm=arrays["cs_diff_norm"][s, i])
            if "noise_psnr_change" in arrays:
                e.update(noise_psnr_change_mean=arrays["noise_psnr_change"][i, s].mean(),
                         noise_psnr_change_min=arrays["noise_psnr_change"][i, s].min(),
                         noise_diff_norm_mean=arrays["noise_diff_norm"][i, s].mean(),
                         noise_diff_norm_max=arrays["noise_diff_norm"][i, s].max())
            snaps.append(e)
        entry = {"index": i, "x_norm": xn, "psnr_clean": arrays["psnr_clean"][i],
                 "ssim_clean": arrays["ssim_clean"][i], "stopped_at": arrays["stopped_at"][i],
                 "diverged": arrays["diverged"][i], "radius": arrays["radius"][i],
                 "best_start": arrays["best_start"][i], "snapshots": snaps}
        if has_cs:
            entry.update(cs_psnr_clean=arrays["cs_psnr_clean"][i])
        if "lipschitz_gain" in arrays:
            entry.update(lipschitz_gain=arrays["lipschitz_gain"][i])
        per_image.append(entry)
    last = [im["snapshots"][-1] for im in per_image]
    # psnr_change: PSNR(perturbed) - PSNR(clean), negative = worse; "min" is the worst image.
    summary = {"mean_psnr_clean": float(np.mean(arrays["psnr_clean"])),
               "mean_psnr_change_final": float(np.mean([e["psnr_change"] for e in last])),
               "min_psnr_change_final": float(np.min([e["psnr_change"] for e in last]))}
    if "noise_psnr_change" in arrays:
        summary["mean_noise_psnr_change_final"] = float(np.mean([e["noise_psnr_change_mean"] for e in last]))
    if has_cs:
        summary["mean_cs_psnr_change_final"] = float(np.mean([e["cs_psnr_change"] for e in last]))
    return per_image, summary


def summary_line(n, summary, out_dir) -> str:
    """The ``done: ...`` line: PSNR changes with their sign (negative = worse)."""
    s = summary
    return (f"done: {n} image(s); clean PSNR {s['mean_psnr_clean']:.2f} dB; worst-case PSNR change "
            f"{s['mean_psnr_change_final']:+.2f} dB (worst image {s['min_psnr_change_final']:+.2f})"
            + (f"; Gaussian noise of the same norm {s['mean_noise_psnr_change_final']:+.2f} dB"
               if "mean_noise_psnr_change_final" in s else "")
            + (f"; CS {s['mean_cs_psnr_change_final']:+.2f} dB" if "mean_cs_psnr_change_final" in s else "")
            + f" (PSNR change = perturbed - clean, negative = worse).  Files in {out_dir}")


def _multicoil_images(fv, mask):
    """``--coil_maps=estimate``: (SENSE-combined images x, maps (N, C, H, W), calibration block size)."""
    k = load_multicoil_kspace(fv.images, fv.size, count=fv.num_images)
    common.check_images(k.reshape((-1,) + k.shape[-2:]), f"--images={fv.images!r} (coil k-space)",
                        need_scale=False)
    try:
        n_cal = sensitivity.calibration_size_from_mask(mask)
    except ValueError as e:
        raise ValueError(f"--coil_maps=estimate needs a mask with a fully sampled centre: {e}") from e
    calib = (n_cal, n_cal)
    maps = np.asarray(sensitivity.estimate_coil_maps(k, calib_size=calib))
    full = np.ones(mask.shape, bool)
    images = np.asarray(fourier.adjoint(k, full, maps))             # sum_c conj(S_c) ifft2c(k_c)
    common.check_images(images, f"--images={fv.images!r} (SENSE-combined)")
    print(f"coil maps: {k.shape[1]} coils, estimated from the {n_cal}x{n_cal} calibration block the mask "
          f"samples fully; x = SENSE combination of {k.shape[0]} slice(s)", flush=True)
    return images, maps, calib


def run(fv) -> dict:
    """The whole job for parsed flags ``fv``; returns the results dict written to results.json."""
    # Everything that can be wrong with the flags fails here, before any long computation.
    size = fv.size
    multicoil = fv.coil_maps == "estimate"
    if multicoil and fv.domain == "measurement":
        raise ValueError("--domain=measurement is for one coil; use --domain=image with --coil_maps=estimate")
    snapshots = _snapshots(fv)
    kwargs = _attack_kwargs(fv, snapshots, size)
    mask = common.mask_from_flags(fv)
    if not multicoil:   # the images are checked (NaN, inf, constant) before any model is loaded
        images = common.load_checked_images(fv.images, size, count=fv.num_images, seed=fv.seed)
    cs_opts = common.cs_options(fv)
    if multicoil and not cs_opts.get("delta"):
        cs_opts["constrained"] = False  # exact data consistency holds only in the limit with coil maps
    make_recon, model_info = common.reconstruction_factory(fv.model, mask, weights=fv.weights,
                                                           flip_filters=fv.flip_filters, cs_iters=fv.cs_iters,
                                                           cs_options=cs_opts, multicoil=multicoil,
                                                           mask_kind=fv.mask)
    make_cs = None
    if fv.compare_cs and fv.model != "cs":
        make_cs, _ = common.reconstruction_factory("cs", mask, cs_iters=fv.cs_iters, cs_options=cs_opts)
    if multicoil:
        images, maps, calib = _multicoil_images(fv, mask)
        recons = [make_recon(m) for m in maps]
        cs_recons = [make_cs(m) if make_cs else None for m in maps]
    else:
        recon = make_recon(None)
        cs_recon = make_cs(None) if make_cs else None

    stored = common.prepare_out_dir(fv, _NOT_NUMERIC, may_grow={"steps": _steps_may_not_grow(fv)})
    grown = stored is not None and stored.get("steps", fv.steps) < fv.steps

    n = images.shape[0]
    t0 = time.time()
    if multicoil:
        # Each reconstruction map closes over one image's coil maps: one image per compiled call.
        parts = common.run_batches(
            fv, images, lambda j, n_batches, xb, key: _attack_batch(
                fv, j, n_batches, recons[j], cs_recons[j], xb, mask, kwargs, key, coil_maps=maps[j:j + 1]),
            batch=1, redo_finished=grown, keep_state=True)
    else:
        parts = common.run_batches(
            fv, images, lambda j, n_batches, xb, key: _attack_batch(fv, j, n_batches, recon, cs_recon, xb, mask,
                                                                    kwargs, key), redo_finished=grown, keep_state=True)

    # Per-image arrays have the image axis first (history_* too: (B, steps)), except the
    # snapshot-major ones (S, B, ...).
    snap_major = {"snapshots", "perturbed", "r_norm", "Ar_norm", "diff_norm", "psnr_perturbed", "psnr_change",
                  "ssim_perturbed", "cs_perturbed", "cs_psnr_perturbed", "cs_psnr_change", "cs_diff_norm"}
    arrays = common.join_batches(parts, [p["x"].shape[0] for p in parts], {k: 1 for k in snap_major})
    arrays["mask"] = mask
    arrays["snapshot_iterations"] = np.asarray(snapshots)
    if multicoil:
        arrays["coil_maps"] = maps
    has_cs = "cs_clean" in arrays
    per_image, summary = _summary(arrays, snapshots, has_cs)
    results = {"model": model_info, "flags": common.flag_dict(fv), "sampling_rate": float(mask.mean()),
               "snapshot_iterations": list(snapshots), "images": per_image, "summary": summary,
               "seconds": time.time() - t0,
               "definitions": {"psnr": common.PSNR_DEFINITION + "; ref = x + r (image domain) or x; clean: "
                                                                "ref = x",
                               "psnr_change": common.PSNR_CHANGE_DEFINITION,
                               "gain": "||f(A x + A r) - f(A x)|| / ||A r||",
                               "history_*": "arrays.npz: (images, steps), the best start's"}}
    results["coil_maps"] = fv.coil_maps
    if multicoil:
        results.update(coils=int(maps.shape[1]), calibration_size=list(calib), cs_constrained=False)
        results["definitions"].update(
            x="SENSE combination sum_c conj(S_c) ifft2c(k_c) of the fully sampled coil k-space k with the "
              "estimated maps S (arrays.npz 'coil_maps'); the truth the attack measures against",
            A="SENSE operator: A x = (mask * fft2c(S_c x))_c",
            cs="penalised CS (constrained=False) with the same coil maps")
    common.save_npz(os.path.join(fv.out_dir, "arrays.npz"), **arrays)
    common.save_json(os.path.join(fv.out_dir, "results.json"), results)
    _figures(fv, arrays, snapshots, has_cs,
             f", SENSE-combined ({maps.shape[1]} coils)" if multicoil else "")
    print(summary_line(n, summary, fv.out_dir), flush=True)
    return results


def main(argv=None) -> int:
    return common.main(define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
