"""The more-samples experiment: files, numbers equal to direct library calls, resume, bad flags,
and (slow) the paper's finding that the published D5-C5 improves with more samples.

A tiny random-weight cascade saved as a checkpoint keeps compilation short; what the script
computes (nested masks, PSNR per rate, the summaries) does not depend on training.
"""

import json

import numpy as np
import pytest
import jax.numpy as jnp

from experiments import common, more_samples
from mrijax import checkpoint, cs, fourier, masks, metrics, models
from mrijax.models import reconstruction_map

SIZE = 32
RATES = (0.2, 0.35, 0.5)
TINY = [f"--size={SIZE}", "--images=ellipses", "--num_images=3", "--batch=2",
        "--rates=" + ",".join(map(str, RATES)), "--sample_n=2", "--cs_iters=5"]


@pytest.fixture(scope="module")
def tiny_model(make_tiny_cascade):
    return make_tiny_cascade(SIZE)


def _run(out_dir, model, *extra):
    return more_samples.main(["more_samples", f"--out_dir={out_dir}", f"--model={model}", *TINY, *extra])


@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert _run(out, tiny_model) == 0
    res = json.loads((out / "results.json").read_text())
    return out, res, common.load_npz(str(out / "arrays.npz"))


def test_writes_every_file(tiny_run):
    out, _, _ = tiny_run
    for name in ("more_samples.png", "results.json", "arrays.npz", "run_config.json", "net_batch0.npz",
                 "net_batch1.npz", "cs_batch0.npz", "cs_batch1.npz"):
        assert (out / name).is_file(), name


def test_masks_and_rates_are_the_nested_library_masks(tiny_run):
    _, res, arr = tiny_run
    expected = masks.nested("gaussian_lines", (SIZE, SIZE), RATES, seed=0, sample_n=2)
    np.testing.assert_array_equal(arr["masks"], expected)
    # Nested: each mask holds every line of the lower rates.
    assert np.all(arr["masks"][:-1] <= arr["masks"][1:])
    np.testing.assert_allclose(res["realised_rates"], masks.sampling_rate(expected))
    # The training rate 0.33 is marked at the nearest realised rate (11/32 = 0.34375).
    assert res["train_rate_index"] == 1
    assert res["nearest_realised_train_rate"] == pytest.approx(11 / 32)


def test_network_numbers_equal_one_rate_one_image_at_a_time(tiny_run, tiny_model):
    _, res, arr = tiny_run
    model, params, _ = models.load(tiny_model)
    x = arr["x"]
    assert arr["net_psnr"].shape == (3, 3)                      # (rates, images), the padded batch dropped
    for r, mask in enumerate(arr["masks"]):
        f = reconstruction_map(model, params, mask)
        for i in range(x.shape[0]):
            rec = jnp.abs(f(fourier.forward(x[i], mask)))
            assert arr["net_psnr"][r, i] == pytest.approx(float(metrics.psnr(rec, x[i])), abs=2e-3)
            assert arr["net_ssim"][r, i] == pytest.approx(float(metrics.ssim(rec, x[i])), abs=1e-4)
            np.testing.assert_allclose(arr["net_abs"][r, i], rec, atol=1e-4)
    np.testing.assert_allclose(res["methods"]["network"]["psnr"], arr["net_psnr"], rtol=1e-6)


def test_cs_and_zero_filled_numbers_equal_direct_calls(tiny_run):
    _, res, arr = tiny_run
    x = arr["x"]
    for r in (0, 2):
        mask = arr["masks"][r]
        y = fourier.forward(jnp.asarray(x), mask)                 # one 2-D mask for all images
        rec = jnp.abs(cs.reconstruct(y, mask, iters=5))
        np.testing.assert_allclose(arr["cs_psnr"][r], metrics.psnr(rec, x), atol=2e-3)
        zf = jnp.abs(fourier.zero_filled(y, mask))
        np.testing.assert_allclose(arr["zf_psnr"][r], metrics.psnr(zf, x), atol=1e-3)
    assert set(res["methods"]) == {"network", "cs", "zero_filled"}


