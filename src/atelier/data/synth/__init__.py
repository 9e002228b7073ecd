"""FashionSynth: a deterministic procedural renderer of fashion photos (and illustrations of them) with every label known.

`synthesize` writes a whole dataset in the real layouts, `write_retrieval` its garments as products in the FashionIQ
and FashionGen retrieval layouts, `write_tryon` its top wearers in the VITON-HD try-on layout; the in-memory pieces (`sample_identity`, `sample_pose`, `render`, `caption`,
`PALETTE`) let other modules draw any identity in any 18-keypoint pose.
"""

from atelier.data.synth.identity import PALETTE, PATTERNS, Garment, Identity, caption, sample_identity
from atelier.data.synth.poses import Pose, sample_pose
from atelier.data.synth.render import RenderResult, render
from atelier.data.synth.retrieval import RetrievalSummary, write_retrieval
from atelier.data.synth.tryon import TryOnSummary, write_tryon
from atelier.data.synth.writer import SynthSummary, synthesize

__all__ = [
    "PALETTE", "PATTERNS", "Garment", "Identity", "Pose", "RenderResult", "RetrievalSummary", "SynthSummary",
    "TryOnSummary", "caption", "render", "sample_identity", "sample_pose", "synthesize", "write_retrieval", "write_tryon",
]  # fmt: skip
