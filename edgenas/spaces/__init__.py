"""Search spaces. Each space is one module whose class is registered in ``SPACES``; the class's
``config_class`` is the frozen dataclass of its ``space.*`` options (the run config's ``space``
section, chosen by ``space_name``)."""

from typing import Any

from edgenas.spaces.base import SPACES, ChoicePoint, SearchSpace, build, get_space
from edgenas.spaces import kws_dscnn  # noqa: F401  (registers kws-dscnn)
from edgenas.spaces import kws_tcn  # noqa: F401  (registers kws-tcn)
from edgenas.spaces import image_mbv2  # noqa: F401  (registers image-mbv2)
from edgenas.spaces import ts_tcn  # noqa: F401  (registers ts-tcn)
from edgenas.spaces import sr_dlsr  # noqa: F401  (registers sr-dlsr)


def space_config_class(name: str) -> Any:
    """The config dataclass of space ``name``; an unknown name is a one-line ConfigError."""
    return SPACES.get(name).config_class


__all__ = ["SPACES", "ChoicePoint", "SearchSpace", "build", "get_space", "space_config_class"]
