"""Attack a network with a worst case and zone-targeted false details; plot local gain against accuracy.

Gottschling et al., main result 2.3; DL4IA section 3.

Part 1 (the tutorial's figure).  For one image ``x`` and the network ``f`` (the shipped
cascade, or the published D5-C5 with ``--model=deepmri_npz --weights=...``):

* the clean reconstruction ``f(A x)``;
* an untargeted worst case: :func:`mrijax.attacks.worst_case` with ``||r|| <= --radius * ||x||``;
* one zone-targeted perturbation per ``--zones`` ellipse that makes a false detail appear
  there.  ``--zone_attack=targeted`` (default): the search pulls ``f(A(x + r))`` towards
  ``f(A x) + d_z``, with ``d_z`` a bright or dark ellipse (``--detail_values``) inside the
  zone, everywhere else towards the clean reconstruction (weight ``--zone_weight`` inside
  the zone, 1 outside).  ``--zone_attack=region``: the untargeted search counting only
  the zone's output (the attack's ``region`` weight).

For every perturbation: ``||r||``, ``||r|| / ||x||``, ``||A r||``, the output change and its
gain ``||f(A x + A r) - f(A x)|| / ||A r||``, PSNR against ``|x + r|``, and per zone the
norm of the output change inside vs outside the zone (also per pixel), the norm of
``r`` in the zone, and -- for the targeted rows -- how much of the detail is in the
observation (``<x + r - x, d_z> / ||d_z||^2``) and how much appeared in the reconstruction
(``<f(A(x + r)) - f(A x), d_z> / ||d_z||^2``): a network that shows more of the detail
than the data hold has made it up.

Part 2 (the curve).  For several models of different accuracy, the local gain the same
attack finds, against their clean PSNR.  ``--curve_models`` names checkpoint folders;
without them the script trains a small cascade (``--curve_size``, default 32) with
:mod:`mrijax.train` and takes its parameters after each of ``--curve_train_steps``
steps (``--curve_train_steps=''`` and no ``--curve_models``: no curve).  ``--parts=grid`` or
``--parts=curve`` runs one part only.

Writes into ``--out_dir``:

* ``accuracy_stability.png``: the tutorial's grid -- rows clean, worst case, zone 1,
  zone 2, ...; columns the observation ``|x + r|``, the reconstruction ``f(A(x + r))`` and
  the target (``x``; for a zone row the false image the attack aimed at), zones circled.
* ``changes.png``: ``|r|`` and the output change ``|f(A(x + r)) - f(A x)|`` per row.
* ``curve.png``: local gain and PSNR change (perturbed - clean, negative = worse) against
  clean PSNR, one point per model.
* ``results.json`` (rewritten after each part and each curve model) and ``arrays.npz``.

Example::

    python -m experiments.accuracy_stability --out_dir=runs/accuracy_stability
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
from mrijax import attacks, fourier, hallucination, train
from mrijax.data import pipeline, symbols
from mrijax.models import Cascade, reconstruction_map

def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    common.define_model_flags(fv, cs_iters=False)
    common.define_image_flags(fv, images="mni:axial", size=64, single=True, min_size=16)
    common.define_out_flags(fv, resume=False)
    common.define_mask_flags(fv)
    flags.DEFINE_integer("steps", 60, "Iterations of each search.", lower_bound=1, **d)
    flags.DEFINE_float("radius", 0.05, "||r|| <= radius * ||x|| for every perturbation.", **d)
    flags.DEFINE_float("lr", None, "Step of the projected search, > 0 (default radius / 20).", **d)
    flags.DEFINE_float("momentum", 0.9, "Momentum of the search.", lower_bound=0.0, **d)
    flags.DEFINE_float("tau", 1e-2, "Scale of the uniform random start.", lower_bound=0.0, **d)
    flags.DEFINE_multi_string("zones", ["0.36,0.30,0.09,0.09", "0.68,0.66,0.08,0.08"],
                              "A zone: an ellipse cy,cx,ry,rx (centre row/col and radii as fractions of the "
                              "image side); repeat the flag for more zones.", **d)
    flags.DEFINE_enum("zone_attack", "targeted", ["targeted", "region"],
                      "targeted: pull the reconstruction towards f(A x) + a detail in the zone; region: "
                      "maximise the output change inside the zone only.", **d)
    flags.DEFINE_list("detail_values", ["0.3", "-0.3"], "Intensity of the false detail per zone, times "
                      "max|x| (positive: bright, negative: dark); one value is used for every zone.", **d)
    flags.DEFINE_float("detail_scale", 0.5, "The detail is an ellipse of the zone's radii times this.", **d)
    flags.DEFINE_float("zone_weight", 1.0, "Targeted: weight of the zone in the objective (1 outside).", **d)
    flags.DEFINE_integer("seed", 0, "Seed of the random starts (and of --images=ellipses).", lower_bound=0, **d)
    flags.DEFINE_integer("chunk", 25, "Iterations between progress lines.", lower_bound=1, **d)
    flags.DEFINE_multi_enum("parts", ["grid", "curve"], ["grid", "curve"],
                            "What to run: the perturbation grid (part 1), the curve (part 2), or both.", **d)
    # The curve.
    flags.DEFINE_list("curve_models", [], "Checkpoint folders for the accuracy-vs-stability curve (any "
                      "number; replaces the trained ones).", **d)
    flags.DEFINE_list("curve_train_steps", ["20", "60", "200", "600"],
                      "Without --curve_models: train a small cascade and take it after these many steps "
                      "('' : no curve).", **d)
    flags.DEFINE_integer("curve_size", 32, "Image side for the curve (training and attacks).", lower_bound=16, **d)
    flags.DEFINE_string("curve_train_images", "ellipses", "Training images (mrijax.train spec).", **d)
    flags.DEFINE_integer("curve_cascades", 3, "Cascades of the small network.", lower_bound=1, **d)
    flags.DEFINE_integer("curve_convs", 3, "Convolutions per cascade of the small network.", lower_bound=1, **d)
    flags.DEFINE_integer("curve_features", 16, "Channels of the small network.", lower_bound=1, **d)
    flags.DEFINE_integer("curve_batch_size", 8, "Training batch size.", lower_bound=1, **d)
    flags.DEFINE_float("curve_lr", 1e-3, "Adam learning rate (cosine decay over the last step count).", **d)
    flags.DEFINE_string("curve_images", "ellipses", "Images the curve's models are attacked on (held-out "
                        "random ellipses by default, like the training images; any load_images spec).", **d)
    flags.DEFINE_integer("curve_num_images", 3, "How many of them.", lower_bound=1, **d)
    flags.DEFINE_integer("curve_steps", 40, "Iterations of each curve attack.", lower_bound=1, **d)
    flags.DEFINE_float("curve_radius", None, "Radius of the curve attacks (default --radius).", **d)
    common.require_positive(fv, "lr")
    return fv


# ----------------------------------------------------------------------------- flags


def _check_flags(fv):
    """Every flag problem, before any long computation.  Returns (zones, detail values, curve steps)."""
    if not (fv.radius > 0):
        raise ValueError(f"--radius must be > 0, got {fv.radius}")
    if fv.curve_radius is not None and not fv.curve_radius > 0:
        raise ValueError(f"--curve_radius must be > 0, got {fv.curve_radius}")
    if not fv.zones:
        raise ValueError("--zones: give at least one zone cy,cx,ry,rx")
    zones = []
    for z in fv.zones:
        cy, cx, ry, rx = common.parse_floats(z, "zones", 4)
        if not (0 < cy < 1 and 0 < cx < 1 and ry > 0 and rx > 0):
            raise ValueError(f"--zones {z!r}: the centre must lie in (0, 1) and the radii be > 0")
        zones.append((cy, cx, ry, rx))
    values = common.parse_floats(fv.detail_values, "detail_values")
    if len(values) == 1 or fv.zone_attack == "region" or (not fv["detail_values"].present and values):
        # One value for all; region attacks draw no detail; the defaults repeat over any zones.
        values = [values[k % len(values)] for k in range(len(zones))]
    if fv.zone_attack == "targeted":
        if len(values) != len(zones):
            raise ValueError(f"--detail_values needs one value or one per zone ({len(zones)}), got "
                             f"{fv.detail_values}")
        if any(v == 0 for v in values):
            raise ValueError("--detail_values must be non-zero")
    if not 0 < fv.detail_scale <= 1:
        raise ValueError(f"--detail_scale must be in (0, 1], got {fv.detail_scale}")
    if not fv.zone_weight > 0:
        raise ValueError(f"--zone_weight must be > 0, got {fv.zone_weight}")
    steps = []
    if not fv.curve_models:
        try:
            steps = sorted({int(s) for s in fv.curve_train_steps if str(s).strip()})
        except ValueError as e:
            raise ValueError(f"--curve_train_steps must be integers, got {fv.curve_train_steps}") from e
        if steps and steps[0] < 0:
            raise ValueError(f"--curve_train_steps must be >= 0, got {fv.curve_train_steps}")
        if not fv.curve_lr > 0:
            raise ValueError(f"--curve_lr must be > 0, got {fv.curve_lr}")
    for m in fv.curve_models:
        if not os.path.isdir(m):
            raise FileNotFoundError(f"--curve_models: {m!r} is not a checkpoint folder")
    return zones, values, steps


# ----------------------------------------------------------------------------- part 1


def _zones_and_details(zones, values, size, scale):
    regions = np.stack([symbols.ellipse_region((size, size), (cy, cx), (ry, rx)) for cy, cx, ry, rx in zones])
    details = np.stack([v * symbols.ellipse_coverage((size, size), (cy, cx), (scale * ry, scale * rx))
                        for (cy, cx, ry, rx), v in zip(zones, values)]).astype(np.float32)
    for k, (reg, det) in enumerate(zip(regions, details)):
        if not reg.any() or not det.any():
            raise ValueError(f"--zones entry {k} covers no pixel at --size={size} (or its detail does not): "
                             "enlarge it")
    return regions, details


def _attacks(fv, recon, x, mask, zones, values):
    """The worst case and the zone perturbations: (names, r (K, H, W), targets, regions, details)."""
    size = x.shape[-1]
    regions, details = _zones_and_details(zones, values, size, fv.detail_scale)
    details = details * float(np.abs(x).max())
    common_kw = dict(steps=fv.steps, radius=fv.radius, radius_relative_to="x", lr=fv.lr, momentum=fv.momentum,
                     tau=fv.tau, chunk=fv.chunk)
    key = jax.random.key(fv.seed)
    z = len(zones)
    names = ["worst case"] + [f"zone {k + 1}" for k in range(z)]
    if fv.zone_attack == "region":
        # All untargeted: the worst case counts the whole image, zone k only zone k (one batch).
        weights = np.concatenate([np.ones((1, size, size), np.float32), regions.astype(np.float32)])
        res = attacks.worst_case(recon, np.broadcast_to(x, (1 + z, size, size)), mask, key=key, region=weights,
                                 callback=common.search_progress("worst case + zones", fv.steps), **common_kw)
        rs = np.asarray(res.r)
        targets = np.broadcast_to(x, (1 + z, size, size)).astype(np.complex64)
    else:
        res = attacks.worst_case(recon, x, mask, key=jax.random.fold_in(key, 0),
                                 callback=common.search_progress("worst case", fv.steps), **common_kw)
        r_wc = np.asarray(res.r)
        clean = np.asarray(jax.jit(recon)(fourier.forward(x, mask)))
        p = (clean[None] + details).astype(np.complex64)      # clean reconstruction + false detail
        weight = (1.0 + (fv.zone_weight - 1.0) * regions).astype(np.float32)
        res_z = attacks.worst_case(recon, np.broadcast_to(x, (z, size, size)), mask,
                                   key=jax.random.fold_in(key, 1), target=p, region=weight,
                                   callback=common.search_progress("zones", fv.steps), **common_kw)
        rs = np.concatenate([r_wc[None], np.asarray(res_z.r)])
        targets = np.concatenate([x[None].astype(np.complex64), p])
    return names, rs, targets, regions, details


def _zone_numbers(fv, x, clean, perturbed, rs, regions, details):
    """Per perturbation and zone: where the output changed, where r is, how much detail appeared."""
    rows = []
    for i in range(rs.shape[0]):
        change = perturbed[i] - clean
        per_zone = []
        for k, reg in enumerate(regions):
            ch = symbols.region_norms(change, reg)
            rn = symbols.region_norms(rs[i], reg)
            entry = {"change_inside": ch["inside"], "change_outside": ch["outside"],
                     "change_rms_inside": ch["rms_inside"], "change_rms_outside": ch["rms_outside"],
                     "change_fraction_inside": ch["fraction_inside"], "r_inside": rn["inside"],
                     "r_fraction_inside": rn["fraction_inside"], "zone_pixels": ch["pixels_inside"]}
            if fv.zone_attack == "targeted":
                # Of the zone's detail d: how much the data hold, how much the network shows.
                entry["detail_in_observation"] = float(hallucination.transferred_fraction(x + rs[i], x, details[k]))
                entry["detail_in_reconstruction"] = float(
                    hallucination.transferred_fraction(perturbed[i], clean, details[k]))
            per_zone.append(entry)
        rows.append(per_zone)
    return rows


# ----------------------------------------------------------------------------- part 2


def _trained_models(fv, steps):
    """Train a small cascade; yield (label, recon-map factory, info) after each step count."""
    model = Cascade(n_cascades=fv.curve_cascades, n_convs=fv.curve_convs, features=fv.curve_features)
    source = pipeline.BatchSource(images=fv.curve_train_images, size=fv.curve_size, batch_size=fv.curve_batch_size,
                               seed=fv.seed, mask_kind=fv.mask, mask_mode="per_image",
                               mask_kwargs=dict(acceleration=fv.acceleration, sample_n=fv.sample_n))
    optimizer = train.make_optimizer("adam", fv.curve_lr, clip_norm=1.0, decay_steps=max(steps[-1], 1))
    first = source(0)
    params = jax.jit(model.init)(jax.random.PRNGKey(fv.seed), first["target"][:1], first["target"][:1],
                                 first["mask"][:1])
    state = train.create_train_state(params, optimizer, seed=fv.seed)
    step_fn = train.make_train_step(train.predictor(model), optimizer, "l1")
    for s in steps:
        t0 = time.time()
        result = train.fit(state, step_fn, source, s, log=None)
        state = result.state
        loss = result.history[-1]["loss"] if result.history else None
        print(f"[curve] small cascade trained to step {s} ({time.time() - t0:.1f}s"
              + (f", loss {loss:.4g})" if loss is not None else ")"), flush=True)
        info = {"label": f"{s} steps", "train_steps": s, "train_loss": loss,
                "model": {"class": "cascade", "n_cascades": fv.curve_cascades, "n_convs": fv.curve_convs,
                          "features": fv.curve_features}}
        yield info, (lambda mask, p=state.params: _recon(model, p, mask))


def _recon(model, params, mask):
    return reconstruction_map(model, params, jnp.asarray(mask))


def _given_models(fv):
    for m in fv.curve_models:
        info = {"label": os.path.basename(os.path.normpath(m)), "checkpoint": m}
        yield info, (lambda mask, m=m: common.load_reconstruction(m, mask)[0])


def _curve_inputs(fv):
    """The curve's mask and images (built before any long computation, so bad flags fail early)."""
    size = fv.curve_size
    mask = common.mask_from_flags(fv, size)
    xs = np.abs(common.load_checked_images(fv.curve_images, size, count=fv.curve_num_images, seed=fv.seed,
                                           flag="curve_images")).astype(np.float32)
    return mask, xs


