"""What the paper measures beyond accuracy: spectra and RankMe, negative-pair cosines, the
duality quantities of Table S4, CKA (Appendices F-J).

``measures`` holds the mathematics (plain tensors in, tensors or floats out; no store, no files);
``protocol`` is the ``analysis`` evaluation protocol that applies them to one run and draws its
figures through :mod:`sslbench.report.figures`.
"""
