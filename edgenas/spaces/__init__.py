"""Search spaces. Each space is one module registered in ``SPACES``."""

from edgenas.spaces.base import SPACES, ChoicePoint, SearchSpace, build, get_space
from edgenas.spaces import kws_dscnn  # noqa: F401  (registers kws-dscnn)

__all__ = ["SPACES", "ChoicePoint", "SearchSpace", "build", "get_space"]
