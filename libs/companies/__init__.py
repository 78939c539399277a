"""Companies (tenants): the owners of connections, contacts, messages and campaigns."""
