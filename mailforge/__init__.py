"""mailforge: a self-hosted mail provisioning daemon.

An API records desired state (accounts, domains, mailboxes, aliases) in PostgreSQL;
reconcile workers converge a real mail backend and DNS to it.
"""

__version__ = "0.1.0"
