"""The pcbook gRPC service: the servicers, their stores and auth, TLS, and the tutorial's client."""
