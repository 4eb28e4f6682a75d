"""VAS node agent: supervises FFmpeg ingest for a host's cameras."""
