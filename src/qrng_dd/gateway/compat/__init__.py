"""APIs that existing clients already speak, served from the same pool under the same keys
and limits: each module is a set of entries for the route table (:mod:`..routes`)."""
