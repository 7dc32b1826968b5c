"""edgecv: compile GluonCV detectors with Apache TVM and count people and goods at the edge."""

__version__ = "0.1.0"
