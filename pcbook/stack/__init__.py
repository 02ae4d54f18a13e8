"""The stack a lesson runs on: a process supervisor, the nginx runner, ports and readiness."""
