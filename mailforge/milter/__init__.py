"""Milters mailforge runs next to Postfix (the From header guard of the submission service)."""
