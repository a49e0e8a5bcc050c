"""The search configuration: a ``profile`` and typed sections ``space``, ``samea``, ``training``, ``resources``.

``profile = "paper"`` sets the defaults of the authors' protocol (batch 2, 2x2x2 pooling at every
level, their early stopping, learning-rate schedule, augmentation and loss; docs/paper_profile.md);
``profile = "default"`` (the default) this project's. A key given explicitly wins over the profile.

Read from and written to TOML (``resources/default_search.toml`` holds every key with its default).
Every number of the method is a key here. A bad key or value raises ``ConfigError`` naming it, e.g.
``search.toml: samea.population must be an integer >= 2, got 1``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from engine.errors import ConfigError, GenomeError
from engine.genome import GENE_NAMES, SearchSpace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_VERSION = 1
STRATEGY_NAMES = ("samea", "moead", "random")
EXECUTOR_NAMES = ("inprocess", "local", "ray")
EARLY_STOP_RULES = ("off", "median", "halving")
PROFILE_NAMES = ("default", "paper")
#: What each profile sets where the configuration does not say (section -> key -> value; ``plan``
#: merges key by key). The training behaviour itself (loss, augmentation, early stopping, schedule)
#: follows ``engine.train.TrainerConfig.profile``, which the run's training settings carry.
PROFILE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "paper": {"training": {"plan": {"pooling": "paper"}}},  # the plan: 2x2x2 at every level, batch 2
}
OBJECTIVES = ("parameters", "flops", "latency")
LATENCY_TARGETS = ("cpu", "cuda")


@dataclass
class SpaceConfig:
    """Restriction of each gene to some of its values; an empty list keeps the paper's values."""

    in2: list = field(default_factory=list)
    in3: list = field(default_factory=list)
    in4: list = field(default_factory=list)
    op1: list = field(default_factory=list)
    op2: list = field(default_factory=list)
    op3: list = field(default_factory=list)
    op4: list = field(default_factory=list)
    n_cells: list = field(default_factory=list)
    nf1: list = field(default_factory=list)
    lr: list = field(default_factory=list)

    def search_space(self) -> SearchSpace:
        return SearchSpace.from_dict({g: getattr(self, g) for g in GENE_NAMES if getattr(self, g)})


@dataclass
class SamEAConfig:
    """SaMEA and its alternatives; defaults are the reference code's."""

    strategy: str = "samea"
    population: int = 10  # N subproblems
    generations: int = 40  # G, counting the initial generation
    learning_generations: int = 10  # L: generations 1..L are the learning phase
    neighbourhood: int = 3  # T
    theta: float = 0.001  # PBI penalty
    weight_start: float = 0.5  # w1 of the first subproblem
    weight_end: float = 1.0  # w1 of the last subproblem
    crossover_probability: float = 0.5
    mutation_scale: float = 1.0  # fi_0 of max(fi_0 (1 - ln g / ln G), 1/n)
    subproblem_epsilon: float = 0.2
    value_epsilon: float = 0.2
    surrogate_trees: int = 100
    surrogate_min_samples_split: int = 5
    prescreen: bool = True
    pick_front: bool = True
    pick_min_f1: bool = True
    pick_max_std: bool = True
    max_resample: int = 2000
    # the second objective: log parameter count (the paper's), log inference FLOPs of one patch, or
    # the log of the measured latency of segmenting the plan's median volume on latency_target
    objective: str = "parameters"
    latency_target: str = "cpu"  # cpu: ONNX Runtime with latency_threads threads; cuda: PyTorch, bf16
    latency_threads: int = 1
    latency_runs: int = 5  # timed runs after one warm-up; their median is kept
    # measure every trained candidate's latency whatever the objective (always on for objective
    # latency and resources.max_latency_ms); off, a parameters or flops run shows latency where measured
    measure_latency: bool = False
    # when the search ends (finished or out of wall-clock budget), after all training: measure the
    # latency of the front's networks that have none, and predict the other candidates' from FLOPs by
    # the networks measured (shown with ~), so that every candidate carries a latency whatever the objective
    front_latency: bool = True


