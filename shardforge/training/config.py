"""The training configuration: one dataclass, loadable from YAML, overridable with ``key=value``.

    cfg = TrainConfig.load("lm", overrides=["max_steps=50", "model.n_layer=2"])

``load`` takes a YAML file or the name of a packaged config (``lm``, ``tabular``: the files in
``shardforge/examples/``). Values in overrides are parsed as YAML scalars (``lr=3e-4`` is a float,
``qk_norm=true`` a bool); a dotted key reaches into the ``model`` dict. Unknown keys, of the
config and of the task's model, are errors with a did-you-mean, so a typo never silently trains
the wrong thing; :func:`check_schema` does the same for feature names against the data.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
# packaged configs: ``--config lm`` is shardforge/examples/lm.yaml
PACKAGED_CONFIGS = ("lm", "tabular")


@dataclass
class TrainConfig:
    # what to train: "lm" (packed next-token prediction) or "tabular" (FeatureLayer + MLP)
    task: str = "lm"
    data: str = ""  # a pipeline output dir holding train/, eval/ and schema.pbtxt
    out_dir: str = "runs/lm"
    train_split: str = "train"
    eval_split: str = "eval"
    model: dict[str, Any] = field(default_factory=dict)  # LMConfig / TabularConfig fields

    # data
    token_feature: str = "tokens"  # lm: the token-id feature
    packing_length: int = 2048  # lm: tokens per micro-batch (per rank)
    batch_size: int = 256  # tabular: rows per micro-batch (per rank)
    label: str = "label"  # tabular: the label feature
    num_workers: int = 0

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
        if self.task not in ("lm", "tabular", "vlm"):
            raise ValueError(f"task must be 'lm', 'tabular' or 'vlm', not {self.task!r}")
        if self.grad_accum < 1 or self.max_steps < 1:
            raise ValueError("grad_accum and max_steps must be >= 1")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0, 1, 2 or 3, not {self.zero_stage!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}{did_you_mean(unknown[0], known)}")
        cfg = cls(**coerce_fields(cls, values))
        cfg.check_model_keys()
        return cfg

    def check_model_keys(self) -> None:
        """Every key of ``model`` is a field of the task's model config (a typo is an error)."""
        if not isinstance(self.model, dict):
            raise ValueError(f"config key model: expected a mapping, got {self.model!r}")
        model_keys = {f.name for f in dataclasses.fields(model_config_class(self.task))}
        for key in self.model:
            if key not in model_keys:
                raise ValueError(f"unknown model key {key!r} for task {self.task!r}"
                                 f"{did_you_mean(key, model_keys)}")

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
    if Path(path).is_file():
        return Path(path)
    if str(path) in PACKAGED_CONFIGS:
        return EXAMPLES_DIR / f"{path}.yaml"
    raise FileNotFoundError(f"config {str(path)!r} is neither a file nor a packaged config "
                            f"({', '.join(PACKAGED_CONFIGS)})")


def model_config_class(task: str) -> type:
    """The dataclass whose fields the ``model`` mapping of a ``task`` config sets."""
    if task == "lm":
        from shardforge.training.models.lm import LMConfig

        return LMConfig
    from shardforge.training.models.tabular import TabularConfig

    return TabularConfig


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
    """Fail before training when the config names features the data does not have: the LM's
    token feature, the tabular label (``label=lable``), or LM settings on tabular data."""
    names = [f.name for f in schema.features]
    if cfg.task == "lm" and cfg.token_feature not in names:
        hint = did_you_mean(cfg.token_feature, names)
        if cfg.label in names:  # a labelled, token-less output: the tabular task's data
            hint = (f"; this looks like tabular data (it has the label {cfg.label!r}): give "
                    f"--config tabular (or task=tabular)")
        raise ValueError(f"the data has no token feature {cfg.token_feature!r}{hint}")
    if cfg.task == "tabular" and cfg.label not in names:
        raise ValueError(f"the data has no label feature {cfg.label!r}"
                         f"{did_you_mean(cfg.label, names)}")


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


def coerce_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with scalars converted to the types the dataclass ``cls`` declares."""
    hints = typing.get_type_hints(cls)
    return {k: _coerce(v, hints.get(k), k) for k, v in values.items()}


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """YAML 1.1 reads ``3e-4`` as a string; convert scalars to the field's declared type."""
    if kind is float and isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"config key {key}: expected a number, got {value!r}") from None
    if kind is int and isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            raise ValueError(f"config key {key}: expected an integer, got {value!r}") from None
    return value
