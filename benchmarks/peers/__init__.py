"""Peer implementations, run by .venv-peers/bin/python through runner.py."""