def test_summary_is_computed_from_the_tables(tiny_run):
    _, res, arr = tiny_run
    for name, key in (("network", "net"), ("cs", "cs"), ("zero_filled", "zf")):
        s = res["methods"][name]["summary"]
        mean = arr[f"{key}_psnr"].mean(axis=1)
        np.testing.assert_allclose(s["mean_psnr"], mean, rtol=1e-6)
        assert s["psnr_gain_lowest_to_highest"] == pytest.approx(mean[-1] - mean[0], abs=1e-4)
        assert s["psnr_gain_train_to_highest"] == pytest.approx(mean[-1] - mean[1], abs=1e-4)
        assert s["mean_rises_at_every_step"] == bool(np.all(np.diff(mean) > 0))


def test_curve_summary_known_answers():
    psnr = np.array([[20.0, 22.0], [25.0, 21.0], [24.0, 26.0]])   # rates x images
    s = more_samples.curve_summary(psnr, psnr / 100, np.array([0.1, 0.3, 0.5]), train_index=1)
    np.testing.assert_allclose(s["mean_psnr"], [21.0, 23.0, 25.0])
    np.testing.assert_allclose(s["mean_psnr_steps"], [2.0, 2.0])
    assert s["mean_rises_at_every_step"] is True
    assert s["largest_mean_decrease"] == 0.0
    assert s["psnr_gain_lowest_to_highest"] == 4.0
    assert s["psnr_gain_train_to_highest"] == 2.0
    assert s["images_higher_at_highest_than_at_train"] == 1      # image 0 went 25 -> 24
    falling = more_samples.curve_summary(psnr[::-1], psnr, np.array([0.1, 0.3, 0.5]), train_index=0)
    assert falling["mean_rises_at_every_step"] is False
    assert falling["largest_mean_decrease"] == 2.0


def test_resume_loads_finished_batches_and_an_existing_run_needs_resume(tiny_run, tiny_model, tmp_path, capsys):
    out, _, arr = tiny_run
    assert _run(out, tiny_model) == 2
    assert "--resume" in capsys.readouterr().err
    assert _run(out, tiny_model, "--resume", "--cs_iters=6") == 2
    assert "differ" in capsys.readouterr().err
    assert _run(out, tiny_model, "--resume", "--example_image=2") == 0  # a figure flag may change
    assert capsys.readouterr().out.count("already finished") == 4
    again = common.load_npz(str(out / "arrays.npz"))
    for k in ("net_psnr", "cs_psnr", "zf_psnr", "net_abs"):
        np.testing.assert_array_equal(again[k], arr[k])


@pytest.mark.parametrize("extra, message", [
    (["--rates=0.5"], "at least two"),
    (["--rates=0,0.5"], "(0, 1]"),
    (["--rates=0.2,0.2"], "distinct"),
    (["--rates=0.2,x"], "numbers"),
    (["--train_rate=1.5"], "--train_rate"),
    (["--example_image=3"], "--example_image"),
    (["--sample_n=9"], "sample_n"),
    (["--model=deepmri_npz"], "--weights"),
])
def test_bad_flags_fail_fast_with_a_message(tmp_path, capsys, tiny_model, extra, message):
    assert _run(tmp_path / "bad", tiny_model, *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "run_config.json").exists()


@pytest.mark.slow
def test_published_d5c5_improves_with_more_samples(tmp_path, d5c5_path):
    """Antun et al. (Fig. 4, last row): Deep MRI is the network whose PSNR rises with the rate."""
    out = tmp_path / "d5c5"
    assert more_samples.main(["more_samples", f"--out_dir={out}", "--model=deepmri_npz", f"--weights={d5c5_path}",
                              "--images=mni:axial", "--num_images=4", "--size=128", "--nocompare_cs"]) == 0
    res = json.loads((out / "results.json").read_text())
    s = res["methods"]["network"]["summary"]
    # Reference run: 22.50 25.21 26.80 28.25 30.19 30.75 31.88 32.34 33.01 dB at 9.4% ... 50%.
    assert s["mean_rises_at_every_step"], s["mean_psnr"]
    assert s["psnr_gain_lowest_to_highest"] > 5.0
    assert s["psnr_gain_train_to_highest"] > 1.0
    assert s["images_higher_at_highest_than_at_train"] == 4
