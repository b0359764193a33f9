"""What every experiment script shares (experiments/common.py): --help, one flag name per concept,
one-line refusals, Ctrl-C, image checks, joining batches.  Nothing here compiles a model."""

import importlib
import json
import os

import numpy as np
import pytest

from experiments import common
from mrijax.data.images import SPEC_OPTIONS

# The scripts whose flags and messages experiments/common.py shapes (the training scripts have their own).
SCRIPTS = ("accuracy_stability", "cs_stability", "detail_transfer", "more_samples", "noise_vs_worst_case",
           "sampling_demo", "stability_report", "structural_change", "worst_case")


def _module(name):
    return importlib.import_module(f"experiments.{name}")


def _flag_names(name):
    fv = _module(name).define_flags()
    return [key for key, flag in fv._flags().items() if key == flag.name]   # definition order


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_says_what_the_script_does_then_lists_the_key_flags_first(name, capsys):
    module = _module(name)
    assert module.main([name, "--help"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    summary = module.__doc__.strip().splitlines()[0]
    assert lines[0] == summary and len(summary) <= 120                  # one line saying what it does
    assert summary.endswith((".", ")"))
    assert lines[2].startswith(f"usage: python -m experiments.{name} --out_dir=DIR")
    listed = [line.split(":")[0].strip().replace("--[no]", "--") for line in lines if line.startswith("  --")]
    names = _flag_names(name)
    assert sorted(listed) == sorted(f"--{n}" for n in names)             # every flag, once
    key = [f"--{k}" for k in common.KEY_FLAGS if k in names]
    assert listed[:len(key)] == key                                     # --model, --images, --out_dir first
    assert names[0] in common.KEY_FLAGS                                # and the script defines one first
    assert listed[len(key):] == [f"--{n}" for n in names if n not in common.KEY_FLAGS]   # the rest as defined


@pytest.mark.parametrize("name", [s for s in SCRIPTS if s != "sampling_demo"])
def test_images_help_lists_every_spec_the_loader_accepts(name):
    fv = _module(name).define_flags()
    assert "images" in fv
    text = " ".join(fv["images"].help.split())
    for spec in SPEC_OPTIONS:
        assert spec in text, (name, spec)


def test_one_name_per_concept_across_the_scripts():
    # The names a user learns once: --images, --out_dir, --steps, --resume, --noise_draws, --batch.
    retired = {"image", "ckpt_dir", "max_steps", "iters", "draws", "image_batch", "num_steps"}
    for name in SCRIPTS:
        names = set(_flag_names(name))
        assert not names & retired, (name, names & retired)
        assert "out_dir" in names, name
        assert any(n == "images" for n in names) or name == "sampling_demo", name
    for name in ("cs_stability", "detail_transfer", "more_samples", "noise_vs_worst_case", "stability_report",
                 "worst_case"):
        assert "resume" in _flag_names(name), name


@pytest.mark.parametrize("argv, message", [
    (["--radius=nan"], "--radius=nan: must be a finite number"),
    (["--momentum=inf"], "--momentum=inf: must be a finite number"),
    (["--lr=-1"], "--lr must be > 0"),
    (["--steps=0"], "--steps"),
])
def test_a_bad_flag_is_one_error_line_and_exit_code_2(argv, message, capsys, tmp_path):
    from experiments import worst_case
    assert worst_case.main(["worst_case", f"--out_dir={tmp_path / 'o'}", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "o").exists()


def test_main_turns_refusals_into_one_line_and_exit_code_2(capsys, tmp_path):
    from experiments import worst_case

    def refuse(error):
        def run(fv):
            raise error
        return run
    for error in (ValueError("bad\nvalue"), FileNotFoundError("no such file"), FileExistsError("a run is there"),
                  ImportError("h5py is needed: pip install -e '.[data]'"), PermissionError("read-only")):
        assert common.main(worst_case.define_flags, refuse(error), ["w", f"--out_dir={tmp_path}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_ctrl_c_is_one_line_naming_what_was_saved(tmp_path, capsys):
    from experiments import worst_case
    out = tmp_path / "run"
    argv = ["worst_case", f"--out_dir={out}", "--model=zero_filled"]

    def interrupted(after):
        def run(fv):
            after(fv)
            raise KeyboardInterrupt
        return run

    # Before the run started (no run_config.json): nothing to resume.
    assert common.main(worst_case.define_flags, interrupted(lambda fv: None), argv) == 130
    assert capsys.readouterr().err == "interrupted before the run started; nothing was saved\n"

    # The folder holds a run but no result yet.
    def started(fv):
        common.prepare_out_dir(fv, worst_case._NOT_NUMERIC)
    assert common.main(worst_case.define_flags, interrupted(started), argv) == 130
    assert capsys.readouterr().err == "interrupted before any result was saved; rerun with --resume\n"

    # A finished batch, then a search state at iteration 7 of the next: the state is named, read from disk.
    def searching(fv):
        common.note_progress(str(out / "batch0.npz"), "after batch 1/2 (saved)")
        common.save_npz(str(out / "batch0.npz"), x=np.zeros(1))
        common.note_progress(str(out / "state_batch1.npz"), common._saved_iteration("batch 2/2"))
        common.save_npz(str(out / "state_batch1.npz"), t=np.asarray(7))
    assert common.main(worst_case.define_flags, interrupted(searching), argv + ["--resume"]) == 130
    assert capsys.readouterr().err == "interrupted at iteration 7 of batch 2/2; rerun with --resume\n"

    # A state noted but never written (Ctrl-C during its first save): the finished batch is named.
    def first_save_cut(fv):
        common.note_progress(str(out / "batch0.npz"), "after batch 1/2 (saved)")
        common.note_progress(str(out / "state_batch9.npz"), common._saved_iteration("batch 10/10"))
    assert common.main(worst_case.define_flags, interrupted(first_save_cut), argv + ["--resume"]) == 130
    assert capsys.readouterr().err == "interrupted after batch 1/2 (saved); rerun with --resume\n"

    # A script without --resume says so.
    from experiments import structural_change
    assert common.main(structural_change.define_flags, interrupted(lambda fv: None),
                       ["s", f"--out_dir={tmp_path / 's'}"]) == 130
    assert capsys.readouterr().err == "interrupted; this script does not resume: rerun it\n"


def test_a_resume_with_other_flags_shows_both_values_in_one_line(tmp_path):
    from experiments import worst_case
    argv = ["worst_case", f"--out_dir={tmp_path}", "--steps=7", "--snapshots=2,7", "--model=zero_filled"]
    fv = common.parse(worst_case.define_flags, argv)
    common.prepare_out_dir(fv, worst_case._NOT_NUMERIC)
    stored = json.loads((tmp_path / "run_config.json").read_text())
    assert stored["steps"] == 7 and stored["snapshots"] == ["2", "7"]
    fv = common.parse(worst_case.define_flags, ["worst_case", f"--out_dir={tmp_path}", "--steps=9",
                                                "--snapshots=3", "--model=zero_filled", "--resume", "--chunk=5"])
    with pytest.raises(ValueError) as e:
        common.prepare_out_dir(fv, worst_case._NOT_NUMERIC)
    message = str(e.value)
    assert "\n" not in message
    assert ('--snapshots stored ["2", "7"], requested ["3"]; --steps stored 7, requested 9 ' in message)
    assert "--chunk" not in message                                    # a progress flag may change


def test_check_images_names_the_image_and_the_spec():
    x = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    common.check_images(x, "--images='a.npy'")
    bad = x.copy()
    bad[2, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"^--images='a.npy': image 2 holds 1 non-finite value"):
        common.check_images(bad, "--images='a.npy'")
    flat = x.copy()
    flat[1] = 0                                  # what a constant image becomes after scaling to [0, 1]
    with pytest.raises(ValueError, match=r"^--images='a.npy': image 1 of the 3 loaded is constant"):
        common.check_images(flat, "--images='a.npy'")
    common.check_images(flat, "--images='a.npy'", need_scale=False)   # no radius or PSNR: allowed
    z = np.zeros((8, 8), np.complex64)
    with pytest.raises(ValueError, match="image 0 of the 1 loaded is constant"):
        common.check_images(z, "x")


def test_join_batches_stacks_along_the_image_axis():
    parts = [{"x": np.zeros((2, 4, 4)), "snaps": np.zeros((3, 2)), "history": np.zeros((2, 6))},
             {"x": np.ones((1, 4, 4)), "snaps": np.ones((3, 1)), "history": np.ones((1, 6))}]
    out = common.join_batches(parts, [2, 1], {"snaps": 1})
    assert out["x"].shape == (3, 4, 4) and out["snaps"].shape == (3, 3) and out["history"].shape == (3, 6)
    np.testing.assert_array_equal(out["history"][:, 0], [0, 0, 1])
    # A (steps, B) history would be joined along the iterations: refused, naming the array.
    parts[1]["history"] = np.ones((6, 1))
    with pytest.raises(ValueError, match="'history' of shape \\(6, 1\\) has no image axis 0 of length 1"):
        common.join_batches(parts, [2, 1], {"snaps": 1})


def test_psnr_change_is_perturbed_minus_clean():
    numbers = {"psnr_clean": np.array([30.0, 20.0]), "psnr_perturbed": np.array([28.0, 21.0])}
    np.testing.assert_array_equal(common.psnr_change(numbers), [-2.0, 1.0])   # negative = worse
    assert "mean((|rec| - |ref|)^2)" in common.PSNR_DEFINITION
    assert "negative = worse" in common.PSNR_CHANGE_DEFINITION


def test_no_script_reports_a_psnr_drop():
    root = os.path.dirname(common.__file__)
    for name in SCRIPTS:
        with open(os.path.join(root, f"{name}.py")) as f:
            text = f.read()
        assert "psnr_drop" not in text and "PSNR drop" not in text, name
        assert "mean(|rec| - |ref|)^2" not in text and "mean (|rec| - |ref|)^2" not in text, name
