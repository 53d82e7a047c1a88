"""Machine-learned force route: PANNA-style neural-network potentials.

``kappaflow.ml.gvectors`` computes the modified Behler-Parrinello (mBP) descriptors of PANNA 2 and
their derivatives with respect to atomic positions.
"""
