"""Query-by-Committee active learning: which pool candidates go to pw.x next.

``kappaflow.al.select`` chooses the batch of each round (a random seed in round 0, then an integer
program with PuLP or the seed thesis' top-n rule) under a DFT budget in node-hours.
"""
