"""Contacts: the people who wrote to a company (one per company and WhatsApp id)."""
