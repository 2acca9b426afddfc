"""consent-registry: Faces, consent records, signed leases, revocation and the audit chain."""
