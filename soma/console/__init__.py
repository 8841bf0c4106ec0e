"""The web console: static ES modules and CSS, served by the gateway at `/` (no build step)."""
