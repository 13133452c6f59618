"""The ladder: the rungs ``auto`` serves, by expected quality from the model card, fixed at warm-up.

A rung's expected quality is its PSNR on ``QUALITY_SET`` in the card (``service.catalog.cards``:
``card["metrics"][set][rung.key]``, written by ``csd-sr evaluate``). Once
warm-up has measured every rung, a rung that is slower than another for the
reference input and not better is dropped: ``auto`` would never prefer it, and
a client forcing it would pay more for no more quality. "Slower" means by more
than ``DOMINANCE_MARGIN``, and never slower than a wider rung of its own
precision (which has more multiply-adds): otherwise the order is timing noise
(the narrow rungs of a small model cost about the same, their codec work
dominates, and a loaded machine shuffles them). A rung without a score in the
card is dropped too: the policy cannot rank it. A ladder may span models (``service.catalog.registry``:
a x3 request served by the x3 model or by the x4 model and a downscale): a rung of the request's own
model is dropped only for another of that model, so the ladder without the other models' rungs
(``own``) is the model's own ladder. Pure logic, no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

from model.rungs import Rung

QUALITY_SET = "Set5"  # the ladder's order: this set's PSNR
DOMINANCE_MARGIN = 0.1  # a rung is "slower" than another when it costs more than (1 + this) times as much


@dataclass(frozen=True)
class Ladder:
    rungs: tuple[Rung, ...]  # served by auto, best expected quality first
    dropped: dict[Rung, str]  # rungs the backend runs that are not on the ladder, and why
    quality: dict[Rung, float] = field(default_factory=dict)  # per rung on it: Set5 PSNR (unscored card: width)
    model: Hashable | None = None  # the requests' own model (build_ladder's ``native``); None: one model's rungs

    @property
    def widths(self) -> tuple[float, ...]:
        """The widths with a rung on the ladder, ascending."""
        return tuple(sorted({r.width for r in self.rungs}))

    @property
    def candidates(self) -> tuple[Rung, ...]:
        """Every rung the ladder was built from: on it or dropped."""
        return (*self.rungs, *self.dropped)

    @property
    def own(self) -> Ladder:
        """The rungs of the requests' own model alone: when no other model may serve a request."""
        if self.model is None:
            return self
        own = tuple(r for r in self.rungs if _model(r) == self.model)
        dropped = {r: why for r, why in self.dropped.items() if _model(r) == self.model}
        return Ladder(own, dropped, {r: self.quality[r] for r in own}, self.model)


EMPTY_LADDER = Ladder((), {})


def build_ladder(
    quality: Mapping[Rung, float | None], cost_s: Mapping[Rung, float], native: Hashable | None = None
) -> Ladder:
    """The ladder from each rung's expected quality (``None``: unknown) and its cost for the reference input.

    A card without any score (fresh or random weights) ranks the fp32 rungs by
    width, the order CSD trains them in; its other rungs are dropped as unscored.
    ``native``: the request's own model, whose rungs only its own rungs can drop.
    """
    if all(q is None for q in quality.values()):
        quality = {r: r.width if r.precision == "fp32" else None for r in quality}
    scored = {r: q for r, q in quality.items() if q is not None}
    dropped = {r: f"no {QUALITY_SET} PSNR in the model card" for r in quality if r not in scored}
    for rung, q in scored.items():
        rivals = {s: qs for s, qs in scored.items() if _model(rung) != native or _model(s) == native}
        better = [s for s, qs in rivals.items() if qs >= q and _slower(rung, s, cost_s)]
        if better:
            s = min(better, key=cost_s.__getitem__)
            name = s.key if _model(s) == _model(rung) else str(s)  # another model's: e.g. x4/0.5-int8
            dropped[rung] = (
                f"slower than {name} ({cost_s[rung]:.3f} s vs {cost_s[s]:.3f} s for the reference input) "
                f"and not better (expected quality {q:.2f} vs {scored[s]:.2f})"
            )
    kept = sorted((r for r in scored if r not in dropped), key=lambda r: (-scored[r], cost_s[r]))
    return Ladder(tuple(kept), dropped, {r: scored[r] for r in kept}, native)


def _model(rung: Rung) -> Hashable | None:
    """The model of a served rung (``service.catalog.registry.ServedRung``); ``None`` for a bare ``Rung``."""
    return getattr(rung, "model", None)


def _slower(rung: Rung, other: Rung, cost_s: Mapping[Rung, float]) -> bool:
    """``rung`` clearly costs more than ``other``: beyond the margin, and ``other`` is no wider at its precision."""
    if rung.precision == other.precision and other.width > rung.width:
        return False
    return cost_s[rung] > (1 + DOMINANCE_MARGIN) * cost_s[other]
