"""The hooked models: the paper's cross-attention transformer and the standard multi-layer one, on one shared base."""
