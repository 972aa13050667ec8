"""Similarity search over the catalog's embeddings.

``index``: a faiss vector index per model id, persisted beside the catalog and kept in
step with it; ``similar``: "what sounds like this?" (:func:`similar`,
:func:`nearest_to_vector`); ``suggest``: tag completion from model predictions and
neighbours' tags.  faiss is imported only when an index is built or opened.
"""
