"""Job images: which image each node needs, and getting it built, published and checked."""
