"""Genome encodings: direct (one gene per pixel) and CPPN (a small evolving network)."""

from jaxfool.encodings.base import Encoding, quantize
from jaxfool.encodings.direct import DirectEncoding, DirectParams

__all__ = ["DirectEncoding", "DirectParams", "Encoding", "quantize"]
