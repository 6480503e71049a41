"""Search spaces of nni_bigLittle: ``BigLittleSpace`` (an NNI ``ModelSpace``), its spec and presets."""
from nni_bigLittle.search_spaces.spec import InvalidSampleError, SpaceSpec, StageSpec
from nni_bigLittle.search_spaces.presets import PRESETS, get_preset
from nni_bigLittle.search_spaces.space import BigLittleSpace

__all__ = ['BigLittleSpace', 'SpaceSpec', 'StageSpec', 'InvalidSampleError', 'PRESETS', 'get_preset']
