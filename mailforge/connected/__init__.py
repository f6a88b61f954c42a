"""Connected mailboxes: existing SMTP/IMAP accounts elsewhere (Google Workspace,
Microsoft 365, another host) that mailforge sends and reads through.

The transport (settings, network, probe, smtp, imap, oauth, pool) is the only code
that opens a connection to a host a tenant named; every such connection goes through
:class:`mailforge.netguard.Guard` (see :mod:`.network`).
"""