def _curve(fv, steps, mask, xs, results, arrays, save):
    """The accuracy-vs-stability points; adds to ``results`` and ``arrays`` and calls ``save()``
    after each model."""
    size = fv.curve_size
    radius = fv.curve_radius if fv.curve_radius is not None else fv.radius
    models = _given_models(fv) if fv.curve_models else _trained_models(fv, steps)
    points = []
    arrays.update(curve_x=xs, curve_mask=mask)
    for j, (info, make_recon) in enumerate(models):
        recon = make_recon(mask)
        res = attacks.worst_case(recon, xs, mask, key=jax.random.fold_in(jax.random.key(fv.seed), 100 + j),
                                 steps=fv.curve_steps, radius=radius, radius_relative_to="x", lr=fv.lr,
                                 momentum=fv.momentum, tau=fv.tau, chunk=fv.chunk)
        ev = attacks.evaluate(recon, xs, mask, res.r)
        gain = np.asarray(ev["diff_norm"]) / np.asarray(ev["Ar_norm"])
        point = dict(info, psnr_clean=np.asarray(ev["psnr_clean"]), psnr_perturbed=np.asarray(ev["psnr_perturbed"]),
                     psnr_change=common.psnr_change(ev), gain=gain, r_norm=np.asarray(ev["r_norm"]),
                     Ar_norm=np.asarray(ev["Ar_norm"]), diff_norm=np.asarray(ev["diff_norm"]),
                     mean_psnr_clean=float(np.mean(ev["psnr_clean"])), mean_gain=float(np.mean(gain)),
                     mean_psnr_change=float(np.mean(common.psnr_change(ev))))
        points.append(point)
        arrays[f"curve_r_{j}"] = np.asarray(res.r)
        print(f"[curve] {info['label']}: clean PSNR {point['mean_psnr_clean']:.2f} dB, attack gain "
              f"{point['mean_gain']:.3f}, PSNR change {point['mean_psnr_change']:+.2f} dB", flush=True)
        results["curve"] = {"size": size, "radius": radius, "sampling_rate": float(mask.mean()),
                            "images": fv.curve_images, "points": points}
        save()
    return points


