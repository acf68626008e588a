"""edgenas: joint data-configuration and architecture search for edge devices."""

__version__ = "0.1.0"
