"""Mail backends: the servers that hold mailboxes, behind one interface (see ``base``)."""
