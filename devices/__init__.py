"""Device adapters, profiles and calibration (``edgenas.devices``)."""
