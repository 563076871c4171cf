"""qrng-dd: a software data diode for quantum entropy."""

__version__ = "0.1.0"
