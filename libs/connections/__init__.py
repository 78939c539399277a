"""WhatsApp connections: Meta Cloud API numbers and Baileys-bridge instances, their credentials and health."""
