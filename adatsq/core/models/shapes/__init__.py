"""Synthetic coloured-shape scenes for a small Flux-architecture model: data, prompts, and the eval set."""
