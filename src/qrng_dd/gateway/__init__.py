"""The external side: verified ingest, the entropy pool, and the API that serves it."""
