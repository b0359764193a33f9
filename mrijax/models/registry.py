"""The reconstruction-model protocol: one registry for every model the library can attack.

Each model declares, in its own module, a :class:`ModelSpec`: its name, its Flax class, how
it maps measurements to an image (``apply(model, params, operator, y)``), how to initialise
it, whether it is trained, which inputs it needs, and which operators it accepts.  Nothing
outside a model's module looks at its type: the attack, the training loop, checkpoints and
the experiments go through :func:`reconstruction_map`, :func:`spec_for`, :func:`build` and
:func:`load`, so a new architecture is one new module with one :func:`register` call.

A reconstruction map is a pure ``f(y) -> image`` closed over the parameters and the operator:
networks, CS solvers, PyTorch models and users' own functions are attacked alike.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from mrijax import checkpoint, operators

__all__ = ["INPUTS", "Hyper", "ModelSpec", "apply_zero_filled", "build", "get", "init_zero_filled", "load",
           "model_config", "names", "reconstruction_map", "register", "spec_for"]

INPUTS = ("zero_filled", "measurements", "measurement_vector", "coil_maps")
"""What a model may read: the zero-filled image ``A* y``, the measurements ``y`` (masked
k-space), the measurement vector (``y`` gathered to ``C^m``: needs a concrete mask) and
coil maps (the SENSE operator)."""


class Hyper(NamedTuple):
    """One constructor argument a training script exposes as a flag ``--name``.

    ``default`` is the training script's default (may differ from the class's, e.g. a
    narrower cascade), ``type`` one of ``int``, ``float``, ``bool``, ``str`` (needed when the
    default is ``None``), ``choices`` the allowed strings, ``kwarg`` the constructor argument
    (default: ``name``).
    """
    name: str
    default: Any
    help: str
    type: type = None
    choices: Tuple[str, ...] = ()
    kwarg: str = ""

    @property
    def value_type(self) -> type:
        return self.type or type(self.default)

    @property
    def argument(self) -> str:
        return self.kwarg or self.name


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How the library uses one model class.

    Attributes:
      name: the registry name, also stored in checkpoint configs (``{"class": name, ...}``).
      cls: the Flax module class.
      apply: ``apply(model, variables, operator, y) -> image`` (one problem or a batch whose
        leading axes match the operator's), pure and differentiable in ``y``.
      init: ``init(model, key, operator, y) -> variables``.
      trained: whether the model has learned parameters (a training script can fit it).
      inputs: the subset of :data:`INPUTS` the model reads.
      operator_types: the operator classes the model accepts.
      static_operator: the model is tied to one concrete operator (e.g. AUTOMAP's fixed
        measurement vector): it is trained with one fixed mask and its ``apply`` needs the
        operator as concrete arrays, not traced values.
      apply_with_activations: ``(model, variables, operator, y) -> (image, activations)`` for
        an activation penalty in training, or ``None``.
      complete_kwargs: ``(kwargs, image_size, fixed_operator) -> kwargs``: fill in constructor
        arguments that follow from the data (e.g. AUTOMAP's ``n`` and ``m``), or ``None``.
      check: ``check(model, operator)``: model-specific checks of an operator (e.g. that it
        samples as many entries as the model takes), raising ``ValueError``; or ``None``.
      hyperparameters: the constructor arguments a training script exposes (:class:`Hyper`).
      train_defaults: the training settings this model is trained with unless told otherwise
        (e.g. ``{"loss": "magnitude_l2", "mask_mode": "fixed"}``).
      aliases: other names accepted when reading configs (e.g. the class name).
    """

    name: str
    cls: type
    apply: Callable
    init: Callable
    trained: bool = True
    inputs: Tuple[str, ...] = ("zero_filled", "measurements")
    operator_types: Tuple[type, ...] = (operators.Cartesian,)
    static_operator: bool = False
    apply_with_activations: Optional[Callable] = None
    complete_kwargs: Optional[Callable] = None
    check: Optional[Callable] = None
    hyperparameters: Tuple[Hyper, ...] = ()
    train_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    aliases: Tuple[str, ...] = ()

    def check_operator(self, operator) -> None:
        """Raise ``ValueError`` when the model cannot take measurements from ``operator``."""
        if not isinstance(operator, self.operator_types):
            kinds = ", ".join(t.__name__ for t in self.operator_types)
            raise ValueError(f"model {self.name!r} takes measurements of a {kinds} operator, "
                             f"got a {type(operator).__name__} operator")

    def check_model_operator(self, model, operator) -> None:
        """:meth:`check_operator`, then the model's own checks (``check``)."""
        self.check_operator(operator)
        if self.check is not None:
            self.check(model, operator)


_SPECS: Dict[str, ModelSpec] = {}
_BY_CLASS: Dict[type, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry (its module calls this once, at import)."""
    bad = set(spec.inputs) - set(INPUTS)
    if bad:
        raise ValueError(f"unknown inputs {sorted(bad)} for model {spec.name!r}; known: {INPUTS}")
    for name in (spec.name,) + spec.aliases:
        if name in _SPECS and _SPECS[name].cls is not spec.cls:
            raise ValueError(f"a model named {name!r} is already registered ({_SPECS[name].cls.__name__})")
        _SPECS[name] = spec
    _BY_CLASS[spec.cls] = spec
    return spec


def names(trained: Optional[bool] = None) -> Tuple[str, ...]:
    """Registered model names (without aliases); ``trained``: only those that are (or are not) trained."""
    return tuple(sorted({s.name for s in _SPECS.values() if trained is None or s.trained == trained}))


def get(name: str) -> ModelSpec:
    """The spec registered under ``name`` (or one of its aliases)."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(names())} "
                         "(register your own with mrijax.models.register)") from None


