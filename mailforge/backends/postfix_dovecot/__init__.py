"""The Postfix + Dovecot backend for a mail server on the same host."""
