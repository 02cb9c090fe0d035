"""The training configuration: one dataclass, loadable from YAML, overridable with ``key=value``.

    cfg = TrainConfig.load("lm", overrides=["max_steps=50", "model.n_layer=2"])

``load`` takes a YAML file or the name of a packaged config (``lm``, ``tabular``: the files in
``shardforge/examples/``). Values in overrides are parsed as YAML scalars (``lr=3e-4`` is a float,
``qk_norm=true`` a bool); a dotted key reaches into the ``model`` dict. Every value is checked
against its field's type and range (``max_steps: true`` or ``2.7`` is an error, not 1 or 2
steps), and unknown keys, of the config and of the task's model settings (the recipe's
``Settings``, :mod:`shardforge.training.recipes`), are errors with a did-you-mean, so a typo
never silently trains the wrong thing; :func:`check_schema` does the same for feature names
against the data.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

if typing.TYPE_CHECKING:
    from shardforge.training.mixture import Mixture


@dataclass
class TrainConfig:
    # what to train: a recipe of shardforge.training.recipes ("lm": packed next-token
    # prediction, "tabular": FeatureLayer + MLP, "vlm": vision-language)
    task: str = "lm"
    # a pipeline output dir holding train/, eval/ and schema.pbtxt, or a mixture of them: a
    # list of sources ("dir:weight" strings or {path, weight, epochs, split, name, missing})
    # or {sources: [...], temperature: α, reweight: true}; see training/mixture.py
    data: Any = ""
    out_dir: str = "runs/lm"
    train_split: str = "train"
    eval_split: str = "eval"
    model: dict[str, Any] = field(default_factory=dict)  # the task recipe's Settings fields

    # data
    token_feature: str = "tokens"  # lm: the token-id feature
    packing_length: int = 2048  # lm: tokens per micro-batch (per rank)
    batch_size: int = 256  # tabular: rows per micro-batch (per rank)
    label: str = "label"  # tabular: the label feature
    num_workers: int = 0
    # a local directory keeping the blocks read from a bucket for later epochs, bounded to
    # cache_gb (least recently used out first); empty: no cache
    cache_dir: str = ""
    cache_gb: float = 10.0

    # optimization
    max_steps: int = 200
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr: float = 3e-4  # cosine decays from lr to min_lr at max_steps
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    # stop early after this many seconds of training (0: no limit); the schedule still spans
    # max_steps, so a run cut short ends at a higher learning rate than planned
    time_limit_s: float = 0.0
    # memory: ZeRO stage (0 DDP, 1 optimizer states sharded, 2 + gradients, 3 + parameters;
    # the knob `shardforge plan --zero-stage` takes) and recomputing each transformer block's
    # activations in the backward pass instead of storing them
    zero_stage: int = 0
    activation_checkpointing: bool = False

    # bookkeeping
    eval_every: int = 50
    eval_batches: int = 20  # 0: the whole eval split
    log_every: int = 10
    ckpt_every: int = 100  # 0: only at the end
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # torch intra-op threads on the CPU (0: torch's default, one per core). Small models are
    # often faster with 1: their ops are too small to split, and on a busy machine threads
    # that wait for each other cost far more than they bring
    threads: int = 0
    tensorboard: bool = False  # written only if the tensorboard package is installed
    plot: bool = True

    def __post_init__(self) -> None:
        from shardforge.training.recipes import RECIPES

        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value(getattr(self, f.name), _HINTS[f.name], f.name))
        if self.task not in RECIPES:
            raise ValueError(f"config key task: expected one of {', '.join(sorted(RECIPES))}, "
                             f"got {self.task!r}")
        for key, low in _LOWER_BOUNDS.items():
            if getattr(self, key) < low:
                raise ValueError(f"config key {key}: expected >= {low}, got {getattr(self, key)!r}")
        if self.lr <= 0:
            raise ValueError(f"config key lr: expected > 0, got {self.lr!r}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"config key zero_stage must be 0, 1, 2 or 3, not "
                             f"{self.zero_stage!r}")
        self.settings()  # the model settings' keys and values
        if self.data:
            self.mixture()  # the data's sources and weights

    def cache_settings(self) -> dict[str, Any]:
        """The dataset's block-cache arguments (``ShardDataset(cache_dir=, cache_bytes=)``)."""
        if not self.cache_dir:
            return {}
        return {"cache_dir": self.cache_dir, "cache_bytes": int(self.cache_gb * (1 << 30))}

    def mixture(self, split: str | None = None, only: str | None = None) -> Mixture:
        """``data`` as a :class:`~shardforge.training.mixture.Mixture` read at ``split``
        (default: ``train_split``, or each source's own ``split``); one output dir is a mixture
        of one source. ``only``: just the source of that name."""
        from shardforge.training.mixture import Mixture

        mixture = Mixture.parse(self.data, self.train_split)
        if only is not None:
            mixture = dataclasses.replace(mixture, sources=[s for s in mixture.sources
                                                            if s.name == only])
        return mixture if split in (None, self.train_split) else mixture.for_split(split)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}{did_you_mean(unknown[0], known)}")
        return cls(**values)

    def settings(self) -> Any:
        """``model`` as the task recipe's ``Settings`` (keys and values checked)."""
        from shardforge.training.recipes import recipe_for

        return make_settings(recipe_for(self.task).Settings, self.model, "model")

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
        """Read ``path`` (a YAML file or a packaged config's name, see :func:`config_path`) if
        given, then apply ``key=value`` overrides in order."""
        values: dict[str, Any] = {}
        if path is not None:
            path = config_path(path)
            try:
                values = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise ValueError(f"{path} is not valid YAML: {err}") from None
            if not isinstance(values, dict):
                raise ValueError(f"{path}: expected a mapping of config keys at the top level")
        return cls.from_dict(apply_overrides(values, overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else the packaged config of that name
    (``config_path("lm")`` is ``shardforge/examples/lm.yaml``)."""
    from shardforge.training.recipes import EXAMPLES_DIR, packaged_configs

    if Path(path).is_file():
        return Path(path)
    if str(path) in packaged_configs():
        return EXAMPLES_DIR / f"{path}.yaml"
    raise FileNotFoundError(f"config {str(path)!r} is neither a file nor a packaged config "
                            f"({', '.join(packaged_configs())})")


def did_you_mean(name: str, choices) -> str:
    """``"; did you mean 'hidden'?"`` for the closest of ``choices``; else the choices listed,
    when there are few enough for one line, or where to see them."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    if len(choices) <= 12:
        return f"; choose from {', '.join(sorted(choices))}"
    return "; `shardforge train --print-config` shows every key"


def check_schema(cfg: TrainConfig, schema) -> None:
    """Fail before training when the config names features the data does not have (the task
    recipe's ``check_schema``)."""
    from shardforge.training.recipes import recipe_for

    recipe_for(cfg.task).check_schema(cfg, schema)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "model.n_layer=2"]`` applied to a copy of ``values``."""
    values = {**values, "model": dict(values.get("model") or {})}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value")
        value = yaml.safe_load(raw) if raw else ""
        *parents, leaf = key.split(".")
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ValueError(f"override {item!r}: {parent!r} is not a mapping")
        target[leaf] = value
    return values


def make_settings(cls: type, values: Any, where: str) -> Any:
    """``cls(**values)`` for a settings dataclass, with unknown keys named (and a did-you-mean)
    and every value checked against its field's type; ``where`` prefixes the key in errors."""
    if not isinstance(values, dict):
        raise ValueError(f"config key {where}: expected a mapping, got {values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ValueError(f"unknown {where} key {key!r}{did_you_mean(key, known)}")
    return cls(**coerce_fields(cls, values, where))


def coerce_fields(cls: type, values: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``values`` checked against (and converted to) the types the dataclass ``cls`` declares;
    ``where`` prefixes the keys in errors (``model.n_layer``)."""
    hints = typing.get_type_hints(cls)
    prefix = f"{where}." if where else ""
    return {k: check_value(v, hints.get(k), prefix + k) for k, v in values.items()}


def check_value(value: Any, kind: Any, key: str) -> Any:
    """``value`` as the declared type ``kind``, or a one-line error naming ``key``.

    A bool is not a number (``max_steps: true`` is an error), an integer field takes only whole
    numbers (``2.7`` is an error), YAML 1.1's strings ``3e-4`` and ``1e3`` become numbers.
    """
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(kind):
            return None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    origin = typing.get_origin(kind)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"config key {key}: expected true or false, got {value!r}")
    if kind is int:
        number = _number(value, key, "an integer")
        if not float(number).is_integer():
            raise ValueError(f"config key {key}: expected an integer, got {value!r}")
        return int(number)
    if kind is float:
        return float(_number(value, key, "a number"))
    if kind is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"config key {key}: expected a string, got {value!r}")
    if kind is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise ValueError(f"config key {key}: expected a mapping, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key}: expected a list, got {value!r}")
        item = typing.get_args(kind)[0]
        return tuple(check_value(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    return value


def _number(value: Any, key: str, what: str) -> int | float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"config key {key}: expected {what}, got {value!r}")


_HINTS = typing.get_type_hints(TrainConfig)
# the smallest meaningful value of each numeric key
_LOWER_BOUNDS = {
    "packing_length": 1, "batch_size": 1, "num_workers": 0, "max_steps": 1, "grad_accum": 1,
    "min_lr": 0, "warmup_steps": 0, "weight_decay": 0, "beta1": 0, "beta2": 0, "grad_clip": 0,
    "time_limit_s": 0, "eval_every": 1, "eval_batches": 0, "log_every": 1, "ckpt_every": 0,
    "keep_checkpoints": 1, "seed": 0, "threads": 0,
}