@dataclass
class SearchTrainingConfig:
    """The ``[training]`` section of a search config: how the search trains each candidate.

    It holds the search's choices (budget E, plan overrides); the session turns it into the settings
    of one training, ``engine.train.TrainerConfig``, to which ``extra`` passes further keys as they are.
    """

    epochs: int = 120  # E
    patience: int = 20
    alpha: float = 0.25
    beta: float = 0.25
    patch_size: list = field(default_factory=list)  # empty: the plan's
    batch_size: int = 0  # 0: the plan's
    plan: dict = field(default_factory=dict)  # plan field overrides (target_spacing, patch_size, ...)
    extra: dict = field(default_factory=dict)


@dataclass
class ResourcesConfig:
    """Where and how candidates train, and the budgets."""

    executor: str = "inprocess"
    workers: int = 1
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    ray_address: str = ""  # empty: a local Ray started on 127.0.0.1
    ray_num_cpus: int = 0  # local Ray only; 0: all
    cpus_per_candidate: float = 1.0
    gpus_per_candidate: float = 0.0  # Ray: fractional GPUs per candidate
    max_memory_mb: float = 0.0  # per training step; 0: the device's default budget
    max_gflops_per_step: float = 0.0  # 0: the device's default budget
    max_parameters: int = 0  # genomes with more parameters are never trained; 0: no limit
    max_latency_ms: float = 0.0  # genomes slower on samea.latency_target are never trained; 0: no limit
    wall_clock_hours: float = 0.0  # 0: no limit for the whole search
    disk_budget_mb: float = 0.0  # 0: keep every candidate's weights
    early_stopping: str = "off"  # off, median, halving
    early_stopping_min_epochs: int = 5
    halving_rungs: list = field(default_factory=lambda: [5, 15, 45])
    halving_keep: float = 0.5
    reuse_results: bool = False  # reuse identical genomes of sibling runs on the same plan