def spec_for(model) -> ModelSpec:
    """The spec of a model instance."""
    spec = _BY_CLASS.get(type(model))
    if spec is None:
        raise TypeError(f"{type(model).__name__} is not a registered model; registered: {', '.join(names())} "
                        "(register it with mrijax.models.register(ModelSpec(...)))")
    return spec


def reconstruction_map(model, params, operator, coil_maps=None) -> Callable:
    """Wrap a model and its parameters as a pure reconstruction map ``f(y) -> image``.

    Args:
      model: an instance of a registered model class.
      params: its variables (``{'params': ...}``).
      operator: a measurement operator (:mod:`mrijax.operators`), or a centred mask (the
        Cartesian operator; with ``coil_maps`` the SENSE operator).
      coil_maps: optional ``(..., C, H, W)`` maps, only with a mask.

    Returns:
      ``f(y)`` for measurements of the operator's shape (masked k-space for Cartesian): pure,
      and usable under ``jit``, ``vmap`` and ``grad``.  Values of ``y`` outside the
      measurement space (off the mask) are ignored: ``f`` restricts its input first.
    """
    spec = spec_for(model)
    op = operators.as_operator(operator, coil_maps)
    spec.check_model_operator(model, op)

    def f(y):
        return spec.apply(model, params, op, op.restrict(y))

    return f


def apply_zero_filled(model, variables, op, y):
    """``apply`` for models called as ``model(x_zf, k0, mask, coil_maps=None)`` (zero-filled image, the
    measured k-space, its mask and coil maps: the cascade's and the U-Net's convention)."""
    mask, coil_maps = operators.mask_and_coil_maps(op)
    return model.apply(variables, op.adjoint(y), y, mask, coil_maps=coil_maps)


def init_zero_filled(model, key, op, y):
    """``init`` for the convention of :func:`apply_zero_filled`."""
    mask, coil_maps = operators.mask_and_coil_maps(op)
    return model.init(key, op.adjoint(y), y, mask, coil_maps=coil_maps)


# ----------------------------------------------------------------------------- configs and checkpoints


def model_config(model) -> Dict[str, Any]:
    """``{"class": name, "kwargs": {...}}`` of a registered model: its dataclass fields except
    ``parent`` and ``name``.  Raises ``TypeError`` if a field is not JSON-serialisable."""
    spec = spec_for(model)
    kwargs = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
              if f.init and f.name not in ("parent", "name")}
    try:
        json.dumps(kwargs)
    except TypeError as e:
        raise TypeError(f"{type(model).__name__}'s fields must be JSON-serialisable to be "
                        f"stored in a checkpoint config: {e}") from e
    return {"class": spec.name, "kwargs": kwargs}


def build(config: Mapping[str, Any]):
    """The model described by a run config's ``"model"`` entry, or by such an entry itself."""
    entry = config if "class" in config else config.get("model")
    if not isinstance(entry, Mapping) or "class" not in entry:
        raise checkpoint.CheckpointError("config has no 'model': {'class': ..., 'kwargs': ...} entry")
    try:
        spec = get(entry["class"])
    except ValueError as e:
        raise checkpoint.CheckpointError(f"the checkpoint's model: {e}") from None
    try:
        return spec.cls(**dict(entry.get("kwargs", {})))
    except (TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(
            f"cannot build {entry['class']} from the stored kwargs {entry.get('kwargs')}: {e}") from e


def _example_operator(size: int):
    return operators.cartesian(jnp.ones((size, size), bool))


def _check_params_fit(path, model, params, config):
    """Compare shapes with the model's ``init`` traced abstractly (no compute), when the config
    says the image size; otherwise trust the checkpoint."""
    size = (config.get("data") or {}).get("size")
    if not size:
        return
    spec = spec_for(model)
    op = _example_operator(int(size))
    y = jnp.zeros((1, size, size), jnp.complex64)
    shapes = jax.eval_shape(lambda: spec.init(model, jax.random.PRNGKey(0), op, y))
    checkpoint.check_same_structure(path, shapes, params)


def load(directory, which: Optional[str] = None):
    """Rebuild a trained model from its checkpoint: ``(model, params, config)``.

    The model class and its keyword arguments come from the stored config; the parameters
    are restored as JAX arrays on the default device.  ``which``: ``"latest"``, ``"best"`` or
    ``None`` (best if present, else latest).

    Raises:
      FileNotFoundError: no checkpoint at ``directory``.
      CheckpointError: corrupt checkpoint, unknown model, or parameters that do not fit.
    """
    path = checkpoint.checkpoint_path(directory, which)
    config = checkpoint.read_config(path)
    model = build(config)
    params = checkpoint.load_params(path)
    _check_params_fit(path, model, params, config)
    return model, params, config

