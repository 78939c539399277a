"""Campaigns: import recipients, fan out into message rows and low-tier sends, track progress."""
