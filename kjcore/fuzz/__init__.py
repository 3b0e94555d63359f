"""Fuzzing kjcore (SPEC §11): kexec_load layouts in bulk, and end-to-end jump campaigns.

* :mod:`kjcore.fuzz.layouts` -- millions of random ``kexec_load`` layouts and the errno a fresh
  machine returns for each, compiled and parallel;
* :mod:`kjcore.fuzz.jumps` -- campaigns of random images jumped into and back, every round trip
  checked;
* :mod:`kjcore.fuzz.oracle` -- which RAM a jump may change, and the round-trip oracle;
* :mod:`kjcore.fuzz.payloads` -- random physical-mode peers with an exact model of a round.

The names of SPEC §11 are importable from here.
"""
from .jumps import CampaignResult, jump_campaign, run_unit
from .layouts import LAYOUT_DTYPE, check_layouts, layout_segments, random_layouts

__all__ = ["LAYOUT_DTYPE", "CampaignResult", "check_layouts", "jump_campaign", "layout_segments",
           "random_layouts", "run_unit"]
