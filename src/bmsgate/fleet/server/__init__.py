"""The fleet server: broker ownership, enrolment, ingest, store, alarms, API and dashboard."""
