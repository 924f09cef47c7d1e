"""CPU fast paths the blocks run on: a layout-keeping instance norm (norm.py), a depthwise conv with faster
gradients (depthwise.py) and convolutions whose weight is rebuilt from parameters in the backward (built.py).
Each computes what the plain PyTorch op computes; the blocks in medseg.blocks read as their papers."""
