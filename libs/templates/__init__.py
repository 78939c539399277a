"""WhatsApp templates: each Meta connection's catalogue (synced from its WABA) and the checks of template sends."""
