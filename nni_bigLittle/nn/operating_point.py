"""The operating point: the one currency for a chosen dynamic model.

An operating point is the architecture (the flat NNI sample of the space's labels, router labels left out)
plus a :class:`~nni_bigLittle.nn.router.RouterSetting` (policy, threshold, what the threshold was calibrated
for and on which split). Search writes it to the front, export puts it in the bundle's manifest, fine-tuning,
the report and the trials read it; :meth:`OperatingPoint.to_dict` / :meth:`OperatingPoint.from_dict` are its
one schema, versioned by :data:`OPERATING_POINT_FORMAT`. The model it describes is built from
:attr:`OperatingPoint.flat_sample`, whose ``router/threshold`` is the setting's threshold exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from nni_bigLittle.errors import BigLittleError
from nni_bigLittle.nn.router import RouterSetting

__all__ = ['OPERATING_POINT_FORMAT', 'ROUTER_LABELS', 'OperatingPoint', 'OperatingPointError']

OPERATING_POINT_FORMAT = 'nni_bigLittle.operating_point/1'
ROUTER_LABELS = ('router/policy', 'router/threshold')


class OperatingPointError(BigLittleError, ValueError):
    """A stored operating point that cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class OperatingPoint:
    sample: Mapping[str, Any] = field(hash=False)  # architecture labels -> values (no router labels)
    router: RouterSetting

    def __post_init__(self):
        inside = [label for label in ROUTER_LABELS if label in self.sample]
        if inside:
            raise OperatingPointError(f'The sample of an operating point holds no router labels ({inside}); the '
                                      'router setting carries them. Use OperatingPoint.from_flat_sample.')
        object.__setattr__(self, 'sample', dict(self.sample))

    @classmethod
    def from_flat_sample(cls, flat_sample: Mapping[str, Any], **calibration: Any) -> 'OperatingPoint':
        """From a flat sample with ``router/policy`` and ``router/threshold``, and how the threshold was chosen
        (``target_escalation``, ``target_accuracy``, ``calibrated_on``)."""
        missing = [label for label in ROUTER_LABELS if label not in flat_sample]
        if missing:
            raise OperatingPointError(f'The flat sample lacks {missing}.')
        router = RouterSetting(str(flat_sample['router/policy']), float(flat_sample['router/threshold']), **calibration)
        return cls({k: v for k, v in flat_sample.items() if k not in ROUTER_LABELS}, router)

    @property
    def flat_sample(self) -> dict[str, Any]:
        """The flat NNI sample of the model this point deploys (the threshold exactly the router's)."""
        return {**self.sample, 'router/policy': self.router.policy, 'router/threshold': self.router.threshold}

    def to_dict(self) -> dict[str, Any]:
        return {'format': OPERATING_POINT_FORMAT, 'sample': dict(self.sample), 'router': self.router.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'OperatingPoint':
        if not isinstance(data, Mapping):
            raise OperatingPointError(f'An operating point is a mapping, got {type(data).__name__}.')
        if data.get('format') != OPERATING_POINT_FORMAT:
            raise OperatingPointError(f'Unknown operating point format {data.get("format")!r}; this version reads '
                                      f'{OPERATING_POINT_FORMAT!r}.')
        if set(data) != {'format', 'sample', 'router'} or not isinstance(data['sample'], Mapping):
            raise OperatingPointError(f'An operating point holds format, sample and router; got keys {sorted(data)}.')
        try:
            router = RouterSetting.from_dict(data['router'])
        except (TypeError, ValueError) as err:
            raise OperatingPointError(f'router: {err}') from None
        return cls(dict(data['sample']), router)

    def with_router(self, router: RouterSetting) -> 'OperatingPoint':
        """The same architecture routed by ``router`` (e.g. re-calibrated after fine-tuning)."""
        return OperatingPoint(self.sample, router)
