"""Which pretext variants a raw clip gets, and the seeded generator each operator draws from.

Every random choice is a function of (run.seed, sample id, purpose string) only, so the same run
draws the same variants and the same masks/permutations on any machine, in any order of work.
"""
from __future__ import annotations

import hashlib

import numpy as np

# Canonical order: draws, records and keys list variants in this order.
VARIANTS = ("none", "cube", "speed", "tube")


def _hash63(text: str) -> int:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:15], 16)


def seeded_rng(seed: int, sample_id: str, purpose: str) -> np.random.Generator:
    """A generator owned by one (run seed, sample, purpose); independent of everything else."""
    # SeedSequence entropy must be non-negative; a negative run.seed maps to a distinct value.
    return np.random.default_rng([int(seed) % (1 << 63), _hash63(sample_id), _hash63(purpose)])


def pretext_rng(seed: int, sample_id: str, variant: str) -> np.random.Generator:
    """The generator ``perturb_source`` uses for one sample's ``variant`` (cube boxes, tube order)."""
    return seeded_rng(seed, sample_id, f"pretext:{variant}")


def active_variants(cfg) -> list[str]:
    """Variants with a weight > 0, in canonical order."""
    return [v for v in VARIANTS if cfg.weights.get(v, 0) > 0]


def draw_variants(sample_id: str, seed: int, cfg) -> list[str]:
    """The variants of one raw clip, in canonical order.

    ``cfg.mode == "all"``: every variant with weight > 0. ``"sample"``: ``cfg.per_clip`` distinct
    variants drawn with probability proportional to ``cfg.weights`` (paper 1:2:3:4); with
    per_clip 1 each clip's variant is one categorical draw, so over many clips the mix matches the
    weights.
    """
    active = active_variants(cfg)
    if cfg.mode == "all":
        return active
    weights = np.array([float(cfg.weights[v]) for v in active])
    rng = seeded_rng(seed, sample_id, "pretext:draw")
    picked = rng.choice(len(active), size=cfg.per_clip, replace=False, p=weights / weights.sum())
    return [active[i] for i in sorted(int(i) for i in picked)]
