"""Tests for mrijax.models.unet: fastMRI's U-Net, NormUnet and the registered "unet" reconstruction model."""

import json

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from experiments import train as train_script
from experiments import worst_case
from mrijax import checkpoint, dc, models, operators, train
from mrijax.models import NormUnet, Unet, UnetRecon, count_params, reconstruction_map

H = W = 16
SMALL = dict(chans=4, num_pool_layers=2)


def _complex(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def _line_mask(h=H, w=W, every=3, offset=0):
    mask = np.zeros((h, w), bool)
    mask[:, offset::every] = True
    mask[:, w // 2 - 1:w // 2 + 2] = True
    return mask


def _random_params(init, *args, seed=0, dtype=None):
    """Random parameters of ``init(key, *args)``'s structure, drawn with NumPy (JAX's samplers compile
    slowly on CPU, once per shape); the final bias is non-zero so that a bias bug would show."""
    shapes = jax.eval_shape(init, jax.random.PRNGKey(seed), *args)
    rng = np.random.default_rng(seed)

    def draw(s):
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
        return jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(fan_in), dtype or s.dtype)

    return jax.tree_util.tree_map(draw, shapes)


def _recon_params(model, op, y, seed=0, dtype=None):
    return _random_params(lambda key, yy: models.get("unet").init(model, key, op, yy), y, seed=seed, dtype=dtype)


def _problem(rng, lead=(), h=H, w=W):
    mask = _line_mask(h, w)
    op = operators.cartesian(mask)
    x = _complex(rng, lead + (h, w))
    return op, op.forward(jnp.asarray(x, jnp.complex64))


# ----------------------------------------------------------------------------- architecture


def _fastmri_unet_count(chans, pools, in_chans, out_chans):
    """Parameters of fastmri.models.Unet, counted from its definition: bias-free 3x3 convolutions
    (two per ConvBlock), bias-free 2x2 transposed convolutions, a 1x1 output convolution with bias."""
    block = lambda i, o: 9 * i * o + 9 * o * o
    n, ch = block(in_chans, chans), chans
    for _ in range(pools - 1):
        n, ch = n + block(ch, 2 * ch), 2 * ch
    n += block(ch, 2 * ch)                          # bottleneck
    for _ in range(pools):
        n += 4 * (2 * ch) * ch + block(2 * ch, ch)  # transposed conv 2ch -> ch, ConvBlock on the concatenation
        ch //= 2
    return n + chans * out_chans + out_chans


def test_parameter_count_and_names_match_fastmri():
    assert _fastmri_unet_count(32, 4, 1, 1) == 7_756_097      # fastMRI's single-coil baseline
    shapes = jax.eval_shape(Unet(in_chans=1, out_chans=1).init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
    assert count_params(shapes) == 7_756_097
    x = jnp.zeros((1, 32, 32), jnp.complex64)
    shapes = jax.eval_shape(UnetRecon().init, jax.random.PRNGKey(0), x, x, jnp.ones((32, 32), bool))
    assert count_params(shapes) == _fastmri_unet_count(32, 4, 2, 2) == 7_756_418
    p = shapes["params"]["norm_unet"]["unet"]
    assert sorted(p) == ["bottleneck", "down_0", "down_1", "down_2", "down_3", "final", "up_0", "up_1", "up_2",
                         "up_3", "up_transpose_0", "up_transpose_1", "up_transpose_2", "up_transpose_3"]
    assert p["down_0"]["conv_0"]["kernel"].shape == (3, 3, 2, 32)              # HWIO, no bias
    assert sorted(p["down_0"]["conv_0"]) == ["kernel"]
    assert p["bottleneck"]["conv_1"]["kernel"].shape == (3, 3, 512, 512)
    assert p["up_transpose_0"]["conv"]["kernel"].shape == (2, 2, 512, 256)
    assert p["up_0"]["conv_0"]["kernel"].shape == (3, 3, 512, 256)             # [upsampled, skip] concatenated
    assert p["final"]["kernel"].shape == (1, 1, 32, 2) and p["final"]["bias"].shape == (2,)


def test_unet_shapes_on_odd_sizes_and_its_checks():
    model = Unet(**SMALL)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 15, 13, 2)), jnp.float32)
    params = _random_params(model.init, x)
    out = model.apply(params, x)
    assert out.shape == (2, 15, 13, 2) and out.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(out)))
    with pytest.raises(ValueError, match="too small"):
        model.apply(params, x[:, :3])
    with pytest.raises(TypeError, match="real"):
        model.apply(params, x.astype(jnp.complex64))
    with pytest.raises(ValueError, match=r"\(N, H, W, 2\)"):
        model.apply(params, x[..., :1])
    for bad in (dict(chans=0), dict(num_pool_layers=1.5), dict(drop_prob=1.0), dict(in_chans=True)):
        with pytest.raises(ValueError):
            Unet(**bad)


