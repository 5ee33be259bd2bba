"""Layers: multi-scale deformable attention (:mod:`.ms_deform_attn`) and affine folding (:mod:`.affine`)."""
