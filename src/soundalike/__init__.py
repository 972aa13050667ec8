"""soundalike: understand music by its sound."""

__version__ = "0.1.0"
