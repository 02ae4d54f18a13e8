"""The pcbook gRPC service: the servicers, their stores and auth, TLS, the tutorial's client, the etcd registry
client the server registers with, and the thick client that discovers servers there."""
