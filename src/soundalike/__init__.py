"""soundalike: understand music by its sound."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: ``soundalike.similar(...)`` works without importing faiss at ``import soundalike``.
    if name == "similar":
        from soundalike.search.similar import similar

        return similar
    if name == "playlist":
        from soundalike.search.playlist import playlist

        return playlist
    raise AttributeError(f"module 'soundalike' has no attribute {name!r}")
