"""The stability report end to end: files, numbers equal to library calls, the error split, resume, bad flags.

A tiny random-weight cascade saved as a checkpoint keeps compilation short; the maths of
the report does not depend on the network being trained.
"""

import contextlib
import io
import json
import os

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from experiments import common, stability_report
from mrijax import attacks, checkpoint, fourier, masks, metrics, train, models
from mrijax.models import Cascade

SIZE = 32
RADII = (0.01, 0.05)
TINY = [f"--size={SIZE}", "--images=ellipses", "--num_images=2", "--batch=1", "--steps=4", "--chunk=2",
        "--radii=" + ",".join(map(str, RADII)), "--noise_draws=3", "--lipschitz_iters=3", "--max_figures=1"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A checkpoint folder holding Cascade(1 cascade, 2 convs, 4 features) with random weights."""
    model = Cascade(n_cascades=1, n_convs=2, features=4)
    x = jnp.zeros((1, SIZE, SIZE), jnp.complex64)
    mask = jnp.ones((SIZE, SIZE), bool)
    params = model.init(jax.random.PRNGKey(3), x, x, mask)
    state = train.create_train_state(params, train.make_optimizer("adam", lr=1e-3))
    folder = tmp_path_factory.mktemp("tiny_cascade")
    checkpoint.save(folder, state, {"model": models.model_config(model)}, include_opt_state=False)
    return str(folder)


def _run(out_dir, model, *extra):
    return stability_report.main(["stability_report", f"--out_dir={out_dir}", f"--model={model}", *TINY, *extra])


@pytest.fixture(scope="module")
def whole_run(tiny_model, tmp_path_factory):
    """The run every test reads: interrupted in batch 1 after its first chunk, then resumed.

    Returns ``(out_dir, results, arrays, info)``; ``info`` records what the interruption
    left behind and which batches the resumed run computed.
    """
    out = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    real_save, real_batch = common.save_npz, stability_report._batch

    def save_then_stop(path, **arrays):
        real_save(path, **arrays)
        if os.path.basename(path) == "state_batch1.npz":   # batch 1, after its first chunk
            raise KeyboardInterrupt
    info = {}
    try:
        mp.setattr(common, "save_npz", save_then_stop)
        with contextlib.redirect_stderr(io.StringIO()) as err:
            info["code_cut"] = _run(out, tiny_model)        # Ctrl-C: exit code 130, one line
        info["err_cut"] = err.getvalue()
        mp.setattr(common, "save_npz", real_save)
        info["files_after_cut"] = sorted(os.listdir(out))
        info["t_saved"] = int(common.load_npz(str(out / "state_batch1.npz"))["t"])
        calls = info["calls"] = []
        mp.setattr(stability_report, "_batch", lambda fv, j, *a: calls.append(j) or real_batch(fv, j, *a))
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            assert _run(out, tiny_model, "--resume") == 0
        info["printed"] = printed.getvalue()
    finally:
        mp.undo()
    res = json.loads((out / "results.json").read_text())
    return out, res, common.load_npz(str(out / "arrays.npz")), info


def _recon(model):
    mask = masks.for_acceleration("gaussian_lines", (SIZE, SIZE), 3.0, 0, sample_n=8)
    recon, _ = common.load_reconstruction(model, mask)
    return recon, mask


def test_writes_a_self_contained_report(whole_run):
    out, res, arr, _ = whole_run
    for name in ("report.md", "report.html", "summary.png", "hallucination_image0.png",
                 "results.json", "arrays.npz", "run_config.json", "batch0.npz", "batch1.npz"):
        assert (out / name).is_file(), name
    assert not (out / "hallucination_image1.png").exists()            # --max_figures=1
    assert not list(out.glob("state_batch*.npz"))                      # resume states go once a batch is done
    page = (out / "report.html").read_text()
    # One file: every figure embedded, nothing fetched from elsewhere.
    assert page.count('src="data:image/png;base64,') == 2
    assert 'src="http' not in page and 'src="summary.png"' not in page
    md = (out / "report.md").read_text()
    assert "![summary.png](summary.png)" in md
    for word in ("Definitions", "Flags", "Summary per radius", "kernel", "linearised"):
        assert word in md and word in page
    # Every row of the markdown tables has the header's number of cells (no stray '|' in a cell).
    for block in md.split("\n\n"):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        if rows:
            counts = {len(r.replace("\\|", "").split("|")) for r in rows}
            assert len(counts) == 1, block
    # The per-radius PSNR drops appear in the markdown table as written in results.json.
    assert stability_report._fmt(res["per_radius"][-1]["psnr_change_mean"]) in md
    assert "PSNR change worst mean" in md and "negative = worse" in md
    assert set(res["definitions"]) >= {"psnr", "gain", "lipschitz_gain", "error_split", "kernel_share"}
    assert res["model"]["config"]["class"] == "cascade"


def test_numbers_equal_direct_library_calls(whole_run, tiny_model):
    out, res, arr, _ = whole_run
    recon, mask = _recon(tiny_model)
    np.testing.assert_array_equal(arr["mask"], mask)
    np.testing.assert_array_equal(arr["radii"], RADII)
    x, r = arr["x"], arr["r"]                                          # (N, H, W), (N, R, H, W)
    assert r.shape == (2, 2, SIZE, SIZE)
    ev = attacks.evaluate(recon, x, mask, np.swapaxes(r, 0, 1))
    t = lambda a: np.swapaxes(np.asarray(a), 0, 1)
    change = np.asarray(ev["psnr_perturbed"]) - np.asarray(ev["psnr_clean"])       # negative = worse
    np.testing.assert_allclose(arr["psnr_change"], t(change), atol=1e-3)
    np.testing.assert_allclose(arr["diff_norm"], t(ev["diff_norm"]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(arr["perturbed"], t(ev["perturbed"]), rtol=1e-4, atol=1e-5)
    xn = np.linalg.norm(x, axis=(-2, -1))
    for i, image in enumerate(res["images"]):
        assert image["x_norm"] == pytest.approx(xn[i], rel=1e-5)
        assert image["psnr_clean"] == pytest.approx(float(metrics.psnr(np.abs(arr["clean"][i]), x[i])), abs=1e-3)
        for k, s in enumerate(image["radii"]):
            rn = np.linalg.norm(r[i, k])
            assert s["radius_abs"] == pytest.approx(RADII[k] * xn[i], rel=1e-5)
            assert rn <= RADII[k] * xn[i] * (1 + 1e-5)                 # the projected search stays in the ball
            assert s["r_norm"] == pytest.approx(rn, rel=1e-4)
            ar = np.linalg.norm(np.asarray(fourier.forward(r[i, k], mask)))
            assert s["gain"] == pytest.approx(s["diff_norm"] / ar, rel=1e-4)
            assert s["psnr_change"] == pytest.approx(float(change[k, i]), abs=1e-3)
    # Per-radius means and maxima are those of the per-image numbers.
    for k, e in enumerate(res["per_radius"]):
        changes = [im["radii"][k]["psnr_change"] for im in res["images"]]
        assert e["psnr_change_mean"] == pytest.approx(np.mean(changes), abs=1e-6)
        assert e["psnr_change_min"] == pytest.approx(np.min(changes), abs=1e-6)      # the worst image
        assert e["noise_psnr_change_mean"] == pytest.approx(float(arr["noise_psnr_change"][:, k].mean()), abs=1e-6)
        assert e["lipschitz_gain_mean"] == pytest.approx(float(arr["lipschitz_gain"].mean()), rel=1e-6)

    # Noise baseline and linearised gain of the second batch (image 1), with the script's keys.
    nb = attacks.noise_baseline(recon, x[1:], mask, arr["r_norm"][1:], 3, jax.random.fold_in(jax.random.key(0), 10_001))
    np.testing.assert_allclose(arr["noise_psnr_change"][1:], np.asarray(nb["psnr_perturbed"] - nb["psnr_clean"]),
                               atol=1e-3)
    np.testing.assert_allclose(arr["noise_r_norm"], np.repeat(arr["r_norm"][:, :, None], 3, -1), rtol=1e-4)
    ll = attacks.local_lipschitz(recon, x[1:], mask, 3, jax.random.fold_in(jax.random.key(0), 20_001))
    np.testing.assert_allclose(arr["lipschitz_gain"][1:], np.asarray(ll["gain"]), rtol=1e-4)


def _assert_split(err, rng, ker, mask, rtol):
    """e = range + kernel, the parts orthogonal, range = A*A e and A kernel = 0."""
    scale = np.linalg.norm(err)
    np.testing.assert_allclose(rng + ker, err, atol=rtol * scale)
    assert abs(np.vdot(rng, ker)) <= rtol * scale ** 2
    np.testing.assert_allclose(rng, np.asarray(fourier.adjoint(fourier.forward(err, mask), mask)), atol=rtol * scale)
    assert np.linalg.norm(np.asarray(fourier.forward(ker, mask))) <= rtol * scale
    assert np.linalg.norm(rng) ** 2 + np.linalg.norm(ker) ** 2 == pytest.approx(scale ** 2, rel=10 * rtol)


def test_error_split_in_the_report_is_orthogonal_and_sums_to_the_error(whole_run):
    out, res, arr, _ = whole_run
    mask, x = arr["mask"], arr["x"]
    for i in range(x.shape[0]):
        err = arr["clean"][i] - x[i]
        np.testing.assert_allclose(arr["clean_error"][i], err, atol=1e-6)
        _assert_split(err, arr["clean_range"][i], arr["clean_kernel"][i], mask, 1e-5)
        assert res["images"][i]["clean_kernel_share"] == pytest.approx(
            np.linalg.norm(arr["clean_kernel"][i]) ** 2 / np.linalg.norm(err) ** 2, rel=1e-4)
        for k in range(len(RADII)):
            r_range = np.asarray(fourier.adjoint(fourier.forward(arr["r"][i, k], mask), mask))
            err = arr["perturbed"][i, k] - (x[i] + r_range)
            np.testing.assert_allclose(arr["worst_error"][i, k], err, atol=1e-5)
            _assert_split(err, arr["worst_range"][i, k], arr["worst_kernel"][i, k], mask, 1e-5)
            change = arr["perturbed"][i, k] - arr["clean"][i]
            ker = change - np.asarray(fourier.adjoint(fourier.forward(change, mask), mask))
            assert res["images"][i]["radii"][k]["change_kernel_norm"] == pytest.approx(np.linalg.norm(ker), rel=1e-4)
    # The cascade has exact data consistency: its errors lie in the kernel, the range part vanishes.
    assert res["overall"]["clean_range_rel_max"] < 1e-4
    assert res["overall"]["clean_kernel_share_mean"] == pytest.approx(1.0, abs=1e-6)


def test_private_split_known_answers(x64):
    rng = np.random.default_rng(0)
    mask = masks.for_acceleration("gaussian_lines", (16, 16), 3.0, 1, sample_n=4)
    cplx = lambda: rng.normal(size=(2, 16, 16)) + 1j * rng.normal(size=(2, 16, 16))
    x, z = rng.normal(size=(2, 16, 16)), cplx()
    # A general error: exact orthogonal split.
    s = stability_report._error_split(x + z, x, mask)
    for i in range(2):
        _assert_split(s["error"][i], s["range"][i], s["kernel"][i], mask, 1e-12)
    np.testing.assert_allclose(s["kernel_fraction"], s["kernel_norm"] ** 2 / s["error_norm"] ** 2)
    # An error the measurements see has no kernel part, and a kernel error no range part.
    seen = np.asarray(fourier.adjoint(fourier.forward(z, mask), mask))
    s = stability_report._error_split(x + seen, x, mask)
    assert np.max(s["kernel_norm"]) < 1e-12 * np.max(s["error_norm"])
    np.testing.assert_allclose(s["range"], seen, atol=1e-12)
    s = stability_report._error_split(x + (z - seen), x, mask)
    assert np.max(s["range_norm"]) < 1e-12 * np.max(s["error_norm"])
    np.testing.assert_allclose(s["kernel_fraction"], 1.0)
    # A full mask sees everything.
    s = stability_report._error_split(x + z, x, np.ones((16, 16), bool))
    assert np.max(s["kernel_norm"]) < 1e-12


def test_private_split_agrees_with_the_library_one_when_present(x64):
    hallucination = pytest.importorskip("mrijax.hallucination")
    if not hasattr(hallucination, "error_split"):
        pytest.skip("mrijax.hallucination.error_split not there yet")
    rng = np.random.default_rng(1)
    mask = masks.for_acceleration("gaussian_lines", (16, 16), 3.0, 2, sample_n=4)
    x = rng.normal(size=(3, 16, 16))
    recon = x + rng.normal(size=(3, 16, 16)) + 1j * rng.normal(size=(3, 16, 16))
    ours = stability_report._error_split(recon, x, mask)
    lib = hallucination.error_split(recon, x, mask)
    for key, value in ours.items():
        np.testing.assert_allclose(np.asarray(lib[key]), value, rtol=1e-10, atol=1e-12, err_msg=key)


def test_resume_redoes_nothing_that_was_finished(whole_run, tiny_model, monkeypatch):
    out, res, arr, info = whole_run
    # Ctrl-C: one line saying how far the saved state goes, exit code 130.
    assert info["code_cut"] == 130
    assert info["err_cut"] == "interrupted at iteration 2 of batch 2/2; rerun with --resume\n"
    # The interruption left batch 0 finished, batch 1's search state at iteration 2, no results.
    assert "batch0.npz" in info["files_after_cut"] and "batch1.npz" not in info["files_after_cut"]
    assert "results.json" not in info["files_after_cut"]
    assert info["t_saved"] == 2
    # The resumed run loaded batch 0 and continued batch 1 from iteration 2.
    assert info["calls"] == [1]
    assert "[batch 1/2] already finished" in info["printed"]
    assert "[batch 2/2] resuming at iteration 2" in info["printed"]
    assert "[batch 2/2] iter 2/4" not in info["printed"] and "[batch 2/2] iter 4/4" in info["printed"]

    # ... and the continued search ends where an uninterrupted one does (same key, same radii).
    recon, mask = _recon(tiny_model)
    xs = np.broadcast_to(arr["x"][1], (len(RADII), SIZE, SIZE))
    direct = attacks.worst_case(recon, xs, mask, key=jax.random.fold_in(jax.random.key(0), 1), steps=4,
                                radius=np.asarray(RADII), radius_relative_to="x", schedule="cosine")
    np.testing.assert_allclose(arr["r"][1], np.asarray(direct.r), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(arr["history_diff_norm"][1], np.asarray(direct.history["diff_norm"]).T,
                               rtol=1e-4, atol=1e-6)

    # A finished run: --resume recomputes no batch at all, only the summary and the report.
    calls = []
    real_batch = stability_report._batch
    monkeypatch.setattr(stability_report, "_batch", lambda fv, j, *a: calls.append(j) or real_batch(fv, j, *a))
    assert _run(out, tiny_model, "--resume") == 0
    assert calls == []
    again = json.loads((out / "results.json").read_text())
    assert again["per_radius"] == res["per_radius"]


@pytest.mark.parametrize("extra, message", [
    (["--radii=0.01,-0.02"], "--radii"),
    (["--radii=0.01,abc"], "--radii"),
    (["--radii=0.01,0.01"], "--radii"),
    (["--model=deepmri_npz"], "--weights"),
])
def test_bad_flags_fail_fast_with_a_message(tmp_path, capsys, tiny_model, extra, message):
    assert stability_report.main(["stability_report", f"--out_dir={tmp_path / 'bad'}", f"--model={tiny_model}",
                                  *TINY, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_an_existing_run_needs_resume_and_the_same_flags(tmp_path, capsys, tiny_model):
    out = tmp_path / "run"
    out.mkdir()
    common.save_json(str(out / "run_config.json"), {"steps": 99})
    assert _run(out, tiny_model) == 2
    assert "--resume" in capsys.readouterr().err
    assert _run(out, tiny_model, "--resume") == 2
    err = capsys.readouterr().err
    assert "differ" in err and "--steps stored 99, requested 4" in err and err.count("\n") == 1
