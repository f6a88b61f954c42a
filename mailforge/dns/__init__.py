"""DNS for mail domains: the records a domain needs, planning against a zone, provider
plugins that publish, and verification by real DNS queries."""
