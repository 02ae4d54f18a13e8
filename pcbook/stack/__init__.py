"""The stack a lesson runs on: a process supervisor, the nginx and etcd runners, ports and readiness, Docker,
and the process specs (specs.py) every command line is built from."""