# ----------------------------------------------------------------------------- figures


def _grid_figure(fv, x, names, rs, perturbed, targets, clean, ev, zones, psnr_clean):
    plt = common.pyplot()
    from matplotlib.patches import Ellipse
    size = x.shape[-1]
    vmax = float(np.abs(x).max())
    rows = [("clean", np.zeros_like(x), clean, x, psnr_clean, None)]
    for i, name in enumerate(names):
        zone = None if name == "worst case" else int(name.split()[-1]) - 1
        rows.append((name, rs[i], perturbed[i], targets[i], float(ev["psnr_perturbed"][i]), zone))
    fig, axes = plt.subplots(len(rows), 3, figsize=(8.4, 2.75 * len(rows)), squeeze=False)
    xn = np.linalg.norm(x)
    for r_i, (name, r, rec, tgt, ps, zone) in enumerate(rows):
        rel = np.linalg.norm(r) / xn
        tgt_title = "target x" if zone is None or fv.zone_attack == "region" else "target: f(A x) + false detail"
        panels = [(np.abs(x + r), f"observation |x + r|\n||r|| / ||x|| = {rel:.3f}"),
                  (np.abs(rec), f"reconstruction f(A(x + r))\nPSNR {ps:.2f} dB"),
                  (np.abs(tgt), tgt_title)]
        for c, (img, title) in enumerate(panels):
            ax = axes[r_i, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=vmax)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if zone is not None:
                cy, cx, ry, rx = zones[zone]
                ax.add_patch(Ellipse((cx * size, cy * size), 2 * rx * size, 2 * ry * size, edgecolor="red",
                                     facecolor="none", lw=1))
        axes[r_i, 0].set_ylabel(name if name == "clean" else f"w/ perturbation: {name}", fontsize=9)
    fig.suptitle("Accuracy vs stability: worst-case and zone-targeted perturbations", fontsize=10)
    common.save_figure(os.path.join(fv.out_dir, "accuracy_stability.png"), fig)

    fig, axes = plt.subplots(2, len(names), figsize=(2.8 * len(names), 5.6), squeeze=False)
    for i, name in enumerate(names):
        change = np.abs(perturbed[i] - clean)
        axes[0, i].imshow(np.abs(rs[i]), cmap="gray")
        axes[0, i].set_title(f"{name}: |r| (max {np.abs(rs[i]).max():.3g})", fontsize=8)
        axes[1, i].imshow(change, cmap="gray")
        axes[1, i].set_title(f"|f(A(x + r)) - f(A x)| (max {change.max():.3g})", fontsize=8)
        for a in axes[:, i]:
            a.set_axis_off()
            for cy, cx, ry, rx in zones:
                a.add_patch(Ellipse((cx * size, cy * size), 2 * rx * size, 2 * ry * size, edgecolor="red",
                                    facecolor="none", lw=0.7, ls="--"))
    common.save_figure(os.path.join(fv.out_dir, "changes.png"), fig)