@dataclass
class SearchConfig:
    """The whole configuration of one search run (versioned, stored in the run database)."""

    seed: int = 0
    dataset: str = ""
    profile: str = "default"  # default or paper: see PROFILE_DEFAULTS
    splits: str = ""  # a split file (nnU-Net's splits_final.json or {"train","val","test"}); empty: the seed's split
    fold: int = 0  # the fold of a splits_final.json
    space: SpaceConfig = field(default_factory=SpaceConfig)
    samea: SamEAConfig = field(default_factory=SamEAConfig)
    training: SearchTrainingConfig = field(default_factory=SearchTrainingConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    # ---- plain data / TOML ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {"schema_version": CONFIG_VERSION, **d}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "SearchConfig":
        data = dict(data)
        version = data.pop("schema_version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ConfigError(f"{source}: schema_version {version} is not supported (expected {CONFIG_VERSION})")
        data = _with_profile_defaults(data, source)
        cfg = cls()
        sections = ("space", "samea", "training", "resources")
        for key, value in data.items():
            if key in sections:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{source}: [{key}] must be a table")
                section = getattr(cfg, key)
                for k, v in value.items():
                    _set(section, k, v, f"{key}.", source)
            else:
                _set(cfg, key, value, "", source)
        cfg.validate(source)
        return cfg

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_toml(cls, text: str, source: str = "config") -> "SearchConfig":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML ({exc})") from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SearchConfig":
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: cannot read the search config ({exc.__class__.__name__})") from None
        return cls.from_toml(text, str(p))

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_toml(), encoding="utf-8")

    def with_profile(self, profile: str) -> "SearchConfig":
        """A copy under ``profile``: every key still at the current profile's default takes the new
        profile's default; keys set to anything else stay (explicit keys win)."""
        if profile not in PROFILE_NAMES:
            raise ConfigError(f"profile must be one of {', '.join(PROFILE_NAMES)}, got {profile!r}")
        d, base = self.to_dict(), SearchConfig().to_dict()
        old, new = PROFILE_DEFAULTS[self.profile], PROFILE_DEFAULTS[profile]
        for section in set(old) | set(new):
            o, n = old.get(section, {}), new.get(section, {})
            for key in set(o) | set(n):
                if key == "plan":
                    plan = d[section]["plan"]
                    for pk in set(o.get("plan", {})) | set(n.get("plan", {})):
                        if plan.get(pk) == o.get("plan", {}).get(pk):
                            plan.pop(pk, None)
                            if pk in n.get("plan", {}):
                                plan[pk] = n["plan"][pk]
                elif d[section][key] == o.get(key, base[section][key]):
                    d[section][key] = n.get(key, base[section][key])
        d["profile"] = profile
        return SearchConfig.from_dict(d, "profile")

    def replace(self, **sections: Mapping[str, Any]) -> "SearchConfig":
        """A copy with some keys changed, e.g. ``replace(samea={"population": 4}, seed=1)``; validated."""
        d = self.to_dict()
        for key, value in sections.items():
            if isinstance(value, Mapping):
                d[key] = {**d[key], **value}
            else:
                d[key] = value
        return SearchConfig.from_dict(d, "override")

    # ---- validation ----------------------------------------------------------------------------
    def validate(self, source: str = "config") -> "SearchConfig":
        def bad(key: str, what: str, value: Any) -> ConfigError:
            return ConfigError(f"{source}: {key} must be {what}, got {value!r}")

        s, t, r = self.samea, self.training, self.resources
        if self.profile not in PROFILE_NAMES:
            raise bad("profile", "one of " + ", ".join(PROFILE_NAMES), self.profile)
        if s.strategy not in STRATEGY_NAMES:
            raise bad("samea.strategy", "one of " + ", ".join(STRATEGY_NAMES), s.strategy)
        if s.objective not in OBJECTIVES:
            raise bad("samea.objective", "one of " + ", ".join(OBJECTIVES), s.objective)
        if s.latency_target not in LATENCY_TARGETS:
            raise bad("samea.latency_target", "one of " + ", ".join(LATENCY_TARGETS), s.latency_target)
        checks = [
            ("samea.population", s.population, s.population >= 2, "an integer >= 2"),
            ("samea.generations", s.generations, s.generations >= 1, "an integer >= 1"),
            ("samea.learning_generations", s.learning_generations, s.learning_generations >= 0, "an integer >= 0"),
            ("samea.neighbourhood", s.neighbourhood, 2 <= s.neighbourhood <= s.population, f"an integer in 2..population ({s.population})"),
            ("samea.theta", s.theta, s.theta >= 0, "a number >= 0"),
            ("samea.weight_start", s.weight_start, 0 <= s.weight_start <= 1, "a number in [0, 1]"),
            ("samea.weight_end", s.weight_end, 0 <= s.weight_end <= 1, "a number in [0, 1]"),
            ("samea.crossover_probability", s.crossover_probability, 0 <= s.crossover_probability <= 1, "a number in [0, 1]"),
            ("samea.mutation_scale", s.mutation_scale, 0 <= s.mutation_scale <= 1, "a number in [0, 1]"),
            ("samea.subproblem_epsilon", s.subproblem_epsilon, s.subproblem_epsilon > 0, "a number > 0"),
            ("samea.value_epsilon", s.value_epsilon, s.value_epsilon > 0, "a number > 0"),
            ("samea.surrogate_trees", s.surrogate_trees, s.surrogate_trees >= 1, "an integer >= 1"),
            ("samea.surrogate_min_samples_split", s.surrogate_min_samples_split, s.surrogate_min_samples_split >= 2, "an integer >= 2"),
            ("samea.max_resample", s.max_resample, s.max_resample >= 1, "an integer >= 1"),
            ("samea.latency_threads", s.latency_threads, s.latency_threads >= 1, "an integer >= 1"),
            ("samea.latency_runs", s.latency_runs, s.latency_runs >= 1, "an integer >= 1"),
            ("fold", self.fold, self.fold >= 0, "an integer >= 0"),
            ("training.epochs", t.epochs, t.epochs >= 1, "an integer >= 1"),
            ("training.patience", t.patience, t.patience >= 1, "an integer >= 1"),
            ("training.alpha", t.alpha, t.alpha >= 0, "a number >= 0"),
            ("training.beta", t.beta, t.beta >= 0, "a number >= 0"),
            ("training.batch_size", t.batch_size, t.batch_size >= 0, "an integer >= 0"),
            ("resources.workers", r.workers, r.workers >= 1, "an integer >= 1"),
            ("resources.ray_num_cpus", r.ray_num_cpus, r.ray_num_cpus >= 0, "an integer >= 0"),
            ("resources.cpus_per_candidate", r.cpus_per_candidate, r.cpus_per_candidate > 0, "a number > 0"),
            ("resources.gpus_per_candidate", r.gpus_per_candidate, r.gpus_per_candidate >= 0, "a number >= 0"),
            ("resources.max_memory_mb", r.max_memory_mb, r.max_memory_mb >= 0, "a number >= 0"),
            ("resources.max_gflops_per_step", r.max_gflops_per_step, r.max_gflops_per_step >= 0, "a number >= 0"),
            ("resources.max_parameters", r.max_parameters, r.max_parameters >= 0, "an integer >= 0"),
            ("resources.max_latency_ms", r.max_latency_ms, r.max_latency_ms >= 0, "a number >= 0"),
            ("resources.wall_clock_hours", r.wall_clock_hours, r.wall_clock_hours >= 0, "a number >= 0"),
            ("resources.disk_budget_mb", r.disk_budget_mb, r.disk_budget_mb >= 0, "a number >= 0"),
            ("resources.early_stopping_min_epochs", r.early_stopping_min_epochs, r.early_stopping_min_epochs >= 1, "an integer >= 1"),
            ("resources.halving_keep", r.halving_keep, 0 < r.halving_keep < 1, "a number in (0, 1)"),
        ]
        for key, value, ok, what in checks:
            if not ok:
                raise bad(key, what, value)
        for key, most in _UPPER_BOUNDS:
            section, _, name = key.rpartition(".")
            value = getattr(getattr(self, section) if section else self, name)
            if value > most:
                raise bad(key, f"at most {most:,}", value)
        if t.patch_size and (len(t.patch_size) != 3 or any(not isinstance(v, int) or v < 1 for v in t.patch_size)):
            raise bad("training.patch_size", "three positive integers or empty", t.patch_size)
        if r.executor not in EXECUTOR_NAMES:
            raise bad("resources.executor", "one of " + ", ".join(EXECUTOR_NAMES), r.executor)
        if r.early_stopping not in EARLY_STOP_RULES:
            raise bad("resources.early_stopping", "one of " + ", ".join(EARLY_STOP_RULES), r.early_stopping)
        if any(not isinstance(v, int) or v < 1 for v in r.halving_rungs) or list(r.halving_rungs) != sorted(r.halving_rungs):
            raise bad("resources.halving_rungs", "ascending positive epoch numbers", r.halving_rungs)
        dev = r.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise bad("resources.device", "auto, cpu, cuda or cuda:N", dev)
        try:
            self.space.search_space()
        except GenomeError as exc:
            raise ConfigError(f"{source}: [space] {exc}") from None
        return self


#: Largest sensible values: beyond them a search would never end or allocate without bound.
_UPPER_BOUNDS = (
    ("samea.population", 10_000), ("samea.generations", 100_000), ("samea.learning_generations", 100_000),
    ("samea.surrogate_trees", 100_000), ("samea.surrogate_min_samples_split", 100_000),
    ("samea.max_resample", 10_000_000), ("samea.latency_threads", 1024), ("samea.latency_runs", 1000), ("training.epochs", 1_000_000), ("training.patience", 1_000_000),
    ("training.batch_size", 4096), ("resources.workers", 4096), ("resources.ray_num_cpus", 1_000_000),
    ("resources.early_stopping_min_epochs", 1_000_000), ("seed", 2**63 - 1),
)


def _non_finite(value: Any, where: str = "") -> str | None:
    """Where in ``value`` (``""``, ``[1]``, ``.target_spacing[0]``) a NaN or infinite number sits, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, Mapping):
        for k, v in value.items():
            found = _non_finite(v, f"{where}.{k}")
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _non_finite(v, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _with_profile_defaults(data: dict, source: str) -> dict:
    """``data`` with its profile's defaults filled in where it gives no value.

    A configuration written before ``profile`` was a top-level key names it in ``training.extra``:
    it is moved up, and no default is filled in (such runs planned and trained without them).
    """
    training = data.get("training")
    extra = training.get("extra") if isinstance(training, Mapping) else None
    legacy = isinstance(extra, Mapping) and "profile" in extra
    if legacy:
        training, extra = dict(training), dict(extra)
        old = extra.pop("profile")
        if "profile" in data and data["profile"] != old:
            raise ConfigError(f"{source}: profile {data['profile']!r} and training.extra.profile {old!r} disagree; "
                              "keep the top-level profile key only")
        training["extra"] = extra
        data["training"] = training
        if "profile" not in data:
            data["profile"] = old
            if old == "paper":  # it planned with the default pooling: keep it so
                training["plan"] = {"pooling": "adaptive", **dict(training.get("plan") or {})}
            return data
    profile = data.get("profile", "default")
    if profile not in PROFILE_NAMES:
        raise ConfigError(f"{source}: profile must be one of {', '.join(PROFILE_NAMES)}, got {profile!r}")
    for section, defaults in PROFILE_DEFAULTS[profile].items():
        given = data.get(section, {})
        if not isinstance(given, Mapping):
            continue  # reported by from_dict
        merged = {**defaults, **given}
        if "plan" in defaults and isinstance(given.get("plan"), Mapping):
            merged["plan"] = {**defaults["plan"], **given["plan"]}
        data[section] = merged
    return data


def _set(obj: Any, key: str, value: Any, prefix: str, source: str) -> None:
    """Set one key with a type check against the dataclass default; NaN and infinity are refused."""
    names = {f.name: f for f in fields(obj)}
    if key not in names:
        raise ConfigError(f"{source}: unknown key {prefix}{key} (known: {', '.join(sorted(names))})")
    current = getattr(obj, key)
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"{source}: {prefix}{key} must be a table")
    if isinstance(current, bool):
        ok = isinstance(value, bool)
    elif isinstance(current, int):
        if isinstance(value, float) and value.is_integer():  # TOML reads 1e5 as a float
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(current, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(current, str):
        ok = isinstance(value, str)
    elif isinstance(current, list):
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
    elif isinstance(current, dict):
        ok = isinstance(value, Mapping)
        value = dict(value) if ok else value
    else:  # pragma: no cover
        ok = True
    if not ok:
        raise ConfigError(f"{source}: {prefix}{key} must be {type(current).__name__}, got {value!r}")
    where = _non_finite(value)
    if where is not None:
        raise ConfigError(f"{source}: {prefix}{key}{where} must be a finite number, got {value!r}")
    setattr(obj, key, value)


def run_profile(config: Mapping[str, Any] | None) -> str:
    """The profile of a stored configuration (plain data), older runs included."""
    config = config or {}
    extra = (config.get("training") or {}).get("extra") or {}
    return str(config.get("profile") or extra.get("profile") or "default")


def default_config_path() -> Path:
    """The packaged default configuration, every key documented."""
    return Path(__file__).resolve().parent.parent / "resources" / "default_search.toml"


def current_generation(generation: int, generations: int) -> int:
    """The generation in progress counted from 1 (the last one once all are done), for display:
    ``generation`` counts the generations completed, as the search reports it."""
    return max(1, min(int(generation) + 1, int(generations)))