def test_normunet_shapes_and_dtypes_on_odd_sizes():
    rng = np.random.default_rng(1)
    model = NormUnet(**SMALL)
    x = jnp.asarray(_complex(rng, (2, 3, 30, 26)), jnp.complex64)
    params = _random_params(model.init, x)
    out = model.apply(params, x)
    assert out.shape == x.shape and out.dtype == jnp.complex64
    assert np.all(np.isfinite(np.asarray(out)))
    single = model.apply(params, x[1, 2])                  # no leading axes
    np.testing.assert_allclose(single, out[1, 2], rtol=1e-5, atol=1e-5)
    with jax.enable_x64(True):
        x64 = jnp.asarray(x[0], jnp.complex128)
        out64 = model.apply(params, x64)                   # float32 parameters, float64 input: float64 compute
        assert out64.dtype == jnp.complex128
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        assert model.apply(p64, x64).dtype == jnp.complex128
        np.testing.assert_allclose(out64, out[0], rtol=1e-4, atol=1e-4)


def test_normunet_is_scale_equivariant(x64):
    rng = np.random.default_rng(2)
    model = NormUnet(**SMALL)
    x = jnp.asarray(_complex(rng, (2, H, W)) + 0.5)
    params = _random_params(model.init, x, dtype=jnp.float64)
    out = model.apply(params, x)
    for c in (1e-3, 0.37, 250.0):
        np.testing.assert_allclose(model.apply(params, c * x), c * out, rtol=1e-10, atol=1e-12 * c)
    # Shifting by a constant moves the output by it too (the mean is taken out and put back).
    np.testing.assert_allclose(model.apply(params, x + (2 - 3j)), out + (2 - 3j), rtol=1e-10, atol=1e-10)


def test_normunet_of_a_real_image_is_finite_and_differentiable():
    """fastMRI's normalisation divides 0 by 0 on an identically real image; the std floor does not."""
    rng = np.random.default_rng(3)
    model = NormUnet(**SMALL)
    x = jnp.asarray(rng.standard_normal((H, W)), jnp.float32)    # real: imaginary part exactly 0
    params = _random_params(model.init, x)
    out = model.apply(params, x)
    grad = jax.grad(lambda z: jnp.sum(jnp.abs(model.apply(params, z)) ** 2))(x.astype(jnp.complex64))
    assert np.all(np.isfinite(np.asarray(out))) and np.all(np.isfinite(np.asarray(grad)))
    zero = model.apply(params, jnp.zeros((H, W), jnp.complex64))     # an all-zero image: ~0, not NaN
    assert np.all(np.isfinite(np.asarray(zero))) and float(jnp.max(jnp.abs(zero))) < 1e-15
    with pytest.raises(ValueError, match="std_floor"):
        NormUnet(std_floor=-1.0)


