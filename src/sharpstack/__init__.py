"""sharpstack: microscopy restoration networks, shipped as BioImage Model Zoo packages."""

from .errors import InputError, OutputExistsError, PackageError, SharpstackError

__version__ = "0.1.0"

__all__ = ["InputError", "OutputExistsError", "PackageError", "SharpstackError", "__version__"]
