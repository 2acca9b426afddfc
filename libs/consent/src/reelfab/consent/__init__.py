"""Consent, as every service sees it: signed leases (what the registry vouches for), the decision
rules (who may do what with a face, when, where), and a local view of the compacted consent topic
that applies revocations as they arrive."""
