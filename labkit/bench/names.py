"""The names `labkit bench` accepts (kept apart so that `labkit --help` need not import torch)."""

SIZES = ("tiny", "classic", "medium")
FAMILIES = ("lstm", "transformer")
VARIANTS = ("reference", "fp32", "default", "adaptive", "fastest", "compile")
