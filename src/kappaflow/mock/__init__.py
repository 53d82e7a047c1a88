"""A stand-in for pw.x used in CI: energies, forces and stresses from classical potentials.

:mod:`kappaflow.mock.potentials` holds the ASE calculators (Stillinger–Weber silicon and a
Morse network built around a reference crystal such as the GeS2 seed structure).
"""