def _curve_figure(fv, points, radius):
    plt = common.pyplot()
    psnr = [p["mean_psnr_clean"] for p in points]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "mean_gain", "local gain ||f(y + A r) - f(y)|| / ||A r||"),
                           (axes[1], "mean_psnr_change", "PSNR change under the attack (dB), < 0 worse")):
        vals = [p[key] for p in points]
        ax.plot(psnr, vals, "o-")
        for p, v in zip(points, vals):
            ax.annotate(p["label"], (p["mean_psnr_clean"], v), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("clean PSNR (dB): accuracy")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Accuracy vs stability: the attack (||r|| <= {radius:g} ||x||) against each model's accuracy",
                 fontsize=10)
    common.save_figure(os.path.join(fv.out_dir, "curve.png"), fig)


# ----------------------------------------------------------------------------- run


def _grid_part(fv, recon, x, mask, zones, values, results, arrays, save):
    """Part 1: clean, worst case and zone perturbations; fills ``results`` / ``arrays``, saves, draws."""
    names, rs, targets, regions, details = _attacks(fv, recon, x, mask, zones, values)
    ev = {k: np.asarray(v) for k, v in attacks.evaluate(recon, x, mask, rs).items()}
    perturbed = ev["perturbed"]
    clean = ev["clean"][0]
    psnr_clean = float(ev["psnr_clean"][0])
    zone_rows = _zone_numbers(fv, x, clean, perturbed, rs, regions, details)
    xn = float(np.linalg.norm(x))
    perturbations = []
    for i, name in enumerate(names):
        perturbations.append({
            "name": name, "r_norm": ev["r_norm"][i], "r_rel": ev["r_norm"][i] / xn, "Ar_norm": ev["Ar_norm"][i],
            "diff_norm": ev["diff_norm"][i], "gain": ev["diff_norm"][i] / ev["Ar_norm"][i],
            "psnr_perturbed": ev["psnr_perturbed"][i], "psnr_change": ev["psnr_perturbed"][i] - ev["psnr_clean"][i],
            "zones": zone_rows[i]})
    arrays.update(x=x, mask=mask, clean=clean, r=rs, perturbed=perturbed, targets=targets, zone_masks=regions,
                  details=details)
    results.update(x_norm=xn, psnr_clean=psnr_clean, zones=[list(z) for z in zones],
                   detail_values=values if fv.zone_attack == "targeted" else None, perturbations=perturbations)
    save()
    _grid_figure(fv, x, names, rs, perturbed, targets, clean, ev, zones, psnr_clean)
    print(f"clean PSNR {psnr_clean:.2f} dB", flush=True)
    for p in perturbations:
        line = (f"  {p['name']:<10s} ||r||/||x|| {p['r_rel']:.4f}  ||A r|| {p['Ar_norm']:.4g}  gain {p['gain']:.3f}"
                f"  PSNR change {p['psnr_change']:+.2f} dB")
        for k, zr in enumerate(p["zones"]):
            line += f" | zone {k + 1}: change in/out {zr['change_inside']:.3g}/{zr['change_outside']:.3g}"
            if "detail_in_reconstruction" in zr and p["name"] == f"zone {k + 1}":
                line += (f", detail in data {zr['detail_in_observation']:.2f} -> in reconstruction "
                         f"{zr['detail_in_reconstruction']:.2f}")
        print(line, flush=True)


