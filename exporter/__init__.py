"""VAS exporter: health JSON, /v2/health API and Prometheus metrics (later issues)."""
