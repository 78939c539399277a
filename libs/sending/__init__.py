"""Outbound sends: claim a message row, throttle, call the provider, record the outcome."""
