"""WhatsApp's messaging rules, applied before Meta applies them (the service window, opt-outs, rule failures)."""
