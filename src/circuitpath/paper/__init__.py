"""The paper's own code: its experiments and presets, its claims, the `reproduce` job and its report."""
