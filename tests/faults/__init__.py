"""Fault injection: real processes killed, stopped and fed hostile input; nothing lost, nothing leaked."""
