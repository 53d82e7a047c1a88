"""Green–Kubo route: heat flux and stress by automatic differentiation of atomic-energy potentials
(:mod:`kappaflow.gk.heatflux`), the unfolded cluster (:mod:`kappaflow.gk.unfold`), a TensorFlow
Stillinger–Weber potential to check against LAMMPS (:mod:`kappaflow.gk.potentials_tf`)."""
