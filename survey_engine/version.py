"""The package version, in a module of its own so that the floor (catalog/) can name it without
importing the package's top (which brings the API and the cross-match with it)."""

__version__ = "0.1.0"
