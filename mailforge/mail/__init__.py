"""Mail through the API: composing, submitting, reading, limits and inbound observation."""
