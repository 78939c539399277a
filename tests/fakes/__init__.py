"""Fake provider servers (Meta Cloud API, Evolution API) that speak real HTTP on 127.0.0.1."""
