"""Events for the CRM: facts written with their changes (the outbox), published in order, delivered.

* :mod:`libs.events.types` — the event types and the schema of each one's ``data`` (the public contract);
* :mod:`libs.events.outbox_store` — the SQL fragments that write an event in the statement of its fact;
* :mod:`libs.events.publish` — numbering committed events and creating their deliveries;
* :mod:`libs.events.dispatch` — the per-endpoint pumps that deliver them (Standard Webhooks), retry, disable;
* :mod:`libs.events.feed` — the pull feed and the live stream, fed by one listener per API process;
* :mod:`libs.events.endpoints` — what a user does with endpoints: create, change, rotate, test, replay.
"""
