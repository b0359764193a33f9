"""experiments/accuracy_stability.py end to end: files, and its numbers equal direct library calls."""

import json

import numpy as np
import pytest
import jax

from experiments import accuracy_stability, common
from mrijax import attacks, checkpoint, hallucination, masks, metrics, train, models
from mrijax.data import pipeline, symbols
from mrijax.data.images import load_images
from mrijax.models import Cascade

TINY = ["--size=32", "--images=ellipses", "--steps=4", "--chunk=2", "--radius=0.05",
        "--curve_size=24", "--curve_num_images=2", "--curve_steps=2"]


def _tiny_checkpoint(folder, seed):
    """A random-weight Cascade(1, 2, 4) saved as a checkpoint: fast to compile, any size."""
    model = Cascade(n_cascades=1, n_convs=2, features=4)
    z = np.zeros((1, 16, 16), np.complex64)
    params = model.init(jax.random.PRNGKey(seed), z, z, np.ones((16, 16), bool))
    state = train.create_train_state(params, train.make_optimizer("adam"))
    config = {"model": models.model_config(model)}
    checkpoint.save(str(folder), state, config, include_opt_state=False)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return _tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny", 0)


def _run(out_dir, *extra):
    return accuracy_stability.main(["accuracy_stability", f"--out_dir={out_dir}", *TINY, *extra])


def test_targeted_zones_and_the_curve_of_a_given_model(tmp_path, tiny_model):
    out = tmp_path / "run"
    assert _run(out, f"--model={tiny_model}", f"--curve_models={tiny_model}") == 0
    for name in ("accuracy_stability.png", "changes.png", "curve.png", "results.json", "arrays.npz"):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    arr = common.load_npz(str(out / "arrays.npz"))

    mask = masks.for_acceleration("gaussian_lines", (32, 32), 3.0, 0, sample_n=8)
    x = np.abs(load_images("ellipses", 32, count=1, seed=0)[0])
    np.testing.assert_allclose(arr["x"], x, atol=1e-7)
    recon, _ = common.load_reconstruction(tiny_model, mask)
    rs = arr["r"]                                                 # worst case, zone 1, zone 2
    assert rs.shape == (3, 32, 32)
    ev = attacks.evaluate(recon, x, mask, rs)
    xn = np.linalg.norm(x)
    assert res["psnr_clean"] == pytest.approx(float(metrics.psnr(np.abs(ev["clean"][0]), x)), abs=1e-3)
    # The false details: --detail_values times max|x| on half the zone's radii.
    zones = [(0.36, 0.30, 0.09, 0.09), (0.68, 0.66, 0.08, 0.08)]
    for k, ((cy, cx, ry, rx), v) in enumerate(zip(zones, (0.3, -0.3))):
        want = v * x.max() * symbols.ellipse_coverage((32, 32), (cy, cx), (0.5 * ry, 0.5 * rx))
        np.testing.assert_allclose(arr["details"][k], want, atol=1e-6)
        np.testing.assert_array_equal(arr["zone_masks"][k], symbols.ellipse_region((32, 32), (cy, cx), (ry, rx)))
        # The targeted search aimed at the clean reconstruction plus the detail.
        np.testing.assert_allclose(arr["targets"][k + 1], arr["clean"] + arr["details"][k], atol=1e-5)
    for i, p in enumerate(res["perturbations"]):
        rn = np.linalg.norm(rs[i])
        assert p["r_norm"] == pytest.approx(rn, rel=1e-4)
        assert rn <= 0.05 * xn * (1 + 1e-5)                       # inside the ball
        assert p["r_rel"] == pytest.approx(rn / xn, rel=1e-4)
        assert p["gain"] == pytest.approx(float(ev["diff_norm"][i] / ev["Ar_norm"][i]), rel=1e-3)
        assert p["psnr_change"] == pytest.approx(float(ev["psnr_perturbed"][i] - ev["psnr_clean"][i]), abs=1e-3)
        change = np.asarray(ev["perturbed"][i] - ev["clean"][i])
        for k, zr in enumerate(p["zones"]):
            zone = arr["zone_masks"][k]
            assert zr["change_inside"] == pytest.approx(np.linalg.norm(change[zone]), rel=1e-3, abs=1e-6)
            assert zr["change_outside"] == pytest.approx(np.linalg.norm(change[~zone]), rel=1e-3, abs=1e-6)
            assert zr["r_inside"] == pytest.approx(np.linalg.norm(rs[i][zone]), rel=1e-4, abs=1e-7)
            d = arr["details"][k]
            assert zr["detail_in_reconstruction"] == pytest.approx(
                float(hallucination.transferred_fraction(ev["perturbed"][i], ev["clean"][i], d)), abs=1e-3)
            assert zr["detail_in_observation"] == pytest.approx(
                float(np.sum(np.real(rs[i]) * d) / np.sum(d ** 2)), abs=1e-4)

    # The curve: one point for the given model, numbers equal to attacks.evaluate on its r.
    (point,) = res["curve"]["points"]
    assert point["checkpoint"] == tiny_model
    cmask = masks.for_acceleration("gaussian_lines", (24, 24), 3.0, 0, sample_n=8)
    np.testing.assert_array_equal(arr["curve_mask"], cmask)
    xs = np.abs(load_images("ellipses", 24, count=2, seed=0))
    np.testing.assert_allclose(arr["curve_x"], xs, atol=1e-7)
    crec, _ = common.load_reconstruction(tiny_model, cmask)
    cev = attacks.evaluate(crec, xs, cmask, arr["curve_r_0"])
    np.testing.assert_allclose(point["psnr_clean"], cev["psnr_clean"], atol=1e-3)
    np.testing.assert_allclose(point["gain"], cev["diff_norm"] / cev["Ar_norm"], rtol=1e-3)
    assert point["mean_gain"] == pytest.approx(float(np.mean(point["gain"])), rel=1e-6)
    assert np.all(np.linalg.norm(arr["curve_r_0"], axis=(-2, -1))
                  <= 0.05 * np.linalg.norm(xs, axis=(-2, -1)) * (1 + 1e-5))


