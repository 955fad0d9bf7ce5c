"""convergent: federated cross-model embedding alignment and inference over gRPC."""

__version__ = "0.3.0"
