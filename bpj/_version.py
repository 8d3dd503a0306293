"""bpj's version, in a module of its own so the wire layer can name it without importing the package."""

__version__ = "0.1.0"
