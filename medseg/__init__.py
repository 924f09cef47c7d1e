"""medseg: 3D segmentation of brain MRI and EM volumes with efficient 3D convolution blocks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medseg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