def run(fv) -> dict:
    """The whole job for parsed flags ``fv``; returns the results dict written to results.json."""
    # Everything that can be wrong with the flags fails here, before any long computation.
    zones, values, curve_steps = _check_flags(fv)
    parts = set(fv.parts)
    with_grid = "grid" in parts
    with_curve = "curve" in parts and bool(fv.curve_models or curve_steps)
    results = {"flags": common.flag_dict(fv), "curve": None,
               "definitions": {
                   "gain": "||f(A x + A r) - f(A x)|| / ||A r||",
                   "psnr": common.PSNR_DEFINITION,
                   "psnr_perturbed": "against |x + r|; psnr_clean against |x|",
                   "psnr_change": common.PSNR_CHANGE_DEFINITION,
                   "change_inside / change_outside": "l2 norm of f(A(x + r)) - f(A x) on / off the zone; "
                                                     "rms_*: per pixel",
                   "detail_in_observation": "<x + r - x, d> / ||d||^2 for the zone's false detail d",
                   "detail_in_reconstruction": "<f(A(x + r)) - f(A x), d> / ||d||^2"}}
    if with_grid:
        size = fv.size
        _zones_and_details(zones, values, size, fv.detail_scale)
        mask = common.mask_from_flags(fv)
        x = np.abs(common.load_checked_images(fv.images, size, count=1, seed=fv.seed)[0]).astype(np.float32)
        recon, model_info = common.load_reconstruction(fv.model, mask, weights=fv.weights,
                                                       flip_filters=fv.flip_filters, mask_kind=fv.mask)
        results.update(model=model_info, sampling_rate=float(mask.mean()))
    if with_curve:
        curve_mask, curve_x = _curve_inputs(fv)
    os.makedirs(fv.out_dir, exist_ok=True)
    t0 = time.time()
    arrays = {}

    def save():
        results["seconds"] = time.time() - t0
        common.save_npz(os.path.join(fv.out_dir, "arrays.npz"), **arrays)
        common.save_json(os.path.join(fv.out_dir, "results.json"), results)

    if with_grid:
        _grid_part(fv, recon, x, mask, zones, values, results, arrays, save)
    if with_curve:
        points = _curve(fv, curve_steps, curve_mask, curve_x, results, arrays, save)
        _curve_figure(fv, points, results["curve"]["radius"])
    elif "curve" in parts:
        print("no curve: --curve_models is empty and --curve_train_steps is ''", flush=True)
    save()
    print(f"done in {time.time() - t0:.0f}s.  Files in {fv.out_dir}", flush=True)
    return results


def main(argv=None) -> int:
    return common.main(define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