def test_region_zones_only(tmp_path, tiny_model):
    out = tmp_path / "run"
    assert _run(out, f"--model={tiny_model}", "--parts=grid", "--zone_attack=region",
                "--zones=0.5,0.5,0.15,0.2") == 0
    assert not (out / "curve.png").exists()
    res = json.loads((out / "results.json").read_text())
    assert res["curve"] is None
    assert [p["name"] for p in res["perturbations"]] == ["worst case", "zone 1"]
    assert "detail_in_reconstruction" not in res["perturbations"][1]["zones"][0]
    # The zone search counts the zone only: per pixel, its output changes more there than elsewhere,
    # and more than the whole-image worst case changes it there.
    wc, zr = res["perturbations"][0]["zones"][0], res["perturbations"][1]["zones"][0]
    assert zr["change_rms_inside"] > zr["change_rms_outside"]
    assert zr["change_inside"] > wc["change_inside"]


def test_curve_of_trained_models_only(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "--parts=curve", "--curve_train_steps=2,0", "--curve_cascades=1", "--curve_convs=2",
                "--curve_features=4") == 0
    assert not (out / "accuracy_stability.png").exists() and (out / "curve.png").is_file()
    res = json.loads((out / "results.json").read_text())
    arr = common.load_npz(str(out / "arrays.npz"))
    points = res["curve"]["points"]
    assert [p["train_steps"] for p in points] == [0, 2]
    for p in points:
        np.testing.assert_allclose(p["gain"], np.asarray(p["diff_norm"]) / np.asarray(p["Ar_norm"]), rtol=1e-6)
        assert np.all(np.asarray(p["r_norm"]) <= 0.05 * np.linalg.norm(arr["curve_x"], axis=(-2, -1)) * (1 + 1e-5))
    # Step 0 is the seeded initialisation: recompute its numbers from the same init.
    model = Cascade(n_cascades=1, n_convs=2, features=4)
    first = pipeline.BatchSource(images="ellipses", size=24, batch_size=8, seed=0, mask_kind="gaussian_lines",
                              mask_mode="per_image", mask_kwargs=dict(acceleration=3.0, sample_n=8))(0)
    params = model.init(jax.random.PRNGKey(0), first["target"][:1], first["target"][:1], first["mask"][:1])
    crec = accuracy_stability._recon(model, params, arr["curve_mask"])
    cev = attacks.evaluate(crec, arr["curve_x"], arr["curve_mask"], arr["curve_r_0"])
    np.testing.assert_allclose(points[0]["psnr_clean"], cev["psnr_clean"], atol=1e-3)
    np.testing.assert_allclose(points[0]["gain"], cev["diff_norm"] / cev["Ar_norm"], rtol=1e-3)


@pytest.mark.slow
def test_published_d5c5_runs(tmp_path, d5c5_path):
    out = tmp_path / "run"
    assert _run(out, "--model=deepmri_npz", f"--weights={d5c5_path}", "--parts=grid", "--zone_attack=region",
                "--steps=2") == 0
    res = json.loads((out / "results.json").read_text())
    assert res["model"]["model"] == "deepmri_npz"
    assert res["psnr_clean"] > 15 and all(np.isfinite(p["gain"]) for p in res["perturbations"])


@pytest.mark.parametrize("extra, message", [
    (["--zones=0.5,0.5,0.1"], "--zones"),
    (["--zones=1.5,0.5,0.1,0.1"], "--zones"),
    (["--detail_values=0.3,0.2,0.1"], "--detail_values"),
    (["--radius=0"], "--radius"),
    (["--curve_train_steps=a"], "--curve_train_steps"),
    (["--curve_models=/nonexistent/folder"], "--curve_models"),
    (["--zones=0.5,0.5,0.001,0.001"], "covers no pixel"),
    (["--model=deepmri_npz"], "--weights"),
    (["--curve_size=16"], "sample_n"),
])
def test_bad_flags_fail_fast_with_a_message(tmp_path, capsys, extra, message):
    assert _run(tmp_path / "bad", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