def test_dropout_is_off_by_default_and_drawn_from_the_dropout_rng():
    rng = np.random.default_rng(4)
    model = NormUnet(**SMALL, drop_prob=0.5)
    x = jnp.asarray(_complex(rng, (2, H, W)), jnp.complex64)
    params = _random_params(model.init, x)
    clean = model.apply(params, x)
    np.testing.assert_array_equal(model.apply(params, x), clean)           # deterministic by default
    np.testing.assert_allclose(clean, NormUnet(**SMALL).apply(params, x), rtol=1e-6, atol=1e-6)
    a = model.apply(params, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    b = model.apply(params, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    np.testing.assert_array_equal(a, b)
    assert float(jnp.max(jnp.abs(a - clean))) > 1e-3


# ----------------------------------------------------------------------------- the registered model


def test_registered_as_unet():
    spec = models.get("unet")
    assert spec.cls is UnetRecon and models.get("UnetRecon") is spec
    assert "unet" in models.names(trained=True)
    assert set(spec.operator_types) == {operators.Cartesian, operators.Sense}
    assert spec.inputs[0] == "zero_filled"
    assert [h.name for h in spec.hyperparameters] == ["chans", "num_pool_layers", "dc"]
    assert spec.train_defaults == {"loss": "l1", "mask_mode": "per_image"}
    assert models.spec_for(UnetRecon(**SMALL)) is spec
    for bad in (dict(chans=-1), dict(dc="yes"), dict(std_floor=float("inf"))):
        with pytest.raises(ValueError):
            UnetRecon(**bad)


def test_without_dc_it_is_normunet_of_the_zero_filled_image():
    rng = np.random.default_rng(5)
    op, y = _problem(rng, lead=(2,))
    model = UnetRecon(**SMALL)
    params = _recon_params(model, op, y)
    out = reconstruction_map(model, params, op)(y)
    expected = NormUnet(**SMALL).apply({"params": params["params"]["norm_unet"]}, op.adjoint(y))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert out.shape == (2, H, W) and out.dtype == jnp.complex64


def test_dc_keeps_the_measurements_exactly_single_and_multi_coil(x64):
    rng = np.random.default_rng(6)
    mask = _line_mask()
    op = operators.cartesian(mask)
    y = op.forward(jnp.asarray(_complex(rng, (2, H, W))))
    with_dc, without = UnetRecon(**SMALL, dc=True), UnetRecon(**SMALL)
    params = _recon_params(with_dc, op, y, dtype=jnp.float64)
    out = reconstruction_map(with_dc, params, op)(y)
    np.testing.assert_allclose(operators.cartesian(mask).forward(out), y, atol=1e-12)
    plain = reconstruction_map(without, params, op)(y)
    assert float(jnp.max(jnp.abs(op.forward(plain) - y))) > 1e-3                 # DC is what makes it exact
    np.testing.assert_allclose(out, dc.data_consistency(plain, y, mask), rtol=1e-12, atol=1e-12)
    # SENSE: the network sees the coil-combined adjoint, DC is the multi-coil one with the maps.
    maps = _complex(rng, (3, H, W))
    maps = jnp.asarray(maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=0)))
    sense = operators.sense(mask, maps)
    ys = sense.forward(jnp.asarray(_complex(rng, (H, W))))
    out = reconstruction_map(with_dc, params, sense)(ys)
    plain = reconstruction_map(without, params, sense)(ys)
    np.testing.assert_allclose(plain, NormUnet(**SMALL).apply({"params": params["params"]["norm_unet"]},
                                                               sense.adjoint(ys)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out, dc.data_consistency(plain, ys, sense), rtol=1e-12, atol=1e-12)
    assert out.shape == (H, W)
    with pytest.raises(ValueError, match="k0"):
        with_dc.apply(params, jnp.zeros((H, W), jnp.complex128))


@pytest.mark.parametrize("use_dc", [False, True])
def test_gradient_in_the_measurements_matches_finite_differences(x64, use_dc):
    rng = np.random.default_rng(7)
    op, y = _problem(rng)
    y = jnp.asarray(y, jnp.complex128)
    model = UnetRecon(**SMALL, dc=use_dc)
    params = _recon_params(model, op, y, dtype=jnp.float64)
    f = reconstruction_map(model, params, op)
    target = jnp.asarray(_complex(rng, (H, W)))
    loss = lambda yy: 0.5 * jnp.sum(jnp.abs(f(yy) - target) ** 2)
    v = op.restrict(jnp.asarray(_complex(rng, (H, W))))               # a direction in measurement space
    v = v / jnp.linalg.norm(v) * jnp.linalg.norm(y)
    g = jax.grad(loss)(y)
    analytic = float(jnp.real(jnp.sum(g * v)))                        # JAX's grad of a real loss is conj(dL/dy)
    h = 1e-6
    numeric = float((loss(y + h * v) - loss(y - h * v)) / (2 * h))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)
    # The forward-mode derivative agrees (the attack's linearised gain uses jvp).
    _, tangent = jax.jvp(f, (y,), (v,))
    numeric_tangent = (f(y + h * v) - f(y - h * v)) / (2 * h)
    np.testing.assert_allclose(tangent, numeric_tangent, rtol=1e-6, atol=1e-6 * float(jnp.max(jnp.abs(tangent))))


