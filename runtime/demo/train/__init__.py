"""Train the built-in demo model: `python -m runtime.demo.train --output DIR` (see __main__.py).

A ~5 M-parameter model in AITQE's exact architecture (SigLIP-style tower read at its second-to-
last layer, MLP projector, Qwen2-style LM, the same prompt with the image first), trained from
scratch with teacher forcing on the synthetic world of `runtime.demo.world`, and written in the
released checkpoint layout. It is a demo: it judges synthetic shapes, not real images.

Its tokenizer is a byte-level BPE in Qwen2's form (its normalizer and split pattern, special
tokens only) trained on the world's texts and the prompt, so the original AITQE code's slow
tokenizer reads it too; a pair is 9 image + ~40 prompt + ~130 answer tokens.
The 48-pixel image is cut into 16-pixel patches, one per cell of the world's 3x3 grid (why:
docs/design-notes.md).

Loss is on the answer (the verdict text + EOS), plus two training-only probes
(`runtime.demo.train.probes`): the scene probe first trains the tower alone for --vision-steps (the
demo's stand-in for SigLIP's pretraining), then stays on weighted by --aux-weight; the caption
check, weighted by --check-weight, makes the LM judge each claim of the caption against the image
and steers a few of its attention heads to what that needs.
Reproducible from --seed.
"""
