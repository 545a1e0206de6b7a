"""Mask2Former (Cheng et al., CVPR 2022): universal image segmentation."""

from vistra.models.mask2former.model import Mask2Former
from vistra.models.mask2former.pixel_decoder import PixelDecoder
from vistra.models.mask2former.transformer_decoder import MaskedAttentionDecoder

__all__ = ["Mask2Former", "MaskedAttentionDecoder", "PixelDecoder"]
