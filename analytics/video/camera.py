"""One camera's video analytics: pictures and time in, alert signals out.

    luma, at_ms --> HealthWatch (covered, blurred, frozen, moved) ----> Condition per kind
                `-> MotionGate --> KitchenWatch (kitchen cameras) --'    --> Raise / Clear

Detectors say what holds in a picture; a `Condition` per kind decides when that becomes an
alert (persistence, clear, cool-down). Health is judged every `health_every_ms`, not on every
analytics frame: its conditions last seconds, and it is the one detector every camera runs.
The motion gate runs on every analytics frame; the kitchen detectors look only where it saw
change, and colour is made only when something moved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from analytics.events import TAXONOMY, Clear, Raise, Signal, Source
from analytics.rules.schedule import Schedule, parse_hours
from analytics.video import kitchen
from analytics.video.condition import Condition, Timing
from analytics.video.health import (
    BLURRED,
    COVERED,
    FROZEN,
    MOVED,
    HealthWatch,
    Luma,
    Observation,
)
from analytics.video.kitchen import Bgr, KitchenWatch
from analytics.video.model import ModelWatch, Scores
from analytics.video.motion import MotionGate
from analytics.video.profile import CameraProfile, Mask, ModelSpec, ZoneKind
from analytics.video.street import CROWDING, DWELL_KINDS, StreetWatch
from analytics.video.street import key_of as street_key

ColourAt = Callable[[int], Bgr]  # the picture in colour at a width


def rule_for(key: str) -> str:
    """Each kind is its own rule, and each zone of a zone's kind: the store keys open alerts on
    (source, rule), so a covered lens and a frozen picture are two alerts, and so are vendors
    in two zones ('street_vending:gate' -> 'video.street_vending.gate')."""
    return "video." + key.replace(":", ".")


def kind_of(key: str) -> str:
    return key.split(":", 1)[0]


class CameraAnalytics:
    def __init__(
        self,
        source: Source,
        profile: CameraProfile,
        health_every_ms: int = 1000,
        opening_hours: str | None = None,
        street: bool = False,
        load_model: Callable[[ModelSpec], Scores] | None = None,
    ) -> None:
        """`opening_hours` ('HH:MM-HH:MM;...', the site's) makes it a kitchen camera: the
        kitchen detectors run, and know when the kitchen is closed. `street` runs the street
        detectors. `load_model` gives the scoring function of each model of the profile."""
        if source.device_id is None:
            raise ValueError("camera analytics need the camera's device id")
        self.source = source
        self._health_every_ms = health_every_ms
        self._next_health_ms: int | None = None
        self._opening_hours = opening_hours
        self.profile = profile
        self.health = HealthWatch(profile.health, profile.mask)
        self.gate = MotionGate()
        self._gate_keep: Mask | None = None
        self._kitchen: KitchenWatch | None = None
        self._open: Schedule | None = None
        self._street_camera = street
        self._street: StreetWatch | None = None
        self._load_model = load_model
        self._models: list[ModelWatch] = []
        self._conditions = self._make_conditions(profile)
        self._set_kitchen(profile)
        self._set_street(profile)
        self._set_models(profile)

    def _set_models(self, profile: CameraProfile) -> None:
        load = self._load_model
        self._models = [ModelWatch(m, load(m)) for m in profile.models] if load else []

    def _set_street(self, profile: CameraProfile) -> None:
        on = self._street_camera and profile.street.enabled
        self._street = StreetWatch(profile) if on else None

    def _set_kitchen(self, profile: CameraProfile) -> None:
        if self._opening_hours is None or not profile.kitchen.enabled:
            self._kitchen = self._open = None
            return
        k = profile.kitchen
        windows = tuple(
            w.widened(round(k.early_s), round(k.late_s)) for w in parse_hours(self._opening_hours)
        )
        self._open = Schedule(windows)
        self._kitchen = KitchenWatch(profile)

    @staticmethod
    def _make_conditions(profile: CameraProfile) -> dict[str, Condition]:
        h, k = profile.health, profile.kitchen
        spells = {
            COVERED: h.covered,
            BLURRED: h.blurred,
            FROZEN: h.frozen,
            MOVED: h.moved,
            kitchen.PRESENCE: k.presence,
            kitchen.RODENT: k.rodent,
            kitchen.FIRE: k.fire,
            kitchen.UNATTENDED: k.unattended,
        }
        conditions = {kind: Condition(spell.timing()) for kind, spell in spells.items()}
        st = profile.street
        for zone in profile.zones:
            if zone.kind in DWELL_KINDS:
                dwell = Timing(
                    round((zone.dwell_s or st.dwell_s) * 1000),
                    round(st.clear_after_s * 1000),
                    grace_ms=5000,  # someone walking in front of the cart
                )
                conditions[street_key(DWELL_KINDS[zone.kind], zone)] = Condition(dwell)
            elif zone.kind is ZoneKind.CROWD:
                conditions[street_key(CROWDING, zone)] = Condition(st.crowd.timing())
        for model in profile.models:
            for kind in set(model.classes.values()):
                conditions[f"{kind}:{model.name}"] = Condition(model.spell.timing())
        return conditions

    def use_profile(self, profile: CameraProfile) -> None:
        """A changed profile applies at once. Changed masks or health settings mean the
        picture is learnt again; alerts already raised stay until the new verdicts."""
        if profile == self.profile:
            return
        masks = profile.zones_of(ZoneKind.MASK) != self.profile.zones_of(ZoneKind.MASK)
        if masks or profile.health != self.profile.health:
            self.health = HealthWatch(profile.health, profile.mask)
        fresh = self._make_conditions(profile)
        for kind, old in self._conditions.items():
            if old.raised:
                fresh[kind] = old
        self._conditions = fresh
        self.profile = profile
        self._set_kitchen(profile)
        self._set_street(profile)
        self._set_models(profile)
        self.gate = MotionGate()
        self._gate_keep = None

    def _fingerprint(self) -> str:
        """What the learnt state depends on: the health settings and the masks."""
        masks = self.profile.zones_of(ZoneKind.MASK)
        return self.profile.health.model_dump_json() + repr(masks)

    def state(self) -> dict[str, Any]:
        """What to carry over a restart: the raised conditions and what health learnt."""
        return {
            "fingerprint": self._fingerprint(),
            "raised": {k: c.since_ms for k, c in self._conditions.items() if c.raised},
            "health": self.health.state(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Raised conditions stay raised (they clear when the picture is right again); what
        health learnt is taken up if the profile it was learnt under is unchanged."""
        for kind, since_ms in dict(state.get("raised", {})).items():
            if kind in self._conditions:
                self._conditions[kind].restore_raised(int(since_ms))
        learnt = state.get("health")
        if learnt is not None and state.get("fingerprint") == self._fingerprint():
            self.health.restore(learnt)

    def observe(self, luma: Luma, at_ms: int, colour: ColourAt | None = None) -> list[Signal]:
        """This frame's raises and clears; `colour(width)` gives the frame in colour (the
        kitchen's fire detector asks for it when something moved)."""
        seen: dict[str, Observation] = {}
        if colour is not None and (self._kitchen is not None or self._models):
            height, width = luma.shape
            size = MotionGate.size(width, height)
            if self._gate_keep is None or self._gate_keep.shape != (size[1], size[0]):
                self._gate_keep = self.profile.mask(*size)
            motion = self.gate.observe(luma, self._gate_keep)
            if self._kitchen is not None and self._open is not None:
                is_open = self._open.period(at_ms) is not None
                seen.update(self._kitchen.observe(motion, is_open, colour, at_ms, luma))
            for model in self._models:
                for kind, observed in model.observe(motion, colour).items():
                    seen[f"{kind}:{model.spec.name}"] = observed
        health_due = self._next_health_ms is None or at_ms >= self._next_health_ms
        if self.profile.health.enabled and health_due:
            self._next_health_ms = at_ms + self._health_every_ms
            seen.update(self.health.observe(luma, at_ms))
        if self._street is not None:
            blind = any(seen[k].holds for k in (COVERED, MOVED, BLURRED) if k in seen)
            if blind:
                self._street.reset()  # the scene is learnt again once the camera sees it
            else:
                seen.update(self._street.observe(luma, at_ms))
        signals: list[Signal] = []
        for key, observed in seen.items():
            condition = self._conditions.get(key)
            if condition is None:
                continue  # a zone the profile no longer has
            since = condition.since_ms
            edge = condition.update(observed.holds, at_ms)
            if edge == "raise":
                assert condition.since_ms is not None
                signals.append(self._raise(key, at_ms, condition.since_ms, observed.details))
            elif edge == "clear":
                details: Mapping[str, Any] = {**observed.details, "since_ms": since}
                signals.append(Clear(self.source, kind_of(key), rule_for(key), at_ms, details))
        return signals

    def _raise(self, key: str, at_ms: int, since_ms: int, details: Mapping[str, Any]) -> Raise:
        kind = kind_of(key)
        return Raise(
            source=self.source,
            kind=kind,
            rule=rule_for(key),
            severity=TAXONOMY[kind].severity,
            at_ms=at_ms,
            details={**details, "since_ms": since_ms},
        )