def test_a_batch_equals_one_by_one_and_vmap():
    rng = np.random.default_rng(8)
    masks = np.stack([_line_mask(offset=i) for i in range(3)])
    op = operators.cartesian(masks)
    y = op.forward(jnp.asarray(_complex(rng, (3, H, W)), jnp.complex64))
    model = UnetRecon(**SMALL, dc=True)
    params = _recon_params(model, operators.cartesian(masks[0]), y[:1])
    batched = reconstruction_map(model, params, op)(y)
    vmapped = jax.vmap(lambda m, yy: reconstruction_map(model, params, operators.cartesian(m))(yy))(masks, y)
    for i in range(3):
        one = reconstruction_map(model, params, masks[i])(y[i])
        np.testing.assert_allclose(batched[i], one, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(vmapped[i], one, rtol=1e-5, atol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    rng = np.random.default_rng(9)
    op, y = _problem(rng, lead=(2,))
    model = UnetRecon(chans=4, num_pool_layers=2, dc=True, std_floor=0.05)
    params = _recon_params(model, op, y[:1])
    state = train.create_train_state(params, train.make_optimizer("adam", lr=1e-3))
    checkpoint.save(tmp_path, state, {"model": models.model_config(model), "data": {"size": H}},
                    include_opt_state=False)
    loaded, loaded_params, config = models.load(tmp_path)
    assert type(loaded) is UnetRecon and config["model"]["class"] == "unet"
    assert models.model_config(loaded) == models.model_config(model)
    np.testing.assert_array_equal(reconstruction_map(loaded, loaded_params, op)(y),
                                  reconstruction_map(model, params, op)(y))


def test_the_training_flags_build_the_model():
    fv = train_script.define_flags()
    fv(["train.py", "--model=unet", "--out_dir=x", "--chans=8", "--dc"])
    entry = train_script.model_entry(fv, models.get("unet"))
    assert entry == {"class": "unet", "kwargs": {"chans": 8, "num_pool_layers": 4, "dc": True}}
    assert models.build(entry) == UnetRecon(chans=8, dc=True)


def test_train_from_the_cli_then_attack_the_checkpoint(tmp_path):
    out = tmp_path / "unet"
    args = ["train.py", "--model=unet", f"--out_dir={out}", "--size=16", "--batch_size=2", "--steps=2",
            "--log_every=1", "--ckpt_every=1", "--validate_every=1", "--val_count=2", "--plot_count=1", "--chans=4",
            "--num_pool_layers=2", "--mask=gaussian_lines", "--acceleration=3", "--sample_n=2"]
    assert train_script.main(args) == 0
    model, params, config = models.load(out)
    assert model == UnetRecon(chans=4, num_pool_layers=2)
    assert config["train"]["loss"] == "l1" and config["mask"]["mode"] == "per_image"
    with open(out / "metrics.json") as f:
        assert [r["step"] for r in json.load(f)["history"] if "loss" in r] == [1, 2]

    attack = tmp_path / "attack"
    assert worst_case.main(["worst_case", f"--out_dir={attack}", f"--model={out}", "--size=16", "--images=ellipses",
                            "--steps=2", "--snapshots=2", "--radius=0.05", "--noise_draws=0", "--nocompare_cs",
                            "--mask=gaussian_lines", "--sample_n=2"]) == 0
    with open(attack / "results.json") as f:
        results = json.load(f)
    assert results["model"]["config"]["class"] == "unet"
    assert results["images"] and all(np.isfinite(s["psnr_change"]) for s in results["images"][0]["snapshots"])
