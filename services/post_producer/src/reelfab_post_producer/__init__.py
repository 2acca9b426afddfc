"""post-producer: Mezzanine in; platform-spec, labelled, signed video out."""
