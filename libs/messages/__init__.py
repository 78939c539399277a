"""Messages: outbound ones created by producers and campaigns, inbound ones read from webhooks."""
