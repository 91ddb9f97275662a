"""The playground: config (settings and presets), service (models, generation, scoring, training jobs),
views (what the page shows, as plain functions) and ui (the Gradio page that wires them together)."""
