"""Analyses of saved runs: each returns plain results (dataclasses, tensors), never a figure."""
