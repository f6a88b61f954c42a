"""DNS provider plugins (entry point group ``mailforge.dns_providers``)."""
