"""sslbench: an experiment runner and results database for self-supervised learning.

Built around Garrido et al., "On the duality between contrastive and non-contrastive
self-supervised learning" (ICLR 2023).
"""

__version__ = "0.1.0"
