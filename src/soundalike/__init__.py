"""soundalike: understand music by its sound."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: ``soundalike.similar(...)`` works without importing faiss at ``import soundalike``.
    if name == "similar":
        from soundalike.search.similar import similar

        return similar
    raise AttributeError(f"module 'soundalike' has no attribute {name!r}")
