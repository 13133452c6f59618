"""The model registry: every served model (scale x noise level), its card, engine and rungs.

Routes, policy and engine get a ``ModelKey`` from here and nothing else about a model: which
scale and noise levels exist, which file and card belong to a key, and which rungs it runs.
All engines share one inference lane (one lock), so the scheduler plans one queue for all models.

A model has a ladder per output scale its card measures (``LadderKey``): x4-real serves a x2 request
ranked by its figures at x2 (``card["at_scale"]["2"]``, from ``csd-sr evaluate --scale 2``), where
another width may rank first. A request's ladder may span models: a model of a larger scale and
the same noise level whose card holds figures at the request's scale serves it too, its output
Lanczos-downscaled, each rung priced by its own model's cost (``route``): x3 at full width by the x3
model, at 0.25 by the x4 model and a downscale, where those measure best.

Shipped files follow one name, ``weights/csd-edsr-x{scale}[-{noise}].safetensors``; the scale is
read from the file's architecture, the noise level from its card (``"noise"``, default ``none``).

A model also has a style (the card's ``"style"``): ``faithful`` (trained for fidelity to the HR, every model
above) or ``sharp`` (``csd-edsr-x4-sharp``, distilled from a GAN teacher). Styles never share a ladder; a
sharp model serves every input of its style whatever its noise (its teacher is blind to degradations), so
its key has no noise level, and lower scales are served by its output downscaled. A sharp model's card may
name a ``sharpness`` step below 1 (``csd-sr average`` of x4-real and x4-sharp: their weights interpolated,
as Real-ESRGAN's ``-dn``): a request's ``sharpness`` is served by the nearest step shipped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from model.rungs import Rung
from model.weights import file_sha256, load_weights
from service.catalog.noise import NONE
from service.inference.tiles import Engine, build_engine
from service.settings import Settings

FAITHFUL, SHARP = "faithful", "sharp"
STYLES = (FAITHFUL, SHARP)


@dataclass(frozen=True, order=True)
class ModelKey:
    """A served model: its native scale, the noise level it was trained for, its style and (style sharp) its
    sharpness step: 1 for the distilled model, below 1 for its interpolation with the faithful one."""

    scale: int = 4
    noise: str = NONE
    style: str = FAITHFUL
    sharpness: float = 1.0

    @property
    def look(self) -> str:
        """The style with its step: ``faithful``, ``sharp``, ``sharp-0.5`` (the metrics' ``style`` label)."""
        return self.style if self.sharpness == 1 else f"{self.style}-{self.sharpness:g}"

    @property
    def name(self) -> str:
        """``x4``, ``x4-real``, ``x2``, ``x4-sharp``, ``x4-sharp-0.5``: the model's name in ladders and logs."""
        if self.style != FAITHFUL:
            return f"x{self.scale}-{self.look}"
        return f"x{self.scale}" if self.noise == NONE else f"x{self.scale}-{self.noise}"

    @classmethod
    def of(cls, scale: int, card: dict) -> ModelKey:
        """The key of a model of ``scale`` whose card names its noise level (``"noise"``, default ``none``) and
        style (``"style"``, default ``faithful``; a sharp model serves every noise level: none in its key, and
        its ``"sharpness"`` step, default 1)."""
        style = str(card.get("style", FAITHFUL))
        if style == FAITHFUL:
            return cls(scale, str(card.get("noise", NONE)))
        return cls(scale, NONE, style, float(card.get("sharpness", 1.0)))


@dataclass(frozen=True, order=True)
class LadderKey:
    """A ladder: the requests ``model`` serves at output ``scale``, ranked by its card's figures there (its
    own scale's, or an ``at_scale`` entry below it; a factor between two uses the next one up)."""

    model: ModelKey
    scale: int

    @classmethod
    def of(cls, model: ModelKey) -> LadderKey:
        """``model``'s ladder at its own scale."""
        return cls(model, model.scale)

    @property
    def name(self) -> str:
        """``x4-real`` at its own scale, ``x4-real@x2`` below it."""
        return self.model.name if self.scale == self.model.scale else f"{self.model.name}@x{self.scale}"


def noise_levels(keys: Iterable[ModelKey], factor: float) -> set[str]:
    """The noise levels ``keys`` serve at ``factor``: those of every faithful model of that scale or larger."""
    return {k.noise for k in keys if k.style == FAITHFUL and k.scale >= factor - 1e-9}


def styles(keys: Iterable[ModelKey], factor: float) -> set[str]:
    """The styles ``keys`` serve at ``factor``: those of every model of that scale or larger."""
    return {k.style for k in keys if k.scale >= factor - 1e-9}


def sharpness_steps(keys: Iterable[ModelKey], factor: float) -> list[float]:
    """The sharpness steps of style sharp served at ``factor``, ascending (empty without a sharp model)."""
    return sorted({k.sharpness for k in keys if k.style == SHARP and k.scale >= factor - 1e-9})


def resolve(
    keys: Iterable[ModelKey], factor: float, noise: str, style: str = FAITHFUL, sharpness: float = 1.0
) -> ModelKey | None:
    """The model of ``keys`` for ``factor`` at a concrete noise level and style: the smallest scale >= ``factor``
    that serves both (a JPEG at x3 goes to x4-jpeg when there is no x3-jpeg; any input of style sharp to the
    smallest sharp model that reaches the factor, at the step nearest ``sharpness``, the sharper of two as near);
    ``None`` when none does."""
    return min(
        (k for k in keys if k.style == style and (style != FAITHFUL or k.noise == noise) and k.scale >= factor - 1e-9),
        key=lambda k: (k.scale, abs(k.sharpness - sharpness), -k.sharpness),
        default=None,
    )


@dataclass(frozen=True, order=True)
class ServedRung:
    """A rung of one model: what the lane schedules, the cost model prices and the metrics label.

    ``width``, ``precision`` and ``key`` are the rung's (the card's row key), so the policy's
    ladder logic runs on served rungs unchanged.
    """

    model: ModelKey
    width: float
    precision: str = "fp32"

    @property
    def rung(self) -> Rung:
        return Rung(self.width, self.precision)  # type: ignore[arg-type]

    @property
    def key(self) -> str:
        return self.rung.key

    @property
    def id(self) -> str:
        """Unique across models, e.g. ``x4-real/0.5-int8``."""
        return f"{self.model.name}/{self.key}"

    def __str__(self) -> str:
        return self.id

    def name_for(self, model: ModelKey) -> str:
        """How ``model``'s ladder names this rung: ``0.5-int8`` for its own, ``x4/0.5-int8`` for another's."""
        return self.key if self.model == model else self.id

    @classmethod
    def of(cls, model: ModelKey, rung: Rung | None) -> ServedRung | None:
        """``rung`` of ``model`` (``None`` stays ``None``): e.g. a ``fixed:<rung>`` policy for one request."""
        return None if rung is None else cls(model, rung.width, rung.precision)


@dataclass
class ServedModel:
    key: ModelKey
    path: Path
    card: dict
    sha256: str
    engine: Engine

    @property
    def rungs(self) -> tuple[ServedRung, ...]:
        return tuple(ServedRung(self.key, r.width, r.precision) for r in self.engine.rungs)


class Registry:
    """The served models by key; ``default`` answers requests that name no scale or noise level."""

    def __init__(self, models: list[ServedModel]) -> None:
        if not models:
            raise ValueError("no model to serve")
        self.models: dict[ModelKey, ServedModel] = {}
        for m in models:
            if m.key in self.models:
                raise ValueError(f"{m.path} and {self.models[m.key].path} are both model {m.key.name}")
            self.models[m.key] = m
        clean_x4 = ModelKey()
        self.default = clean_x4 if clean_x4 in self.models else min(self.models)
        # fixed once the engines exist: every response reads its rung's figures from here
        self._routes = {lk: self._route(lk) for lk in self._ladder_keys()}

    def __getitem__(self, key: ModelKey) -> ServedModel:
        return self.models[key]

    def __iter__(self):
        return iter(self.models.values())

    @property
    def rungs(self) -> tuple[ServedRung, ...]:
        return tuple(r for m in self for r in m.rungs)

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(sorted({k.scale for k in self.models}))

    def noise_levels(self, factor: float) -> set[str]:
        """The noise levels served at ``factor``: those of every model of that scale or larger."""
        return noise_levels(self.models, factor)

    def styles(self, factor: float) -> set[str]:
        """The styles served at ``factor`` (``styles``)."""
        return styles(self.models, factor)

    def sharpness_steps(self, factor: float) -> list[float]:
        """The sharpness steps served at ``factor`` (``sharpness_steps``)."""
        return sharpness_steps(self.models, factor)

    def resolve(self, factor: float, noise: str, style: str = FAITHFUL, sharpness: float = 1.0) -> ModelKey | None:
        """The model for ``factor`` at a concrete noise level, style and sharpness (``resolve``)."""
        return resolve(self.models, factor, noise, style, sharpness)

    @property
    def ladder_keys(self) -> tuple[LadderKey, ...]:
        """Every ladder a request can reach (``ladder_key``)."""
        return tuple(self._routes)

    def ladder_key(self, key: ModelKey, factor: float) -> LadderKey:
        """The ladder of a request for ``factor`` served by ``key``: at the smallest scale its card measured
        that reaches ``factor`` (a real photo at x2 by x4-real: its figures at x2)."""
        return LadderKey(key, _reaching(self._measured(key), factor))

    def route(self, ladder: LadderKey) -> dict[ServedRung, dict]:
        """Every rung that may serve ``ladder``'s requests, with the card holding its figures at ``ladder.scale``:
        the model's own rungs (its card, or its ``at_scale`` entry), then those of each larger model of the same
        noise level whose card has an ``at_scale`` entry for that scale (that entry)."""
        return self._routes[ladder]

    def figures(self, rung: ServedRung, factor: float) -> dict:
        """The card of ``rung``'s figures for an output ``factor``: its model's card at the smallest scale
        measured that reaches ``factor`` (the model's own, or an ``at_scale`` entry below it), so a JPEG at x2
        served by x4-jpeg reads x4-jpeg's figures at x2, and 2.5x by an x4 rung its figures at x3."""
        measured = self._measured(rung.model)
        return measured[_reaching(measured, factor)]

    def _measured(self, key: ModelKey) -> dict[int, dict]:
        """``key``'s figures by output scale: its card at its own scale, its ``at_scale`` entries below."""
        card = self.models[key].card
        return {int(s): c for s, c in (card.get("at_scale") or {}).items()} | {key.scale: card}

    def _ladder_keys(self) -> list[LadderKey]:
        """Per model, the scales it measured that a request reaches: above the next smaller model of its noise
        level (x4-real@x2 without an x2-real model; not x4@x3 beside an x3 model, which serves up to x3)."""
        out = []
        for key in self.models:
            below = max((k.scale for k in self.models if _kin(k, key) and k.scale < key.scale), default=1)
            out += [LadderKey(key, s) for s in sorted(self._measured(key)) if below < s <= key.scale]
        return out

    def _route(self, ladder: LadderKey) -> dict[ServedRung, dict]:
        key, scale = ladder.model, ladder.scale
        out: dict[ServedRung, dict] = dict.fromkeys(self.models[key].rungs, self._measured(key)[scale])
        for m in self:
            at_scale = (m.card.get("at_scale") or {}).get(str(scale))
            if _kin(m.key, key) and m.key.scale > key.scale and at_scale:
                out |= dict.fromkeys(m.rungs, at_scale)
        return out


def _kin(a: ModelKey, b: ModelKey) -> bool:
    """Whether ``a`` and ``b`` serve the same requests at different scales: one noise level, one style and step."""
    return (a.noise, a.style, a.sharpness) == (b.noise, b.style, b.sharpness)


def _reaching(measured: dict[int, dict], factor: float) -> int:
    """The smallest scale of ``measured`` that reaches ``factor``."""
    return min(s for s in measured if s >= factor - 1e-9)


def build_registry(settings: Settings) -> Registry:
    """Load every configured weights file and build its engine, all on one lane (one lock for every backend)."""
    lane = threading.Lock()
    models = []
    for path in settings.weights:
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file not found: {path} (set CSD_SR_WEIGHTS or --weights to .safetensors files from "
                "`csd-sr export`)"
            )
        model, card = load_weights(path)
        engine = build_engine(model, settings, path, lane)
        sha = file_sha256(path)
        key = ModelKey.of(model.cfg.scale, card)
        models.append(ServedModel(key, path, card, sha, engine))
    return Registry(models)
