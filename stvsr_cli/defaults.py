"""Defaults that the library and the command line share.

This module imports nothing, so the command line can show them in `--help`
without importing PyTorch. `tiling` and `windows` re-export them where they
are used.
"""

# LR pixels. A tile of 160 is five of the network's 32x32 attention windows
# across; at about 0.1 MB per LR pixel in fp32 (measured on CPU, paper
# preset) one tile needs about 2.6 GB, so a 1080p-output run (LR 480x270,
# 8 tiles) keeps well inside 8 GB of GPU memory in reduced precision.
DEFAULT_TILE = 160
DEFAULT_OVERLAP = 16

# `windows.scene_change` above this is a cut. On bikes.mp4 (real street
# footage, fast motion, 5 hard cuts) the cuts score 0.22 to 0.72 and no other
# pair of frames above 0.115; an animated film and a talking-head clip stay
# under 0.04.
DEFAULT_SCENE_THRESHOLD = 0.15

# Seconds of source a segment of `stvsr upscale` (`segments.py`): what an
# interruption can cost, against a file per segment.
DEFAULT_SEGMENT_SECONDS = 10.0
