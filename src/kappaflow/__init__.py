"""kappaflow: lattice thermal conductivity from first principles, orchestrated by Snakemake."""

__version__ = "0.1.0"
