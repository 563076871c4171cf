"""The wire format both sides share (DESIGN §3): packets and telemetry."""
