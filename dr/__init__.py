"""dr: brings a GitOps Kubernetes platform back after its cluster is gone."""

__version__ = "0.1.0"
